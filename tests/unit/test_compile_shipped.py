"""The accuracy gate on the shipped model's full validation split (ONNX Runtime INT8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeds.compile import compile_model
from edgeds.config import REPO_ROOT

from . import _compile_fixtures as fx

cache_env = fx.cache_env
MODEL = REPO_ROOT / "models" / "surface-defect" / "model.onnx"
pytestmark = [
    pytest.mark.usefixtures("cache_env"),
    pytest.mark.skipif(not MODEL.is_file(), reason="the shipped model models/surface-defect/model.onnx is missing"),
]


@pytest.mark.slow
def test_ort_int8_passes_the_gate_on_the_full_validation_split(tmp_path: Path) -> None:
    profile = fx.profile(tmp_path, "shipped-ort", "x86-cpu", "backends:\n  - name: onnxruntime\n")
    result = compile_model(MODEL, profile, out=tmp_path / "bundle")
    first = result.report.attempts[0]
    assert (first.backend, first.variant, first.outcome) == ("onnxruntime", "int8", "passed"), first.reason
    assert result.report.validation_samples == 1000
    assert first.accuracy is not None
    assert first.accuracy["top1_drop"] <= 0.5
    assert first.accuracy["agreement"] >= 0.98 and first.accuracy["min_cosine"] >= 0.99
    assert result.report.reference_top1 is not None and result.report.reference_top1 > 0.9


@pytest.mark.slow
@pytest.mark.litert
def test_litert_full_integer_int8_passes_the_raspberry_pi_gate(tmp_path: Path) -> None:
    """The full-integer INT8 .tflite (int8 inputs/outputs) is gated on XNNPACK here within the
    raspberry-pi-5 budget, through the same pipeline ``edgeds compile`` runs."""
    from edgeds import backends
    from edgeds.compile.toolchains import litert

    if not litert.installed() or not backends.probe("litert").available:
        pytest.skip("litert toolchain or runtime not installed (make toolchains)")
    profile = fx.profile(tmp_path, "shipped-lite", "raspberry-pi-5", "backends:\n  - name: litert\n")
    result = compile_model(MODEL, profile, out=tmp_path / "bundle")
    first = result.report.attempts[0]
    assert (first.backend, first.variant, first.outcome) == ("litert", "int8", "passed"), first.reason
    assert (result.backend, result.precision) == ("litert", "int8")
    assert first.accuracy is not None
    assert first.accuracy["top1_drop"] <= 1.0  # raspberry-pi-5's max_top1_drop
    assert first.accuracy["agreement"] >= 0.97 and first.accuracy["min_cosine"] >= 0.98
