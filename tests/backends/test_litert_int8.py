"""LiteRT full-integer INT8: the toolchain records each integer input/output's parameters, the
backend serves float32 and applies them exactly as a hand-written quantize/dequantize around the
raw interpreter would, and a manifest whose ``io_quantization`` disagrees with the model is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds import backends
from edgeds.backends.base import Artifact
from edgeds.backends.litert import LiteRtBackend
from edgeds.compile import data
from edgeds.compile.tiny import write_tiny_model
from edgeds.compile.toolchains import litert as litert_toolchain
from edgeds.errors import BackendError
from edgeds.modelcard import load_model_card

pytestmark = pytest.mark.litert


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Artifact, np.ndarray]]:
    if not backends.probe("litert").available:
        pytest.skip("ai-edge-litert is not installed here")
    if not litert_toolchain.installed():
        pytest.skip("litert toolchain not installed: run `edgeds toolchain install litert` (make test does)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_TOOLCHAINS", str(litert_toolchain.toolchain_dir().parent))
        mp.setenv("EDGEDS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        model = write_tiny_model(tmp_path_factory.mktemp("tiny"), validation_count=16, calibration_count=16)
        card = load_model_card(model)
        calib = [dict(b) for b in data.batches(card, data.load_images(card, "calibration").images)]
        options = backends.create("litert", {}).options
        out = tmp_path_factory.mktemp("out")
        artifact = litert_toolchain.compile(options, model, card, calib, out, "int8")
        x = data.preprocess_all(card, data.load_images(card, "validation").images, artifact.layout)
        yield artifact, x


def _raw(path: Path, x: np.ndarray) -> np.ndarray:
    """The model run on the raw interpreter with a hand-written quantize/dequantize."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(i["index"], list(x.shape))
    interp.allocate_tensors()
    scale, zero = i["quantization"]
    info = np.iinfo(i["dtype"])
    q = np.clip(np.rint(x / np.float32(scale)) + zero, info.min, info.max).astype(i["dtype"])
    interp.set_tensor(i["index"], q)
    interp.invoke()
    out_scale, out_zero = o["quantization"]
    out = (interp.get_tensor(o["index"]).astype(np.float32) - out_zero) * np.float32(out_scale)
    return np.asarray(out, dtype=np.float32)


def test_the_int8_artifact_is_full_integer_and_records_its_parameters(int8: tuple[Artifact, np.ndarray]) -> None:
    artifact, _ = int8
    meta = artifact.metadata
    assert meta["source_file"] == "model_full_integer_quant.tflite"
    assert meta["quantization"] == "full-integer-ptq" and meta["io_dtype"] == "int8"
    quant: dict[str, dict[str, Any]] = meta["io_quantization"]
    tflite = meta["tflite_io"]
    names = [t["tflite_name"] for t in (*tflite["inputs"], *tflite["outputs"])]
    assert sorted(quant) == sorted(names)  # every input and output, by the backend's tensor names
    for q in quant.values():
        assert set(q) == {"dtype", "scale", "zero_point"}
        assert q["dtype"] == "int8" and q["scale"] > 0 and -128 <= q["zero_point"] <= 127
    # the served interface stays float32
    assert [t["dtype"] for t in meta["io"]["inputs"] + meta["io"]["outputs"]] == ["float32", "float32"]


def test_the_backend_serves_float32_and_applies_the_parameters(int8: tuple[Artifact, np.ndarray]) -> None:
    artifact, x = int8
    batch = x[:8]
    backend = LiteRtBackend({"num_threads": 1})
    try:
        spec = backend.open(artifact.path, buckets=(1, 8))
        assert [t.dtype for t in (*spec.inputs, *spec.outputs)] == ["float32", "float32"]
        got = np.array(backend.infer({spec.inputs[0].name: batch})[spec.outputs[0].name])
        one = np.array(backend.infer({spec.inputs[0].name: batch[:1]})[spec.outputs[0].name])
        assert backend.quantization() == artifact.metadata["io_quantization"]
        # far outside the input's range: saturates like the hand-written clip, never wraps
        loud = np.array(backend.infer({spec.inputs[0].name: batch * 1000})[spec.outputs[0].name])
    finally:
        backend.close()
    assert got.dtype == np.float32 and got.shape == (8, 5)
    np.testing.assert_array_equal(got, _raw(artifact.path, batch))
    np.testing.assert_array_equal(one, got[:1])
    np.testing.assert_array_equal(loud, _raw(artifact.path, batch * 1000))


def test_io_quantization_that_agrees_opens(int8: tuple[Artifact, np.ndarray]) -> None:
    artifact, _ = int8
    recorded = artifact.metadata["io_quantization"]
    with backends.create("litert", {"io_quantization": recorded}) as backend:
        backend.open(artifact.path)


@pytest.mark.parametrize("change", ["scale", "zero_point", "dtype", "missing", "extra"])
def test_io_quantization_that_disagrees_is_refused(int8: tuple[Artifact, np.ndarray], change: str) -> None:
    artifact, _ = int8
    recorded = {k: dict(v) for k, v in artifact.metadata["io_quantization"].items()}
    first = next(iter(recorded))
    if change == "scale":
        recorded[first]["scale"] *= 1.01
    elif change == "zero_point":
        recorded[first]["zero_point"] += 1
    elif change == "dtype":
        recorded[first]["dtype"] = "uint8"
    elif change == "missing":
        del recorded[first]
    else:
        recorded["ghost:0"] = {"dtype": "int8", "scale": 0.1, "zero_point": 0}
    name = "ghost:0" if change == "extra" else first
    backend = backends.create("litert", {"io_quantization": recorded})
    with pytest.raises(BackendError, match=rf"tensor {name!r} is .* but the manifest's io_quantization says"):
        backend.open(artifact.path)


def test_a_float_model_has_no_integer_io(int8: tuple[Artifact, np.ndarray], tmp_path: Path) -> None:
    from edgeds.runtime.testing import tiny_classifier_tflite

    model = tiny_classifier_tflite(tmp_path / "m.tflite", size=32)
    backend = LiteRtBackend({"io_quantization": {}})
    backend.open(model)
    assert backend.quantization() == {}
    backend.close()
