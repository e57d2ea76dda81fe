"""A tiny ONNX image classifier with the shipped model's interface, for tests and smoke runs.

Input ``input`` float32 ``[batch, 3, 160, 160]`` NCHW, output ``logits`` ``[batch, 5]``. The
weights are seeded random numbers (the model is not trained): useful for exercising the
compile pipeline, not for accuracy claims. :func:`write_tiny_model` also writes a model card
whose data splits come from :mod:`edgeds.datasets.surface`, with their fingerprints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..datasets.surface import LABELS, fingerprint, generate

SIZE = 160


def _conv(name: str, rng: np.random.Generator, cin: int, cout: int, k: int) -> np.ndarray:
    scale = float(np.sqrt(2.0 / (cin * k * k)))
    weights: np.ndarray = (rng.standard_normal((cout, cin, k, k)) * scale).astype(np.float32)
    return weights


def build_tiny_model(path: Path, seed: int = 0, opset: int = 17) -> Path:
    """Write the tiny classifier to ``path`` (dynamic batch) and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = []
    nodes = []
    chans = [3, 8, 16, 32]
    x = "input"
    for i in range(3):
        w = numpy_helper.from_array(_conv("w", rng, chans[i], chans[i + 1], 3), f"conv{i}.weight")
        b = numpy_helper.from_array((rng.standard_normal(chans[i + 1]) * 0.1).astype(np.float32), f"conv{i}.bias")
        inits += [w, b]
        nodes.append(
            helper.make_node(
                "Conv",
                [x, w.name, b.name],
                [f"conv{i}"],
                name=f"conv{i}",
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            )
        )
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        x = f"relu{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
    fc_w = numpy_helper.from_array(
        (rng.standard_normal((len(LABELS), chans[-1])) * 0.5).astype(np.float32), "fc.weight"
    )
    fc_b = numpy_helper.from_array(np.zeros(len(LABELS), dtype=np.float32), "fc.bias")
    inits += [fc_w, fc_b]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(LABELS)])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgeds-tiny")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tiny_model(
    directory: Path,
    validation_count: int = 64,
    calibration_count: int = 16,
    seed: int = 0,
    with_data: bool = True,
) -> Path:
    """Write ``model.onnx`` and ``tiny.yaml`` (its card) into ``directory``; returns the ONNX path."""
    directory.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(directory / "model.onnx", seed=seed)
    data = ""
    if with_data:
        val = fingerprint(*generate(7001, validation_count, SIZE))
        cal = fingerprint(*generate(7002, calibration_count, SIZE))
        data = f"""data:
  generator: edgeds.datasets.surface:generate
  validation: {{seed: 7001, count: {validation_count}, fingerprint: "{val}"}}
  calibration: {{seed: 7002, count: {calibration_count}, fingerprint: "{cal}"}}
"""
    (directory / "tiny.yaml").write_text(
        f"""schema: 1
name: tiny
version: 0.1.0
task: image-classification
model: model.onnx
input: {{name: input, layout: NCHW, height: {SIZE}, width: {SIZE}, scale: 0.00392156862745098,
        mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
output: {{name: logits, kind: logits}}
labels: [{", ".join(LABELS)}]
{data}"""
    )
    return model
