"""ONNX int8: which nodes quantization hurts, and keeping the worst in float until the gate passes.

The errors come from onnxruntime's own QDQ debugging (``onnxruntime.quantization.qdq_loss_debug``):
the float and the QDQ graphs are augmented to output every intermediate tensor, run on the
first calibration rows, and each tensor is scored by its signal-to-quantization-noise ratio
(SQNR, dB; higher is better): ``qdq_err`` compares a tensor before and after its own
QuantizeLinear / DequantizeLinear pair (the noise that tensor's int8 range adds),
``xmodel_err`` the QDQ graph's value with the float graph's (the noise accumulated so far).
dlcli ranks by ``qdq_err``, lowest first, and names the node that produces the tensor (or,
for a graph input, the nodes that read it): those go to ``quantize_static``'s
``nodes_to_exclude``, one more at a time, as TFLite's ``--fallback auto`` does.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEBUG_ROWS = 64


@dataclass
class NodeError:
    nodes: list[str]  # the ONNX nodes that produce (or, for a graph input, read) the tensor
    op: str
    tensor: str
    qdq_sqnr_db: float
    model_sqnr_db: float | None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "tensor": self.tensor, "nodes": self.nodes,
                "qdq_sqnr_db": _round(self.qdq_sqnr_db), "model_sqnr_db": _round(self.model_sqnr_db)}


def _round(v: float | None) -> float | None:
    return float(f"{v:.4g}") if v is not None and math.isfinite(v) else None


def sensitivity(float_path: Path, qdq_path: Path, rows) -> list[NodeError]:
    """Every quantized activation of ``qdq_path`` scored against ``float_path``, worst first."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from dlcli.data.inputs import num_rows, take_rows
    from dlcli.export.onnx import rows_reader

    rows = take_rows(rows, slice(0, min(DEBUG_ROWS, num_rows(rows))))
    with tempfile.TemporaryDirectory(prefix="dlcli-onnx-debug-") as tmp:
        acts = {}
        for kind, path in (("float", float_path), ("qdq", qdq_path)):
            augmented = Path(tmp) / f"{kind}.onnx"
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            acts[kind] = collect_activations(str(augmented), rows_reader(augmented, rows))
    errors = compute_activation_error(create_activation_matching(acts["qdq"], acts["float"]))
    graph = onnx.load(str(float_path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    out: list[NodeError] = []
    for tensor, err in errors.items():
        nodes = [producers[tensor]] if tensor in producers else readers.get(tensor, [])
        if nodes:
            out.append(NodeError([n.name for n in nodes], nodes[0].op_type, tensor, float(err["qdq_err"]),
                                 float(err["xmodel_err"]) if "xmodel_err" in err else None))
    return sorted(out, key=lambda e: e.qdq_sqnr_db if math.isfinite(e.qdq_sqnr_db) else math.inf)


def auto_fallback(float_path: Path, target: Path, rows, method: str, ranked: list[NodeError], check, budget: int,
                  log) -> tuple[dict, Any]:
    """Quantize again with the worst tensors' nodes excluded, one tensor more at a time, until
    ``check(path)`` passes or ``budget`` tensors' nodes are in float (``fallback.keep_in_float``)."""
    from dlcli.export.fallback import keep_in_float
    from dlcli.export.onnx import quantize_static_int8
    from dlcli.latency import onnx as native_onnx

    worst = ranked[:min(budget, max(len(ranked) - 1, 0))]  # never every tensor: that is the float model
    return keep_in_float(
        ((e.nodes, e.op, e.tensor) for e in worst), target, budget=budget, check=check, log=log,
        build=lambda deny, path: quantize_static_int8(float_path, path, rows, method, exclude=deny),
        timer=lambda path: native_onnx(path, threads=1, warmup=10, runs=100),
        kind="nodes", unit="ONNX node(s)", describe=lambda deny, label: {"float_nodes": list(deny), "tensor": label})
