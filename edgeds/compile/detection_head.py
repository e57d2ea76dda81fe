"""The decode tail of a detection model: the nodes INT8 keeps in float.

A YOLO export ends in arithmetic that is not a learned layer: anchor grids, strides, box
centre and size, the class sigmoid, and one ``Concat`` of boxes (input pixels, up to hundreds)
and scores (0..1) into the output. Quantizing that concatenation with one scale rounds every
score to a handful of steps, which is why INT8 YOLO deployments keep the tail in float.
:func:`decode_tail` names those nodes: every node from which the head output is reached without
passing through a weighted layer (Conv, ConvTranspose, MatMul, Gemm), walking back from the output.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTED = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "MatMulInteger", "QLinearConv"})


def decode_tail(model: Path, output: str) -> list[str]:
    """Names of the nodes between the last weighted layers and ``output`` (unnamed nodes are
    walked through but not listed: a quantizer excludes nodes by name)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    names: list[str] = []
    seen: set[int] = set()
    stack = [output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen or node.op_type in WEIGHTED:
            continue
        seen.add(id(node))
        if node.name:
            names.append(node.name)
        stack.extend(node.input)
    return names
