"""Which TensorRT builder API a version speaks, and which ONNX file each API builds from."""

from __future__ import annotations

import pytest

from edgeds.compile.toolchains import tensorrt as trt_tc
from edgeds.compile.toolchains.tensorrt_api import builder_api, network_onnx, parse_version
from edgeds.errors import BackendUnavailable, ToolchainError

SHAPE = trt_tc.ShapeProfile(name="input", min=(1, 3, 8, 8), opt=(4, 3, 8, 8), max=(8, 3, 8, 8))


def _recipe(precision: str, **fields: object) -> trt_tc.Recipe:
    return trt_tc.Recipe.model_validate(
        {
            "onnx": "model.onnx",
            "onnx_sha256": "0" * 64,
            "precision": precision,
            "inputs": [SHAPE.model_dump()],
            "workspace_mb": 256,
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("version", "api"),
    [
        ("10.0.1", "v10"),
        ("10.3.0.30", "v10"),  # JetPack 6.1 / 6.2
        ("10.3.0", "v10"),
        ("10.13.3.9", "v10"),
        ("11.0.0", "v11"),
        ("11.4.1", "v11"),
        (" 11.5", "v11"),
    ],
)
def test_builder_api_follows_the_major_version(version: str, api: str) -> None:
    assert builder_api(version) == api


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("8.6.2.3", "older than 10.0"),  # JetPack 6.0 / JetPack 5
        ("9.3.0", "older than 10.0"),
        ("12.0.0", "newer than the 10.x/11.x"),
        ("unknown", "cannot read the TensorRT version"),
        ("", "cannot read the TensorRT version"),
    ],
)
def test_other_versions_are_unavailable_with_the_reason(version: str, why: str) -> None:
    with pytest.raises(BackendUnavailable, match=why) as info:
        builder_api(version)
    assert info.value.backend == "tensorrt"
    assert "10.x" in str(info.value) and "\n" not in str(info.value)


def test_parse_version() -> None:
    assert parse_version("10.3.0.30") == (10, 3)
    assert parse_version("11.4") == (11, 4)


def test_tensorrt_10_builds_from_the_fp32_onnx_at_every_precision() -> None:
    for precision in ("fp32", "fp16", "int8"):
        recipe = _recipe(precision, qdq_onnx="model.qdq.onnx", fp16_onnx="model.fp16.onnx")
        assert network_onnx(recipe, "v10") == "model.onnx"


def test_tensorrt_11_builds_from_the_typed_onnx() -> None:
    assert network_onnx(_recipe("fp32"), "v11") == "model.onnx"
    assert network_onnx(_recipe("fp16", fp16_onnx="model.fp16.onnx"), "v11") == "model.fp16.onnx"
    assert network_onnx(_recipe("int8", qdq_onnx="model.qdq.onnx"), "v11") == "model.qdq.onnx"


@pytest.mark.parametrize(("precision", "kind"), [("int8", "Q/DQ INT8 ONNX"), ("fp16", "FP16 ONNX")])
def test_an_older_recipe_tells_tensorrt_11_to_recompile(precision: str, kind: str) -> None:
    old = _recipe(precision)  # a recipe written before the typed ONNX fields: they default to None
    assert old.qdq_onnx is None and old.fp16_onnx is None
    with pytest.raises(ToolchainError, match=f"{kind}.*compile the bundle again"):
        network_onnx(old, "v11")
    assert network_onnx(old, "v10") == "model.onnx"
