"""LiteRT delegates: the profile's typed delegate options, the strings ``load_delegate`` gets, and
what ``opened()`` reports when the delegate cannot run here (a fallback with its whole reason, or
a BackendError when fallback is off). Hardware delegates cannot run on this machine: their real
use stays behind the ``nnapi`` marker."""

from __future__ import annotations

import ctypes.util
import logging
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgeds import backends
from edgeds.backends.litert import LiteRtOptions
from edgeds.config import load_profile
from edgeds.errors import BackendError, ConfigError
from edgeds.runtime.testing import tiny_classifier_tflite

pytestmark = pytest.mark.litert
SIZE = 32


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not backends.probe("litert").available:
        pytest.skip("ai-edge-litert is not installed here")
    return tiny_classifier_tflite(tmp_path_factory.mktemp("litert") / "m.tflite", size=SIZE)


def test_qnn_options_become_the_delegate_strings() -> None:
    opts = LiteRtOptions.model_validate(
        {
            "delegate": "qnn",
            "qnn": {
                "backend_type": "htp",
                "htp_performance_mode": "sustained_high_performance",
                "htp_precision": "quantized",
                "skel_library_dir": "/vendor/lib/rfsa/adsp",
            },
        }
    )
    assert opts.delegate_options() == {
        "backend_type": "htp",
        "htp_performance_mode": "1",
        "htp_precision": "0",
        "skel_library_dir": "/vendor/lib/rfsa/adsp",
    }
    gpu = LiteRtOptions.model_validate(
        {"delegate": "qnn", "qnn": {"backend_type": "gpu", "gpu_precision": "fp16", "gpu_performance_mode": "high"}}
    )
    assert gpu.delegate_options() == {"backend_type": "gpu", "gpu_precision": "2", "gpu_performance_mode": "1"}
    # backend_type is mandatory for the QNN delegate: always passed
    assert LiteRtOptions(delegate="qnn").delegate_options() == {"backend_type": "htp"}


def test_nnapi_options_become_the_delegate_strings() -> None:
    opts = LiteRtOptions.model_validate(
        {
            "delegate": "nnapi",
            "nnapi": {
                "accelerator_name": "qti-htp",
                "execution_preference": "sustained_speed",
                "execution_priority": "high",
                "allow_fp16": False,
                "disable_cpu": True,
            },
        }
    )
    assert opts.delegate_options() == {
        "nnapi_accelerator_name": "qti-htp",
        "nnapi_execution_preference": "sustained_speed",
        "nnapi_execution_priority": "high",
        "nnapi_allow_fp16": "false",
        "disable_nnapi_cpu": "true",
    }
    assert LiteRtOptions(delegate="nnapi").delegate_options() == {}
    assert LiteRtOptions().delegate_options() == {}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"delegate": "qnn", "qnn": {"htp_performance_mode": "turbo"}}, "qnn.htp_performance_mode"),
        ({"delegate": "qnn", "qnn": {"backend_type": "npu"}}, "qnn.backend_type"),
        ({"delegate": "qnn", "qnn": {"backend_type": "gpu", "htp_precision": "fp16"}}, "htp_precision"),
        ({"delegate": "nnapi", "nnapi": {"execution_preference": "fast"}}, "nnapi.execution_preference"),
        ({"delegate": "nnapi", "nnapi": {"allow_fp17": True}}, "nnapi.allow_fp17"),
        ({"delegate": "xnnpack", "qnn": {"backend_type": "htp"}}, "qnn"),
        ({"delegate": "qnn", "nnapi": {"allow_fp16": True}}, "nnapi"),
    ],
)
def test_a_wrong_delegate_option_names_its_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        LiteRtOptions.model_validate(options)
    text = str(info.value)
    assert field.split(".")[-1] in text, text


def test_a_profile_with_a_wrong_delegate_option_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "schema: 1\nname: bad\nextends: snapdragon-8gen3\ndescription: bad\nbackends:\n"
        "  - name: litert\n    options: {delegate: qnn, qnn: {htp_performance_mode: turbo}}\n"
        "  - name: litert\n    options: {delegate: xnnpack, qnn: {backend_type: htp}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    text = str(info.value)
    assert "backends[0].options.qnn.htp_performance_mode: must be one of 'default'" in text, text
    assert "got 'turbo'" in text
    assert "backends[1].options: qnn: options of the qnn delegate, but delegate is xnnpack" in text


