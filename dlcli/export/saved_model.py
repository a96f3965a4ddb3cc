"""SavedModel with a ``serve`` endpoint and a ``serving_default`` signature; checked by
``tf.saved_model.load``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dlcli.export.registry import register_exporter
from dlcli.export.runner import Runner, TensorInfo


def export(model, target: Path, plan) -> None:
    import tensorflow as tf

    from dlcli.export.signature import input_signature

    sig = input_signature(model, batch=None)
    model.export(str(target), format="tf_saved_model", verbose=False, input_signature=sig)
    del tf


class SavedModelRunner(Runner):
    def __init__(self, path: Path):
        import tensorflow as tf

        self.obj = tf.saved_model.load(str(path))
        fn = self.obj.signatures["serving_default"]
        specs = fn.structured_input_signature[1]
        self.input_names = list(specs)
        self.inputs = [TensorInfo(k, v.dtype.name, list(v.shape)) for k, v in specs.items()]
        self.outputs = [TensorInfo(k, v.dtype.name, list(v.shape)) for k, v in fn.structured_outputs.items()]

    def predict(self, x) -> np.ndarray:
        import tensorflow as tf

        if isinstance(x, dict):  # several named inputs: the serving function takes a dict
            dtypes = {t.name: t.dtype for t in self.inputs}
            return np.asarray(self.obj.serve({k: tf.constant(v.astype(dtypes.get(k, v.dtype))) for k, v in x.items()}))
        out = self.obj.serve(tf.constant(x.astype(self.inputs[0].dtype)))
        return np.asarray(out)


def load(path: Path, threads: int | None = None) -> Runner:
    """``threads`` is ignored: TensorFlow's thread pools belong to the process."""
    return SavedModelRunner(Path(path))


register_exporter("saved_model", "", "tf.saved_model.load")(sys.modules[__name__])
