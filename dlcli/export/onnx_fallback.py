"""ONNX int8: which nodes quantization hurts, and keeping the worst in float until the gate passes.

The errors come from onnxruntime's own QDQ debugging (``onnxruntime.quantization.qdq_loss_debug``):
the float and the QDQ graphs are augmented to output every intermediate tensor, run on the
first calibration rows, and each tensor is scored by its signal-to-quantization-noise ratio
(SQNR, dB; higher is better): ``qdq_err`` compares a tensor before and after its own
QuantizeLinear / DequantizeLinear pair (the noise that tensor's int8 range adds),
``xmodel_err`` the QDQ graph's value with the float graph's (the noise accumulated so far).

One SQNR over a whole tensor is dominated by its largest channels: raw input features from
0.001 to 4,000 share one int8 scale, the small ones round to zero, and the tensor still
scores 39 dB. So dlcli also scores every channel (the last axis: features, or NHWC
channels) of the same QDQ pair and keeps the worst (``channel_sqnr_db``; a channel that is
zero in float has no signal to lose and is skipped). Tensors are ranked by the lower of the
two, worst first, and each names the node that produces it and the nodes that read it
(onnxruntime quantizes a tensor for its readers as well as its producer: excluding the
producer alone left it in int8): those go to ``quantize_static``'s ``nodes_to_exclude``,
one tensor more at a time, as TFLite's ``--fallback auto`` does.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEBUG_ROWS = 64


@dataclass
class NodeError:
    nodes: list[str]  # the ONNX nodes that produce and read the tensor
    op: str
    tensor: str
    qdq_sqnr_db: float
    model_sqnr_db: float | None
    channel_sqnr_db: float = math.inf  # the worst channel's own QDQ SQNR

    @property
    def rank_db(self) -> float:
        """What the ranking sorts by: the lower of the tensor's and its worst channel's SQNR."""
        worst = min(self.qdq_sqnr_db, self.channel_sqnr_db)
        return worst if math.isfinite(worst) else math.inf

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "tensor": self.tensor, "nodes": self.nodes,
                "qdq_sqnr_db": _round(self.qdq_sqnr_db), "channel_sqnr_db": _round(self.channel_sqnr_db),
                "model_sqnr_db": _round(self.model_sqnr_db)}


def _round(v: float | None) -> float | None:
    return float(f"{v:.4g}") if v is not None and math.isfinite(v) else None


def worst_channel_sqnr(pre: list, post: list) -> float:
    """The lowest SQNR (dB) over the last axis of a tensor before (``pre``) and after
    (``post``) its QDQ pair, one array per row; inf when no channel has signal and noise."""
    x = np.stack([np.asarray(a, dtype=np.float64) for a in pre])
    y = np.stack([np.asarray(a, dtype=np.float64) for a in post])
    if x.shape != y.shape or x.ndim < 2:
        return math.inf
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    signal, noise = (x ** 2).sum(axis=0), ((x - y) ** 2).sum(axis=0)
    lossy = (signal > 0) & (noise > 0)
    return float(np.min(10 * np.log10(signal[lossy] / noise[lossy]))) if lossy.any() else math.inf


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
    matching = create_activation_matching(acts["qdq"], acts["float"])
    errors = compute_activation_error(matching)
    graph = onnx.load(str(float_path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    out: list[NodeError] = []
    for tensor, err in errors.items():
        nodes = ([producers[tensor]] if tensor in producers else []) + readers.get(tensor, [])
        if nodes:
            out.append(NodeError([n.name for n in nodes], nodes[0].op_type, tensor, float(err["qdq_err"]),
                                 float(err["xmodel_err"]) if "xmodel_err" in err else None,
                                 worst_channel_sqnr(matching[tensor]["pre_qdq"], matching[tensor]["post_qdq"])))
    return sorted(out, key=lambda e: e.rank_db)


def _reranked(float_path: Path, rows, method: str, ranked: list[NodeError], budget: int):
    """The next tensor to keep in float, up to ``budget``: the worst of a ranking measured
    again after every step. Keeping a tensor in float moves its rounding to the next
    quantized tensor (a pre-BatchNorm activation's narrow channels, cut at the MatMul, are
    cut again at the bias Add), which the first ranking scored as nearly lossless."""
    from dlcli.export.onnx import quantize_static_int8

    every = {n for e in ranked for n in e.nodes}
    deny: set[str] = set()
    for step in range(budget):
        if step:
            with tempfile.TemporaryDirectory(prefix="dlcli-onnx-rank-") as tmp:
                trial = Path(tmp) / "trial.onnx"
                quantize_static_int8(float_path, trial, rows, method, exclude=sorted(deny))
                ranked = sensitivity(float_path, trial, rows)
        worst = next((e for e in ranked if set(e.nodes) - deny and deny | set(e.nodes) != every), None)
        if worst is None:  # nothing left but the float model
            return
        deny |= set(worst.nodes)
        yield worst.nodes, worst.op, worst.tensor


def auto_fallback(float_path: Path, target: Path, rows, method: str, ranked: list[NodeError], check, budget: int,
                  log) -> tuple[dict, Any]:
    """Quantize again with the worst tensor's nodes excluded, one tensor more at a time (the
    ranking measured again each time), until ``check(path)`` passes or ``budget`` tensors'
    nodes are in float (``fallback.keep_in_float``)."""
    from dlcli.export.fallback import keep_in_float
    from dlcli.export.onnx import quantize_static_int8
    from dlcli.latency import onnx as native_onnx

    return keep_in_float(
        _reranked(float_path, rows, method, ranked, budget), target, budget=budget, check=check, log=log,
        build=lambda deny, path: quantize_static_int8(float_path, path, rows, method, exclude=deny),
        timer=lambda path: native_onnx(path, threads=1, warmup=10, runs=100),
        kind="nodes", unit="ONNX node(s)", describe=lambda deny, label: {"float_nodes": list(deny), "tensor": label})
