"""Per-node error scan: which nodes hurt most when quantized.

Both the float model (as pre-processed for quantization) and its QDQ-quantized twin are run
on a few validation inputs with every node output exposed. A tensor's error is its normalized
MSE against the float run; a node's sensitivity is the error at its output minus the largest
error at its inputs, i.e. the error that node adds. The most sensitive nodes are the ones to
keep in float for mixed precision. Runs on ONNX Runtime (CPU), without graph optimization so
tensor names survive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZABLE = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Add",
        "Mul",
        "AveragePool",
        "GlobalAveragePool",
        "MaxPool",
        "Concat",
        "Relu",
        "Clip",
        "Sigmoid",
        "HardSwish",
    }
)


@dataclass(frozen=True)
class NodeError:
    node: str
    op_type: str
    added_error: float
    output_error: float


def _run_all(model_path: Path, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    existing = {o.name for o in model.graph.output}
    produced = {out for node in model.graph.node for out in node.output}
    wanted = [n for n in names if n in produced and n not in existing]
    for name in wanted:
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = [o.name for o in session.get_outputs()]
    values = session.run(outs, feeds)
    return {n: np.asarray(v) for n, v in zip(outs, values, strict=True)}


def _counterpart(name: str, quant: dict[str, np.ndarray]) -> np.ndarray | None:
    """The quantized model's value of float tensor ``name``: its DequantizeLinear output if any."""
    for candidate in (f"{name}_DequantizeLinear_Output", name):
        value = quant.get(candidate)
        if value is not None and value.dtype.kind == "f":
            return value
    return None


def _measured_inputs(node: Any, producer: dict[str, Any], error: Callable[[str], float | None]) -> list[str]:
    """Input tensors of ``node``, looking through producers whose outputs are not measurable."""
    found: list[str] = []
    stack, seen = list(node.input), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if error(name) is not None:
            found.append(name)
        elif name in producer:
            stack.extend(producer[name].input)
    return found


def scan(float_model: Path, quant_model: Path, feeds: dict[str, np.ndarray]) -> list[NodeError]:
    """Nodes of ``float_model`` ranked by the error they add in ``quant_model`` (largest first).

    Nodes whose output the quantizer fused away (a Conv followed by a Relu) have no measurable
    output; their error shows at the consumer, and :func:`exclusion_set` keeps them together.
    """
    import onnx

    graph = onnx.load(str(float_model), load_external_data=False).graph
    names = sorted({out for n in graph.node for out in n.output})
    ref = _run_all(float_model, names, feeds)
    qgraph = onnx.load(str(quant_model), load_external_data=False).graph
    qnames = sorted({out for n in qgraph.node for out in n.output})
    got = _run_all(quant_model, qnames, feeds)

    def error(name: str) -> float | None:
        value = _counterpart(name, got)
        if name not in ref or value is None or value.shape != ref[name].shape:
            return None
        a, b = ref[name].astype(np.float64), value.astype(np.float64)
        return float(((a - b) ** 2).mean() / (float((a**2).mean()) + 1e-12))

    producer = {out: node for node in graph.node for out in node.output}
    result = []
    for node in graph.node:
        if node.op_type not in QUANTIZABLE or not node.name:
            continue
        out_errs = [e for o in node.output if (e := error(o)) is not None]
        if not out_errs:
            continue
        in_errs = [e for i in _measured_inputs(node, producer, error) if (e := error(i)) is not None]
        out_err = max(out_errs)
        result.append(NodeError(node.name, node.op_type, max(0.0, out_err - max(in_errs, default=0.0)), out_err))
    return sorted(result, key=lambda e: e.added_error, reverse=True)


def exclusion_set(float_model: Path, chosen: list[str], measurable: set[str]) -> list[str]:
    """``chosen`` nodes plus the producers fused into them (walking back through nodes whose
    outputs were not measurable), so that keeping a node in float keeps its whole fused group."""
    import onnx

    graph = onnx.load(str(float_model), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    result: list[str] = []
    for name in chosen:
        stack = [n for n in graph.node if n.name == name]
        while stack:
            node = stack.pop()
            if node.name and node.name not in result:
                result.append(node.name)
            for inp in node.input:
                parent = producer.get(inp)
                if parent is not None and parent.name not in measurable and parent.op_type in QUANTIZABLE:
                    stack.append(parent)
    return result
