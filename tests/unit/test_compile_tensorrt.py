"""TensorRT recipes, device fingerprints and engine cache keys (the builder itself needs a GPU)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edgeds.backends.tensorrt import TensorRtOptions
from edgeds.compile.tiny import write_tiny_model
from edgeds.compile.toolchains import tensorrt as trt_tc
from edgeds.errors import UnsupportedPrecision
from edgeds.modelcard import load_model_card

FACTS = trt_tc.DeviceFacts(tensorrt_version="10.3.0", compute_capability="8.7", l4t="36.4.0", gpu_name="Orin")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("trt"), with_data=False)


def _recipe(model: Path, out: Path, precision: str = "int8", **options: object) -> trt_tc.Recipe:
    card = load_model_card(model)
    images = np.zeros((4, 160, 160, 3), np.uint8)
    artifact = trt_tc.compile(
        TensorRtOptions(**options),
        model,
        card,
        [],
        out,
        precision,  # type: ignore[arg-type]
        calibration_images=images,
        max_batch=8,
        opt_batch=4,
    )
    assert artifact.path == out / "recipe.json"
    return trt_tc.load_recipe(artifact.path)


def test_recipe_carries_everything_the_device_needs(model: Path, tmp_path: Path) -> None:
    recipe = _recipe(model, tmp_path, workspace_mb=512, dla_core=1, calibrator="minmax")
    assert recipe.onnx == "model.onnx" and (tmp_path / "model.onnx").read_bytes() == model.read_bytes()
    assert recipe.precision == "int8" and recipe.calibrator == "minmax"
    assert recipe.calibration == "calibration.npy" and np.load(tmp_path / "calibration.npy").shape == (4, 160, 160, 3)
    assert recipe.inputs[0].model_dump() == {
        "name": "input",
        "min": (1, 3, 160, 160),
        "opt": (4, 3, 160, 160),
        "max": (8, 3, 160, 160),
    }
    assert (recipe.workspace_mb, recipe.dla_core, recipe.gpu_fallback) == (512, 1, True)
    assert json.loads((tmp_path / "recipe.json").read_text())["onnx_sha256"] == recipe.onnx_sha256


def test_fp32_recipe_has_no_calibration(model: Path, tmp_path: Path) -> None:
    recipe = _recipe(model, tmp_path, precision="fp32")
    assert recipe.calibration is None and not (tmp_path / "calibration.npy").exists()


def test_dla_cannot_run_fp32(model: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedPrecision, match="DLA"):
        _recipe(model, tmp_path, precision="fp32", dla_core=0)


def test_parse_l4t() -> None:
    line = (
        "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
        "DATE: Fri Sep 13 04:36:44 UTC 2024"
    )
    assert trt_tc.parse_l4t(line) == "36.4.0"
    assert trt_tc.parse_l4t("# R35 (release), REVISION: 5.0, GCID: 1") == "35.5.0"
    assert trt_tc.parse_l4t("not a tegra release") is None
    assert trt_tc.read_l4t(Path("/nonexistent/nv_tegra_release")) is None


def test_fingerprint_changes_with_every_input(model: Path, tmp_path: Path) -> None:
    recipe = _recipe(model, tmp_path)
    base = trt_tc.device_fingerprint(recipe, FACTS)
    assert base == trt_tc.device_fingerprint(recipe, dataclasses.replace(FACTS, gpu_name="renamed"))
    variants = [
        trt_tc.device_fingerprint(recipe.model_copy(update={"onnx_sha256": "0" * 64}), FACTS),
        trt_tc.device_fingerprint(recipe, dataclasses.replace(FACTS, tensorrt_version="10.7.0")),
        trt_tc.device_fingerprint(recipe, dataclasses.replace(FACTS, compute_capability="8.6")),
        trt_tc.device_fingerprint(recipe, dataclasses.replace(FACTS, l4t="36.3.0")),
        trt_tc.device_fingerprint(recipe.model_copy(update={"precision": "fp16"}), FACTS),
        trt_tc.device_fingerprint(recipe.model_copy(update={"dla_core": 0}), FACTS),
        trt_tc.device_fingerprint(
            recipe.model_copy(update={"inputs": (recipe.inputs[0].model_copy(update={"max": (16, 3, 160, 160)}),)}),
            FACTS,
        ),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_engine_cache_layout(model: Path, tmp_path: Path) -> None:
    recipe = _recipe(model, tmp_path / "r")
    paths = trt_tc.engine_paths(tmp_path / "cache", recipe, FACTS)
    key = trt_tc.device_fingerprint(recipe, FACTS)
    assert paths.engine == tmp_path / "cache" / "engines" / key[:2] / key / "model.plan"
    other_model = recipe.model_copy(update={"onnx_sha256": "1" * 64})
    other = trt_tc.engine_paths(tmp_path / "cache", other_model, FACTS)
    assert other.engine != paths.engine
    assert other.timing_cache == paths.timing_cache, "one timing cache per GPU + TensorRT version"
    assert other.calibration_cache != paths.calibration_cache, "calibration caches are per model"
    newer = trt_tc.engine_paths(tmp_path / "cache", recipe, dataclasses.replace(FACTS, tensorrt_version="10.7.0"))
    assert newer.timing_cache != paths.timing_cache


def test_engine_build_without_tensorrt_says_how_to_install(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is importable here; the builder test covers this machine")
    except ImportError:
        pass
    from edgeds.errors import BackendUnavailable

    _recipe(model, tmp_path)
    with pytest.raises(BackendUnavailable, match="edgeds\\[tensorrt\\]"):
        trt_tc.ensure_engine(tmp_path / "recipe.json", tmp_path / "cache", load_model_card(model))


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_builder_builds_and_caches_an_engine(tmp_path: Path, precision: str) -> None:
    """Needs TensorRT 10 or 11 + a CUDA GPU: builds the engine from a recipe with the installed
    TensorRT's builder API (10: flags + calibrator, 11: the typed ONNX), then hits the cache."""
    try:
        facts = trt_tc.DeviceFacts.detect()
    except Exception as exc:  # noqa: BLE001 -- whatever stops the probe means no usable TensorRT here
        pytest.skip(f"needs TensorRT and a CUDA GPU: {exc}")
    from edgeds.compile.toolchains.tensorrt_api import builder_api

    builder_api(facts.tensorrt_version)  # a version this edgeds does not build with fails here, by name
    model = write_tiny_model(tmp_path / "m", validation_count=8, calibration_count=16)
    _recipe(model, tmp_path / "r", precision)
    card = load_model_card(model)
    engine, built = trt_tc.ensure_engine(tmp_path / "r" / "recipe.json", tmp_path / "cache", card)
    assert built and engine.stat().st_size > 0
    again, built_again = trt_tc.ensure_engine(tmp_path / "r" / "recipe.json", tmp_path / "cache", card)
    assert again == engine and not built_again


def test_bundle_engine_needs_a_tensorrt_bundle(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from edgeds.errors import BundleError
    from edgeds.sim.bundles import make_bundle

    bundle = make_bundle(tmp_path / "bundle", 1, None)
    with pytest.raises(BundleError, match="is a onnxruntime bundle without a TensorRT recipe"):
        trt_tc.ensure_bundle_engine(bundle, cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_default_engine_cache_is_under_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEDS_CACHE_DIR", str(tmp_path))
    assert trt_tc.default_cache_root() == tmp_path / "tensorrt"
