"""compile_model end to end on a tiny model: selection, gate, fallback chain, bundle, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edgeds.bundle import generate_keypair, load_bundle, verify_bundle
from edgeds.compile import compile_model
from edgeds.compile.tiny import write_tiny_model
from edgeds.errors import (
    AccuracyGateFailed,
    ConfigError,
    DatasetError,
    InvalidModel,
    UnsupportedPrecision,
)

from . import _compile_fixtures as fx

# fixtures shared with the other compile tests
cache_env, tiny, profiles = fx.cache_env, fx.tiny, fx.profiles
profile = fx.profile

pytestmark = pytest.mark.usefixtures("cache_env")


def test_ort_int8_passes_and_writes_a_signed_bundle(tiny: Path, profiles: Path, tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    seen: set[str] = set()
    result = compile_model(
        tiny, profiles / "tiny-ort.yaml", out=tmp_path / "b", key=private, progress=lambda t, d, n: seen.add(t)
    )
    assert (result.backend, result.precision, result.signed) == ("onnxruntime", "int8", True)
    winner = result.report.winner
    assert winner is not None and winner.outcome == "passed" and winner.variant == "int8"
    assert winner.accuracy is not None and winner.accuracy["agreement"] >= 0.93
    assert {"calibration data", "FP32 reference", "converting onnxruntime int8", "evaluating onnxruntime int8"} <= seen
    manifest = verify_bundle(result.bundle, public)
    assert manifest.backend == "onnxruntime" and manifest.precision == "int8" and manifest.layout == "NCHW"
    assert manifest.profile["name"] == "tiny-ort"
    assert manifest.batching["buckets"] == [1, 2, 4, 8]
    assert manifest.requirements.arch == "x86_64" and manifest.requirements.backends == ("onnxruntime",)
    assert manifest.tools["onnxruntime"] and manifest.accuracy.agreement == winner.accuracy["agreement"]
    assert manifest.io.inputs[0].name == "input" and manifest.io.outputs[0].shape == (-1, 5)
    with load_bundle(result.bundle, public) as bundle:
        inputs, outputs = bundle.golden()
        assert inputs.shape == (8, 3, 160, 160) and outputs["logits"].shape == (8, 5)
        import onnxruntime as ort

        session = ort.InferenceSession(str(bundle.artifact_path), providers=["CPUExecutionProvider"])
        again = session.run(None, {"input": inputs})[0]
        np.testing.assert_allclose(
            again, outputs["logits"], atol=manifest.tensor_golden.atol, rtol=manifest.tensor_golden.rtol
        )
        assert "QuantizeLinear" in {n.op_type for n in __import__("onnx").load(str(bundle.artifact_path)).graph.node}


def _weight_codes(model: Path) -> np.ndarray:
    """Every INT8 weight code of a QDQ model (the initializers its DequantizeLinear nodes read)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    codes = [inits[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    return np.concatenate([c.ravel() for c in codes if c.dtype == np.int8])


def test_x86_profiles_quantize_weights_in_7_bits_and_arm_ones_in_8(tiny: Path, tmp_path: Path) -> None:
    # x86 CPUs without VNNI saturate U8S8 products of full-range weights (VPMADDUBSW): 7-bit weights
    # there; an aarch64 profile, or options that say so, keep the full range
    x86 = profile(tmp_path, "x86", "x86-cpu", "backends:\n  - name: onnxruntime\n" + fx.BUDGET)
    arm = profile(
        tmp_path, "arm", "x86-cpu", "hardware: {arch: aarch64}\nbackends:\n  - name: onnxruntime\n" + fx.BUDGET
    )
    full = profile(
        tmp_path,
        "full",
        "x86-cpu",
        "backends:\n  - name: onnxruntime\n    options: {reduce_range: false}\n" + fx.BUDGET,
    )
    bits = {}
    for name, prof in (("x86", x86), ("arm", arm), ("full", full)):
        result = compile_model(tiny, prof, out=tmp_path / name)
        with load_bundle(result.bundle) as bundle:
            codes = _weight_codes(bundle.artifact_path)
            bits[name] = (int(np.abs(codes.astype(np.int16)).max()), bundle.manifest.backend_options["reduce_range"])
    # symmetric per-channel weights: each channel's largest maps to the top code, 64 in 7 bits, 127 in 8
    assert bits == {"x86": (64, True), "arm": (127, False), "full": (127, False)}


def test_useless_calibration_fails_the_gate_and_the_fallback_is_reported(
    tiny: Path, profiles: Path, tmp_path: Path
) -> None:
    constant = np.full((16, 160, 160, 3), 128, np.uint8)
    result = compile_model(tiny, profiles / "tiny-ort.yaml", out=tmp_path / "b", calibration_images=constant)
    chain = [(a.variant, a.outcome) for a in result.report.attempts]
    assert chain == [("int8", "failed"), ("int8-mixed", "failed"), ("int8-mixed", "failed"), ("fp32", "passed")]
    first, mixed = result.report.attempts[0], result.report.attempts[1]
    assert first.reason and "agreement" in first.reason
    assert first.accuracy is not None and first.accuracy["agreement"] < 0.5
    assert mixed.excluded_nodes and "in float" in (mixed.reason or "")
    assert result.precision == "fp32"
    assert json.loads(json.dumps(result.as_dict()))["report"]["attempts"][0]["outcome"] == "failed"


def test_unavailable_backend_is_skipped_with_the_reason(
    tiny: Path, profiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEDS_TOOLCHAINS", str(tmp_path / "no-toolchains"))
    result = compile_model(tiny, profiles / "tiny-chain.yaml", out=tmp_path / "b", precision="fp32")
    skipped = result.report.attempts[0]
    assert (skipped.backend, skipped.outcome) == ("litert", "skipped")
    assert skipped.reason and "edgeds toolchain install litert" in skipped.reason
    assert result.backend == "onnxruntime"
    # the summary says in one line that this is not the profile's first choice, and why
    note = result.report.first_choice or ""
    assert note.startswith("not the profile's first choice (litert fp32): the bundle serves onnxruntime fp32")
    assert "edgeds toolchain install litert" in note and "\n" not in note
    assert json.loads(json.dumps(result.as_dict()))["report"]["first_choice"] == note


def test_nothing_passing_raises_with_the_report(tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # an execution provider onnxruntime does not know: every candidate fails to open, the error
    # carries the whole report
    bad = profile(
        tmp_path,
        "bad-ep",
        "x86-cpu",
        "backends:\n  - name: onnxruntime\n    options: {execution_providers: [NoSuchExecutionProvider]}\n",
    )
    with (
        caplog.at_level(logging.INFO, logger="edgeds.compile.pipeline"),
        pytest.raises(AccuracyGateFailed, match="onnxruntime/int8: error") as info,
    ):
        compile_model(tiny, bad, out=tmp_path / "b")
    report = info.value.report  # type: ignore[attr-defined]
    assert [a.variant for a in report.attempts] == ["int8", "fp32"]  # no mixed rounds after an INT8 error
    assert all(a.outcome == "error" and a.reason for a in report.attempts)
    assert not (tmp_path / "b").exists()
    # each failed candidate is logged with its traceback (the report keeps the reason whole, on one line)
    failed = [r for r in caplog.records if "failed, trying the next candidate" in r.getMessage()]
    assert [r.getMessage().split()[1] for r in failed] == ["onnxruntime/int8", "onnxruntime/fp32"]
    assert all("NoSuchExecutionProvider" in (a.reason or "") for a in report.attempts)
    assert all(r.exc_info is not None for r in failed)


def test_not_onnx_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00garbage, not protobuf" * 3)
    with pytest.raises(InvalidModel, match="not a valid ONNX model"):
        compile_model(bogus, "x86-cpu", out=tmp_path / "b")
    with pytest.raises(InvalidModel, match="no such file"):
        compile_model(tmp_path / "missing.onnx", "x86-cpu")


def test_precision_the_profile_or_backend_cannot_do(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedPrecision, match="does not do fp16"):
        compile_model(tiny, "x86-cpu", precision="fp16", out=tmp_path / "b")
    dla = profile(tmp_path, "dla", "jetson-orin-nx", "backends:\n  - name: tensorrt\n    options: {dla_core: 0}\n")
    with pytest.raises(UnsupportedPrecision, match="DLA"):
        compile_model(tiny, dla, precision="fp32", out=tmp_path / "c")


def test_missing_calibration_data_is_a_clear_error(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "nodata", with_data=False)
    with pytest.raises(DatasetError, match="no data: section"):
        compile_model(model, "x86-cpu", out=tmp_path / "b")


def test_profile_naming_an_unknown_backend(tiny: Path, tmp_path: Path) -> None:
    bad = profile(tmp_path, "bad", "x86-cpu", "backends:\n  - name: tflite-micro\n")
    with pytest.raises(ConfigError, match=r"unknown backend 'tflite-micro'") as info:
        compile_model(tiny, bad, out=tmp_path / "b")
    assert "bad.yaml:" in str(info.value)


def test_tensorrt_profile_writes_a_recipe_bundle(tiny: Path, tmp_path: Path) -> None:
    result = compile_model(tiny, "jetson-orin-nx", out=tmp_path / "b")
    attempt = result.report.winner
    assert attempt is not None and attempt.outcome == "deferred" and result.backend == "tensorrt"
    manifest = verify_bundle(result.bundle, None)
    assert manifest.recipe is not None and manifest.recipe["precision"] == "int8"
    assert manifest.recipe["inputs"][0]["max"] == [16, 3, 160, 160]
    assert manifest.recipe["workspace_mb"] == 2048 and manifest.artifact == "artifacts/1-tensorrt-int8/recipe.json"
    assert {"artifacts/1-tensorrt-int8/model.onnx", "artifacts/1-tensorrt-int8/calibration.npy"} <= {
        f.path for f in manifest.files
    }
    # the profile's ONNX Runtime fallback rides in the same bundle, gated here; the engine is the device's
    trt, ort = manifest.artifacts
    assert trt.gated is not None and trt.gated.where == "device" and trt.resolved_on_device
    assert (ort.runtime, ort.precision) == ("onnxruntime", "fp32")
    assert ort.gated is not None and ort.gated.where == "compile-host" and ort.gated.figures["passed"]
    assert ort.golden is not None and ort.golden.outputs.startswith("golden/2-onnxruntime-fp32/")
    assert manifest.requirements.backends == ("tensorrt", "onnxruntime")
    assert [result.report.attempts[i].backend for i in result.report.shipped] == ["tensorrt", "onnxruntime"]
    assert result.report.first_choice is None


def test_litert_bundle_is_nhwc_and_reproduces_its_golden_outputs(tiny: Path, tmp_path: Path) -> None:
    from edgeds import backends
    from edgeds.compile.toolchains import litert

    if not litert.installed() or not backends.probe("litert").available:
        pytest.skip("litert toolchain or runtime not installed (make toolchains)")
    lite = profile(tmp_path, "lite", "raspberry-pi-5", "backends:\n  - name: litert\n" + fx.BUDGET)
    result = compile_model(tiny, lite, out=tmp_path / "b")
    assert (result.backend, result.precision) == ("litert", "int8")
    with load_bundle(result.bundle) as bundle:
        assert bundle.manifest.layout == "NHWC" and bundle.artifact_path.suffix == ".tflite"
        assert bundle.manifest.io.inputs[0].shape == (-1, 160, 160, 3)
        inputs, outputs = bundle.golden()
        assert inputs.shape == (8, 160, 160, 3)
        with backends.create("litert", {}) as runner:
            spec = runner.open(bundle.artifact_path, buckets=(8,))
            got = np.array(next(iter(runner.infer({spec.inputs[0].name: inputs}).values())))
        golden = bundle.manifest.tensor_golden
        np.testing.assert_allclose(got, outputs["logits"], atol=golden.atol, rtol=golden.rtol)


def test_snapdragon_int8_is_gated_on_xnnpack_when_the_qnn_delegate_is_missing(
    tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The full-integer INT8 model is what the QNN entry ships; on a host without the delegate the
    gate runs it on XNNPACK (the fallback is logged) instead of falling back to FP16."""
    from edgeds import backends
    from edgeds.compile.toolchains import litert

    if not litert.installed() or not backends.probe("litert").available:
        pytest.skip("litert toolchain or runtime not installed (make toolchains)")
    body = "backends:\n  - name: litert\n    options: {delegate: qnn, qnn: {htp_precision: quantized}}\n"
    snap = profile(tmp_path, "snap", "snapdragon-8gen3", body + fx.BUDGET)
    with caplog.at_level(logging.WARNING, logger="edgeds.backends.litert"):
        result = compile_model(tiny, snap, out=tmp_path / "b")
    first = result.report.attempts[0]
    assert (first.backend, first.variant, first.outcome) == ("litert", "int8", "passed"), first.reason
    assert (result.backend, result.precision) == ("litert", "int8")
    # the compile host gates on XNNPACK without trying the delegate; the device loads QNN at load
    assert "qnn delegate failed" not in caplog.text and first.device == "XNNPACK (CPU)"
    with load_bundle(result.bundle) as bundle:
        (entry,) = bundle.manifest.artifacts
        assert entry.options["delegate"] == "qnn" and entry.resolved_on_device == "LiteRT delegate qnn"
        assert entry.gated is not None and entry.gated.device == "XNNPACK (CPU)"
        assert entry.io_quantization  # the full-integer model's input/output scale and zero point


def test_a_litert_int8_bundle_serves_with_the_quantization_its_manifest_records(tiny: Path, tmp_path: Path) -> None:
    from edgeds import backends
    from edgeds.compile.toolchains import litert
    from edgeds.runtime.engine import Engine

    if not litert.installed() or not backends.probe("litert").available:
        pytest.skip("litert toolchain or runtime not installed (make toolchains)")
    lite = profile(tmp_path, "lite8", "raspberry-pi-5", "backends:\n  - name: litert\n" + fx.BUDGET)
    result = compile_model(tiny, lite, out=tmp_path / "b")
    with load_bundle(result.bundle) as bundle:
        entry = bundle.manifest.artifacts[0]
        assert entry.precision == "int8" and entry.io_quantization
        assert bundle.manifest.schema_version == 3  # a field schema 2 readers do not know
        with Engine.from_bundle(bundle) as engine:
            assert engine.selection is not None and engine.selection.opened.delegate == "xnnpack"
            assert engine.backend.options.io_quantization  # type: ignore[attr-defined]
            inputs, golden = bundle.golden()
            outputs = engine.infer({engine.io.inputs[0].name: inputs[:2]})  # type: ignore[union-attr]
            (name,) = golden
            assert np.allclose(next(iter(outputs.values())), golden[name][:2], atol=1e-5)
