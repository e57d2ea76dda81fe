"""Manifest schema 2: ordered artifacts per runtime, a task per bundle, a content digest; schema 1 still reads."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds.bundle import build_bundle, generate_keypair, load_bundle, sign_bundle, verify_bundle
from edgeds.deploy.device.admission import Candidate, verify_candidate
from edgeds.deploy.device.store import Store
from edgeds.errors import BundleError, BundleVerificationError, ReleaseRejected
from edgeds.manifest import MANIFEST, Manifest, manifest_digest, parse_manifest

IMAGE_CARD = """schema: 1
name: demo
version: 1.2.3
task: image-classification
model: model.onnx
input: {name: input, height: 4, width: 4}
output: {name: logits}
labels: [a, b]
"""

LM_CARD = """schema: 1
name: tiny-lm
version: 1.0.0
task: causal-lm
model: checkpoint
architecture: qwen2
context_length: 128
"""

REQUIREMENTS = {"arch": "any", "backends": ["onnxruntime"], "min_memory_mb": 64, "min_disk_mb": 1}
IO = {
    "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3, 4, 4]}],
    "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 2]}],
}


def _image_manifest(created_at: str = "2026-12-01T00:00:00Z") -> dict[str, Any]:
    return {
        "task": "image-classification",
        "model": {"name": "demo", "version": "1.2.3"},
        "version": 7,
        "created_at": created_at,
        "artifacts": [
            {
                "runtime": "onnxruntime",
                "precision": "int8",
                "path": "model.onnx",
                "gated": {"where": "compile-host", "device": "CPU", "figures": {"top1_drop": 0.1}},
            },
            {"runtime": "openvino", "precision": "fp32", "path": "model-fp32.onnx", "options": {"device": "CPU"}},
        ],
        "io": IO,
        "labels": ["a", "b"],
        "requirements": REQUIREMENTS,
        "golden": {"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.999},
    }


def _image_bundle(tmp_path: Path, name: str = "bundle", model_bytes: bytes = b"model bytes" * 20) -> Path:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    (src / "model.onnx").write_bytes(model_bytes)
    (src / "model-fp32.onnx").write_bytes(b"fp32 model" * 20)
    (src / "demo.yaml").write_text(IMAGE_CARD)
    return build_bundle(
        tmp_path / name,
        manifest=_image_manifest(),
        artifacts={"model.onnx": src / "model.onnx", "model-fp32.onnx": src / "model-fp32.onnx"},
        card_file=src / "demo.yaml",
        golden_inputs=np.ones((2, 3, 4, 4), np.float32),
        golden_outputs={"logits": np.zeros((2, 2), np.float32)},
    )


def _as_schema_1(bundle: Path) -> None:
    """Rewrite a bundle's manifest as schema 1 wrote it (one backend, one artifact)."""
    data = json.loads((bundle / MANIFEST).read_text())
    first = data.pop("artifacts")[0]
    data.pop("task")
    data.pop("llm", None)
    data.update(
        schema_version=1,
        backend=first["runtime"],
        precision=first["precision"],
        artifact=first["path"],
        backend_options=first["options"],
        device=first["device"],
        recipe=first["recipe"],
    )
    (bundle / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def test_a_new_bundle_is_written_as_schema_2_with_ordered_artifacts(tmp_path: Path) -> None:
    bundle = _image_bundle(tmp_path)
    raw = json.loads((bundle / MANIFEST).read_text())
    assert raw["schema_version"] == 2 and raw["task"] == "image-classification"
    assert "backend" not in raw and "artifact" not in raw
    with load_bundle(bundle) as loaded:
        manifest = loaded.manifest
        assert [a.runtime for a in manifest.artifacts] == ["onnxruntime", "openvino"]
        assert manifest.artifacts[0].path == "artifacts/model.onnx"
        assert manifest.artifacts[0].gated is not None and manifest.artifacts[0].gated.where == "compile-host"
        # the primary artifact's surface, as consumers of schema 1 read it
        assert (manifest.backend, manifest.precision, manifest.artifact) == (
            "onnxruntime",
            "int8",
            "artifacts/model.onnx",
        )
        assert loaded.artifact_path == bundle / "artifacts/model.onnx"
        assert loaded.artifact_dir(1) == bundle / "artifacts/model-fp32.onnx"
        assert loaded.task == "image-classification" and loaded.card.name == "demo"
    again = parse_manifest((bundle / MANIFEST).read_bytes())
    assert again.to_json_bytes() == (bundle / MANIFEST).read_bytes()  # round trip, byte for byte


def test_a_schema_1_bundle_still_verifies_and_loads_as_one_artifact(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    bundle = _image_bundle(tmp_path)
    _as_schema_1(bundle)
    sign_bundle(bundle, private)
    manifest = verify_bundle(bundle, public)
    assert manifest.schema_version == 2  # read as schema 2
    assert len(manifest.artifacts) == 1 and manifest.artifacts[0].gated is None
    assert (manifest.backend, manifest.precision, manifest.artifact) == ("onnxruntime", "int8", "artifacts/model.onnx")
    with load_bundle(bundle, public) as loaded:
        assert loaded.artifact_path == bundle / "artifacts/model.onnx"
        assert loaded.golden()[0].shape == (2, 3, 4, 4)
        assert loaded.digest == manifest_digest((bundle / MANIFEST).read_bytes())  # the signed v1 bytes


def test_a_schema_1_bundle_passes_device_admission(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    bundle = _image_bundle(tmp_path)
    _as_schema_1(bundle)
    sign_bundle(bundle, private)
    store = Store(tmp_path / "device")
    store.add_trusted_key("publisher", public.read_bytes())
    candidate = Candidate((bundle / MANIFEST).read_bytes(), (bundle / "manifest.sig").read_bytes())
    assert verify_candidate(store, candidate).backend == "onnxruntime"


def test_an_unknown_schema_is_refused_with_the_reason(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    bundle = _image_bundle(tmp_path)
    data = json.loads((bundle / MANIFEST).read_text())
    data["schema_version"] = 4
    data["something_new"] = {"x": 1}
    (bundle / MANIFEST).write_text(json.dumps(data))
    sign_bundle(bundle, private)
    expected = "manifest schema 4 is newer than this edgeds (knows 1, 2, 3): upgrade edgeds"
    with pytest.raises(BundleVerificationError) as info:
        verify_bundle(bundle, public)
    assert info.value.reason == "unsupported_schema" and str(info.value) == f"unsupported_schema: {expected}"
    store = Store(tmp_path / "device")
    store.add_trusted_key("publisher", public.read_bytes())
    candidate = Candidate((bundle / MANIFEST).read_bytes(), (bundle / "manifest.sig").read_bytes())
    with pytest.raises(ReleaseRejected) as rejected:
        verify_candidate(store, candidate)
    assert rejected.value.reason == "unsupported_schema" and expected in str(rejected.value)


def test_the_digest_is_stable_and_changes_with_any_file(tmp_path: Path) -> None:
    first = _image_bundle(tmp_path, "a")
    same = _image_bundle(tmp_path, "b")
    other = _image_bundle(tmp_path, "c", model_bytes=b"model bytes" * 20 + b"!")
    with load_bundle(first) as a, load_bundle(same) as b, load_bundle(other) as c:
        assert a.digest.startswith("sha256:") and len(a.digest) == 71
        assert a.digest == b.digest  # same content, same created_at: same reference
        assert a.digest != c.digest  # one byte of one file differs
        assert a.digest == manifest_digest((first / MANIFEST).read_bytes())


def _lm_bundle(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    model = src / "ov"
    model.mkdir(parents=True)
    (model / "openvino_model.xml").write_text("<net/>")
    (model / "openvino_model.bin").write_bytes(b"\0" * 64)
    (src / "tiny-lm.yaml").write_text(LM_CARD)
    prompts = [{"prompt_ids": [1, 2, 3], "output_ids": [4, 5]}]
    manifest = {
        "task": "causal-lm",
        "model": {"name": "tiny-lm", "version": "1.0.0"},
        "version": 1,
        "artifacts": [
            {"runtime": "openvino-genai", "precision": "int4", "path": "openvino-genai-int4", "weights": {"group": 64}}
        ],
        "io": {
            "inputs": [{"name": "text_input", "dtype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "text_output", "dtype": "BYTES", "shape": [-1]}],
        },
        "requirements": {**REQUIREMENTS, "arch": platform.machine(), "backends": ["openvino-genai"]},
        "llm": {
            "architecture": "qwen2",
            "context_length": 128,
            "kv_plan": {"max_num_seqs": 2},
            "chat_template": "tokenizer/chat_template.jinja",
            "tokenizer": "tokenizer",
            "max_num_seqs": 2,
            "max_queue": 4,
            "golden": {"count": 1, "max_new_tokens": 2, "min_token_agreement": 0.85},
        },
    }
    return build_bundle(
        tmp_path / "lm-bundle",
        manifest=manifest,
        artifacts={"openvino-genai-int4": model},
        card_file=src / "tiny-lm.yaml",
        files={
            "golden/prompts.json": json.dumps(prompts).encode(),
            "tokenizer/chat_template.jinja": b"{{ messages }}",
        },
    )


def test_a_causal_lm_bundle_carries_a_directory_artifact(tmp_path: Path) -> None:
    bundle = _lm_bundle(tmp_path)
    with load_bundle(bundle) as loaded:
        assert loaded.task == "causal-lm" and loaded.lm_card.architecture == "qwen2"
        assert loaded.manifest.artifact == "artifacts/openvino-genai-int4"
        assert (loaded.artifact_path / "openvino_model.xml").is_file()
        assert loaded.manifest.llm is not None and loaded.manifest.llm.golden.prompts == "golden/prompts.json"
        with pytest.raises(BundleError, match="no image model card"):
            _ = loaded.card
        with pytest.raises(BundleError, match="no tensor golden"):
            loaded.golden()
    (bundle / "artifacts/openvino-genai-int4/openvino_model.bin").write_bytes(b"\1" * 64)
    with pytest.raises(BundleVerificationError) as info:
        verify_bundle(bundle, None)
    assert info.value.reason == "checksum_mismatch"


def test_each_task_needs_its_parts() -> None:
    data = _image_manifest()
    del data["golden"]
    with pytest.raises(ValueError, match="image-classification bundle needs golden"):
        Manifest.model_validate(data)
    data = _image_manifest()
    data["task"] = "causal-lm"
    with pytest.raises(ValueError, match="causal-lm bundle needs llm"):
        Manifest.model_validate(data)
    data = _image_manifest()
    data["artifacts"] = []
    with pytest.raises(ValueError, match="at least 1"):
        Manifest.model_validate(data)
