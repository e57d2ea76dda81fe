"""Every available backend compiles the tiny model (FP32, FP16, INT8) through ``Backend.compile``
and its own runtime runs the artifact close to the ONNX Runtime FP32 reference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeds import backends
from edgeds.compile import data, toolchains
from edgeds.compile.gates.image import cosine_rows, run_batches
from edgeds.compile.tiny import write_tiny_model
from edgeds.compile.toolchains import litert as litert_toolchain
from edgeds.modelcard import ModelCard, load_model_card

# (minimum mean cosine vs FP32, minimum top-1 agreement) per precision on 32 validation images
BOUNDS = {"fp32": (0.9999, 1.0), "fp16": (0.999, 0.95), "int8": (0.99, 0.8)}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    toolchains = litert_toolchain.toolchain_dir().parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_TOOLCHAINS", str(toolchains))
        mp.setenv("EDGEDS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def tiny(env: Path) -> tuple[Path, ModelCard, np.ndarray, list[dict[str, np.ndarray]]]:
    model = write_tiny_model(env, validation_count=32, calibration_count=16)
    card = load_model_card(model)
    images = data.load_images(card, "validation").images
    calib = [dict(b) for b in data.batches(card, data.load_images(card, "calibration").images)]
    return model, card, images, calib


def _reference(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": x})[0])


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("name", backends.names())
def test_backend_compiles_and_runs(
    name: str, precision: str, tiny: tuple[Path, ModelCard, np.ndarray, list[dict[str, np.ndarray]]], tmp_path: Path
) -> None:
    if name == "tensorrt":
        pytest.skip("TensorRT engines are built on the device (see tests/unit/test_compile_tensorrt.py)")
    availability = backends.probe(name)
    if not availability.available:
        pytest.skip(f"{name} runtime not available here: {availability.reason}")
    if name == "litert" and not litert_toolchain.installed():
        pytest.skip("litert toolchain not installed: run `edgeds toolchain install litert` (make test does)")
    model, card, images, calib = tiny
    before = model.read_bytes()
    options = backends.create(name, {}).options
    artifact = toolchains.module(name).compile(options, model, card, calib, tmp_path / "out", precision)
    assert model.read_bytes() == before, "compiling must never modify the input model"
    assert artifact.backend == name and artifact.precision == precision and artifact.path.is_file()
    assert all(f.is_file() for f in artifact.files)
    x = data.preprocess_all(card, images, artifact.layout)
    with backends.create(name, {}) as runner:
        spec = runner.open(artifact.path, buckets=(8,))
        outputs = run_batches(runner, x, spec.inputs[0].name, 8)
    got = next(iter(outputs.values()))
    ref = _reference(model, data.preprocess_all(card, images, "NCHW"))
    min_cos, min_agree = BOUNDS[precision]
    assert got.shape == ref.shape
    assert float(cosine_rows(ref, got).mean()) >= min_cos
    assert float((ref.argmax(1) == got.argmax(1)).mean()) >= min_agree
