"""The parts that carry a model's fixed batch: the manifest field, the clamped batching, the
exact calibration batches, TensorRT's shape profile and LiteRT's refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds.compile import data
from edgeds.compile.tiny import write_tiny_model
from edgeds.config import Batching
from edgeds.errors import BundleError, ToolchainError
from edgeds.manifest import fixed_batching, parse_manifest
from edgeds.modelcard import load_model_card


def _manifest(**extra: Any) -> dict[str, Any]:
    return {
        "task": "image-classification",
        "model": {"name": "demo", "version": "1.2.3"},
        "version": 7,
        "created_at": "2026-12-01T00:00:00Z",
        "artifacts": [{"runtime": "onnxruntime", "precision": "fp32", "path": "model.onnx"}],
        "io": {
            "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 4, 4]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 2]}],
        },
        "requirements": {"arch": "any", "backends": ["onnxruntime"], "min_memory_mb": 64, "min_disk_mb": 1},
        "golden": {"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.999},
        **extra,
    }


def _fix_batch(model: Path, batch: int) -> Path:
    import onnx

    proto = onnx.load(str(model))
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = batch
    onnx.save(proto, str(model))
    return model


def test_a_manifest_without_the_field_reads_as_dynamic_and_writes_no_key() -> None:
    manifest = parse_manifest(json.dumps(_manifest()))
    assert manifest.fixed_batch is None
    assert "fixed_batch" not in json.loads(manifest.to_json_bytes())


def test_a_fixed_batch_is_kept_and_must_be_positive() -> None:
    manifest = parse_manifest(json.dumps(_manifest(fixed_batch=4)))
    assert manifest.fixed_batch == 4
    assert json.loads(manifest.to_json_bytes())["fixed_batch"] == 4
    with pytest.raises(BundleError, match="fixed_batch"):
        parse_manifest(json.dumps(_manifest(fixed_batch=0)))


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batching_holds_every_size_to_the_batch(batch: int) -> None:
    base = Batching(max_batch_size=8, preferred_batch_sizes=(2, 4, 8), buckets=(1, 2, 4, 8), max_queue_delay_us=500)
    held = Batching.model_validate(fixed_batching(base.model_dump(), batch))
    assert held.max_batch_size == batch
    assert held.bucket_sizes() == (batch,)
    assert held.preferred_batch_sizes == tuple(p for p in (2, 4, 8) if p <= batch)
    assert held.max_queue_delay_us == 500  # the rest is kept


def test_exact_batches_fill_the_last_one_with_real_samples(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path, with_data=False)
    card = load_model_card(model)
    images = np.random.default_rng(0).integers(0, 256, (10, 20, 20, 3), dtype=np.uint8)
    plain = data.batches(card, images, batch=4)
    exact = data.batches(card, images, batch=4, exact=True)
    assert [len(b["input"]) for b in plain] == [4, 4, 2]
    assert [len(b["input"]) for b in exact] == [4, 4, 4]
    # the two filled rows are the first two samples, not zeros
    np.testing.assert_array_equal(exact[2]["input"][2:], exact[0]["input"][:2])
    np.testing.assert_array_equal(exact[2]["input"][:2], plain[2]["input"])


def test_tensorrt_builds_a_fixed_batch_at_that_batch_only(tmp_path: Path) -> None:
    from edgeds import backends
    from edgeds.compile.toolchains import tensorrt

    model = _fix_batch(write_tiny_model(tmp_path / "model", with_data=False), 2)
    (profile,) = tensorrt.shape_profiles(model, max_batch=8, opt_batch=4)
    assert profile.min == profile.opt == profile.max == (2, 3, 160, 160)
    options = backends.options_schema("tensorrt").model_validate({})
    images = np.zeros((6, 160, 160, 3), dtype=np.uint8)
    artifact = tensorrt.compile(
        options,
        model,
        load_model_card(model),
        [],
        tmp_path / "out",
        "int8",
        calibration_images=images,
        max_batch=2,
        opt_batch=2,
    )
    recipe = tensorrt.load_recipe(artifact.path)
    assert recipe.calibration_batch == 2 and recipe.inputs == (profile,)


def test_litert_skips_a_batch_fixed_above_one(tmp_path: Path) -> None:
    from edgeds import backends
    from edgeds.compile.toolchains import litert

    model = _fix_batch(write_tiny_model(tmp_path, with_data=False), 4)
    card = load_model_card(model)
    options = backends.options_schema("litert").model_validate({})
    with pytest.raises(ToolchainError, match="fixed batch of 4"):
        litert.compile(options, model, card, [], tmp_path / "out", "fp32")
