"""A generic ONNX model for tests, built with ``onnx.helper``: two non-image inputs, two outputs.

Inputs: float32 ``x`` ``[batch, 8]`` and int64 ``ids`` ``[batch, 6]`` (values 0..19). Outputs:
``scores`` ``[batch, 5]`` (logits: ``x @ W + mean(embedding[ids])``) and ``feat`` ``[batch, 8]``
(``relu(x @ V)``). :func:`generic_model` writes it with its card (``task: generic``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FEATURES = 8
TOKENS = 6
VOCAB = 20
CLASSES = 5

CARD = """schema: 1
name: gen
version: 0.1.0
task: generic
model: model.onnx
inputs:
  - {{name: x, dtype: float32, shape: [{features}]}}
  - {{name: ids, dtype: int64, shape: [{tokens}], values: {{low: 0, high: {vocab}}}}}
outputs:
  - {{name: scores, kind: logits}}
  - {{name: feat}}
samples_per_split: {{validation: 48, calibration: 16}}
"""


def generic_model(directory: Path, batch: str | int = "batch") -> Path:
    """Write ``model.onnx`` and ``gen.yaml`` into ``directory``; returns the ONNX path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(21)
    inits = [
        numpy_helper.from_array(rng.standard_normal((FEATURES, CLASSES)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((VOCAB, CLASSES)).astype(np.float32), "embedding"),
        numpy_helper.from_array(rng.standard_normal((FEATURES, FEATURES)).astype(np.float32), "v"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="fc"),
        helper.make_node("Gather", ["embedding", "ids"], ["embedded"], name="embed", axis=0),
        helper.make_node("ReduceMean", ["embedded"], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("Add", ["xw", "pooled"], ["scores"], name="join"),
        helper.make_node("MatMul", ["x", "v"], ["xv"], name="proj"),
        helper.make_node("Relu", ["xv"], ["feat"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "generic",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, FEATURES]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, TOKENS]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, CLASSES]),
            helper.make_tensor_value_info("feat", TensorProto.FLOAT, [batch, FEATURES]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeds-test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    (directory / "gen.yaml").write_text(CARD.format(features=FEATURES, tokens=TOKENS, vocab=VOCAB))
    return path
