"""Multi-input ONNX models for tests, built with ``onnx.helper`` from the tiny classifier.

``two_input``: the tiny image classifier plus a float32 ``aux`` vector ``[batch, 8]``:
``logits = tiny(input) + aux @ W``. ``token_input``: the tiny classifier plus int64 token ids
``ids`` ``[batch, 6]`` (values 0..19): ``logits = tiny(input) + mean(embedding[ids])``.
``flag_input``: int32 ids and a bool ``mask`` ``[batch, 6]``: ``logits = tiny(input) +
mean(embedding[ids]) + 0.1 * count(mask)``. Each is written with its card (the tiny card and
its ``extra_inputs``) beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeds.compile.tiny import write_tiny_model

AUX = 8
TOKENS = 6
VOCAB = 20
CLASSES = 5


def _extend(model: Path, extra_input: object | list[object], nodes: list[object], inits: list[object]) -> None:
    """Rename the tiny model's ``logits`` to ``image_logits`` and add ``extra_input`` and ``nodes``."""
    import onnx

    proto = onnx.load(str(model))
    for node in proto.graph.node:
        node.output[:] = ["image_logits" if o == "logits" else o for o in node.output]
    proto.graph.input.extend(extra_input if isinstance(extra_input, list) else [extra_input])
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(inits)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(model))


def two_input(directory: Path, validation: int, calibration: int) -> Path:
    """The image + ``aux`` model and its card; returns the ONNX path."""
    from onnx import TensorProto, helper, numpy_helper

    model = write_tiny_model(directory, validation, calibration)
    weight = np.random.default_rng(11).standard_normal((AUX, CLASSES)).astype(np.float32) * 0.5
    _extend(
        model,
        helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["batch", AUX]),
        [
            helper.make_node("MatMul", ["aux", "aux.weight"], ["aux_logits"], name="aux_fc"),
            helper.make_node("Add", ["image_logits", "aux_logits"], ["logits"], name="join"),
        ],
        [numpy_helper.from_array(weight, "aux.weight")],
    )
    card = directory / "tiny.yaml"
    card.write_text(card.read_text() + f"extra_inputs:\n  - {{name: aux, dtype: float32, shape: [{AUX}]}}\n")
    return model


def token_input(directory: Path, validation: int, calibration: int) -> Path:
    """The image + int64 ``ids`` model and its card; returns the ONNX path."""
    from onnx import TensorProto, helper, numpy_helper

    model = write_tiny_model(directory, validation, calibration)
    table = np.random.default_rng(12).standard_normal((VOCAB, CLASSES)).astype(np.float32)
    _extend(
        model,
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", TOKENS]),
        [
            helper.make_node("Gather", ["embedding", "ids"], ["embedded"], name="embed", axis=0),
            helper.make_node("ReduceMean", ["embedded"], ["pooled"], name="pool_tokens", axes=[1], keepdims=0),
            helper.make_node("Add", ["image_logits", "pooled"], ["logits"], name="join"),
        ],
        [numpy_helper.from_array(table, "embedding")],
    )
    card = directory / "tiny.yaml"
    card.write_text(
        card.read_text()
        + f"extra_inputs:\n  - {{name: ids, dtype: int64, shape: [{TOKENS}], values: {{low: 0, high: {VOCAB}}}}}\n"
    )
    return model


def flag_input(directory: Path, validation: int, calibration: int) -> Path:
    """The image + int32 ``ids`` + bool ``mask`` model and its card; returns the ONNX path."""
    from onnx import TensorProto, helper, numpy_helper

    model = write_tiny_model(directory, validation, calibration)
    table = np.random.default_rng(13).standard_normal((VOCAB, CLASSES)).astype(np.float32)
    _extend(
        model,
        [
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", TOKENS]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", TOKENS]),
        ],
        [
            helper.make_node("Gather", ["embedding", "ids"], ["embedded"], name="embed", axis=0),
            helper.make_node("ReduceMean", ["embedded"], ["pooled"], name="pool_tokens", axes=[1], keepdims=0),
            helper.make_node("Cast", ["mask"], ["mask_f"], name="mask_cast", to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["mask_f", "axes"], ["count"], name="count", keepdims=1),
            helper.make_node("Mul", ["count", "tenth"], ["bias"], name="scale"),
            helper.make_node("Add", ["image_logits", "pooled"], ["partial"], name="join"),
            helper.make_node("Add", ["partial", "bias"], ["logits"], name="join_mask"),
        ],
        [
            numpy_helper.from_array(table, "embedding"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array(0.1, dtype=np.float32), "tenth"),
        ],
    )
    card = directory / "tiny.yaml"
    card.write_text(
        card.read_text()
        + "extra_inputs:\n"
        + f"  - {{name: ids, dtype: int32, shape: [{TOKENS}], values: {{low: 0, high: {VOCAB}}}}}\n"
        + f"  - {{name: mask, dtype: bool, shape: [{TOKENS}], values: {{low: 0, high: 2}}}}\n"
    )
    return model