def test_the_snapdragon_profile_passes_its_delegate_options() -> None:
    chain = load_profile("snapdragon-8gen3").chain()
    qnn, nnapi = chain[0][2], chain[1][2]
    assert isinstance(qnn, LiteRtOptions) and isinstance(nnapi, LiteRtOptions)
    assert qnn.delegate == "qnn" and qnn.delegate_options()["backend_type"] == "htp"
    assert qnn.delegate_options()["htp_precision"] == "0"  # the int8 artifact is quantized
    assert nnapi.delegate == "nnapi" and nnapi.delegate_options()["nnapi_execution_preference"] == "sustained_speed"


def test_xnnpack_reports_no_fallback(model: Path) -> None:
    with backends.create("litert", {"num_threads": 1}) as backend:
        backend.open(model)
        opened = backend.opened()
    assert (opened.delegate, opened.fallback) == ("xnnpack", None)


def test_a_missing_qnn_library_falls_back_and_says_why(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    library = str(model.parent / "libQnnTFLiteDelegate.so")  # does not exist
    x = np.random.default_rng(0).standard_normal((1, SIZE, SIZE, 3), dtype=np.float32)
    with backends.create("litert", {"num_threads": 1}) as plain:
        spec = plain.open(model)
        want = np.array(plain.infer({spec.inputs[0].name: x})[spec.outputs[0].name])
    options = {"delegate": "qnn", "delegate_library": library, "qnn": {"htp_performance_mode": "burst"}}
    with (
        caplog.at_level(logging.WARNING, logger="edgeds.backends.litert"),
        backends.create("litert", options) as backend,
    ):
        spec = backend.open(model)
        got = np.array(backend.infer({spec.inputs[0].name: x})[spec.outputs[0].name])
        opened = backend.opened()
    assert opened.delegate == "xnnpack"
    assert opened.fallback is not None
    assert opened.fallback.startswith(f"qnn delegate failed: cannot load {library!r}: ")
    assert "No such file or directory" in opened.fallback  # the loader's reason, whole
    assert opened.fallback.endswith("; running on xnnpack")
    assert opened.as_dict() == {"delegate": "xnnpack", "fallback": opened.fallback}
    assert opened.fallback in caplog.text
    np.testing.assert_array_equal(got, want)


def test_a_library_that_is_not_a_delegate_falls_back(model: Path) -> None:
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to load")
    with backends.create("litert", {"delegate": "nnapi", "delegate_library": libm}) as backend:
        backend.open(model)
        opened = backend.opened()
    assert opened.delegate == "xnnpack" and opened.fallback is not None
    assert opened.fallback.startswith(f"nnapi delegate failed: cannot load {libm!r}: ")
    assert opened.fallback.endswith(
        "not a TFLite external delegate (no tflite_plugin_create_delegate); running on xnnpack"
    )


def test_without_fallback_a_failed_delegate_raises_with_the_reason(model: Path) -> None:
    library = str(model.parent / "libQnnTFLiteDelegate.so")
    options = {"delegate": "qnn", "delegate_library": library, "delegate_fallback": False}
    backend = backends.create("litert", options)
    with pytest.raises(BackendError, match=r"qnn delegate failed: cannot load .*No such file or directory"):
        backend.open(model)


@pytest.mark.nnapi
def test_the_qnn_delegate_runs_on_the_device(model: Path) -> None:
    """On a Snapdragon device with the QNN delegate installed: the delegate opens, nothing falls back."""
    try:
        ctypes.CDLL("libQnnTFLiteDelegate.so")
    except OSError as exc:
        pytest.skip(f"needs the QNN TFLite delegate (a Snapdragon device): {exc}")
    options = {"delegate": "qnn", "delegate_fallback": False, "qnn": {"backend_type": "htp"}}
    with backends.create("litert", options) as backend:
        backend.open(model)
        assert backend.opened().as_dict() == {"delegate": "qnn"}
