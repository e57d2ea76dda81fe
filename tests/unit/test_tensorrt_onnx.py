"""The typed ONNX a strongly typed (TensorRT 11) build parses: explicit Q/DQ INT8 and FP16, in the recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.backends.tensorrt import TensorRtOptions
from edgeds.compile.tiny import write_tiny_model
from edgeds.compile.toolchains import tensorrt as trt_tc
from edgeds.compile.toolchains import tensorrt_onnx
from edgeds.config import REPO_ROOT
from edgeds.modelcard import load_model_card

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SHIPPED = REPO_ROOT / "models" / "surface-defect" / "model.onnx"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("trt-typed"), with_data=False)


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 160, 160, 3), dtype=np.uint8)


def _compile(model: Path, out: Path, precision: str) -> trt_tc.Recipe:
    artifact = trt_tc.compile(
        TensorRtOptions(),
        model,
        load_model_card(model),
        [],
        out,
        precision,  # type: ignore[arg-type]
        calibration_images=_images(16),
        max_batch=8,
        opt_batch=4,
    )
    recipe = trt_tc.load_recipe(artifact.path)
    named = {recipe.onnx, recipe.qdq_onnx, recipe.fp16_onnx, recipe.calibration} - {None}
    assert {p.name for p in artifact.files} == {"recipe.json", *named}, "every file the recipe names is bundled"
    return recipe


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_int8_recipe_records_a_qdq_onnx_tensorrt_accepts(model: Path, tmp_path: Path) -> None:
    recipe = _compile(model, tmp_path, "int8")
    assert recipe.qdq_onnx == "model.qdq.onnx" and recipe.fp16_onnx is None
    assert recipe.calibration == "calibration.npy", "TensorRT 10 still calibrates on the device"
    qdq = tmp_path / recipe.qdq_onnx
    ops = _ops(qdq)
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert tensorrt_onnx.qdq_problems(qdq) == []
    graph = onnx.load(str(qdq)).graph
    produced_by = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            # explicit quantization: activations and weights of every heavy op arrive through a DQ node
            feeds = [produced_by.get(name) for name in node.input[:2]]
            assert all(f is not None and f.op_type == "DequantizeLinear" for f in feeds), node.name
    assert (tmp_path / recipe.onnx).read_bytes() == model.read_bytes(), "TensorRT 10 builds from the FP32 model"


def test_fp16_recipe_records_an_fp16_onnx_with_fp32_io(model: Path, tmp_path: Path) -> None:
    recipe = _compile(model, tmp_path, "fp16")
    assert recipe.fp16_onnx == "model.fp16.onnx" and recipe.qdq_onnx is None and recipe.calibration is None
    graph = onnx.load(str(tmp_path / recipe.fp16_onnx)).graph
    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)} == {fp32}
    assert {init.data_type for init in graph.initializer if init.data_type in (fp32, fp16)} == {fp16}


def test_fp32_recipe_has_no_typed_onnx(model: Path, tmp_path: Path) -> None:
    recipe = _compile(model, tmp_path, "fp32")
    assert recipe.qdq_onnx is None and recipe.fp16_onnx is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "recipe.json"]


def test_onnxruntimes_own_int8_form_is_not_what_tensorrt_takes(model: Path, tmp_path: Path) -> None:
    from edgeds.compile.toolchains.onnxruntime import preprocess_for_quantization, quantize_int8

    card = load_model_card(model)
    feeds = list(tensorrt_onnx.calibration_feeds(card, _images(8), "input", 4, fixed=False))
    pre = preprocess_for_quantization(model, tmp_path / "pre.onnx")
    quantize_int8(pre, tmp_path / "u8.onnx", feeds)  # the CPU form: uint8 activations, int32 biases
    problems = tensorrt_onnx.qdq_problems(tmp_path / "u8.onnx")
    assert any("zero point is uint8" in p for p in problems)
    assert any("zero point is int32" in p for p in problems)
    onnx.save(onnx.load(str(model)), str(tmp_path / "plain.onnx"))
    assert tensorrt_onnx.qdq_problems(tmp_path / "plain.onnx") == ["no QuantizeLinear node", "no DequantizeLinear node"]


def test_calibration_batches_fit_a_fixed_batch(model: Path) -> None:
    card = load_model_card(model)
    dynamic = [f["input"].shape for f in tensorrt_onnx.calibration_feeds(card, _images(10), "input", 4, False)]
    assert dynamic == [(4, 3, 160, 160), (4, 3, 160, 160), (2, 3, 160, 160)]
    fixed = [f["input"].shape[0] for f in tensorrt_onnx.calibration_feeds(card, _images(10), "input", 4, True)]
    assert fixed == [4, 4], "a fixed-batch model takes exactly its batch"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped model models/surface-defect/model.onnx is missing")
def test_shipped_model_qdq_keeps_the_fp32_top1(tmp_path: Path) -> None:
    """The Q/DQ INT8 ONNX a TensorRT 11 build parses, run through ONNX Runtime, picks the FP32 model's class."""
    from edgeds.compile.data import load_images, preprocess_all

    card = load_model_card(SHIPPED)
    name = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    calibration = load_images(card, "calibration", limit=32).images
    qdq = tensorrt_onnx.write_qdq_onnx(SHIPPED, tmp_path / "model.qdq.onnx", card, calibration, name, 8, False)
    assert tensorrt_onnx.qdq_problems(qdq) == []
    assert _ops(qdq).count("QuantizeLinear") > 10
    x = preprocess_all(card, load_images(card, "validation", limit=32).images, "NCHW")

    def top1(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits: np.ndarray = session.run(None, {name: x})[0]
        return np.asarray(logits.argmax(axis=1))

    agreement = float((top1(SHIPPED) == top1(qdq)).mean())
    assert agreement >= 31 / 32, f"Q/DQ INT8 agrees with FP32 on {agreement:.0%} of 32 images"
