"""Bundles: build, sign, verify, load; each way of tampering fails with its own reason."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgeds.bundle import (
    build_bundle,
    extract_bundle,
    generate_keypair,
    load_bundle,
    load_public_key,
    pack_bundle,
    sign_bundle,
    verify_bundle,
)
from edgeds.errors import BundleError, BundleVerificationError
from edgeds.manifest import Manifest

CARD = """schema: 1
name: demo
version: 1.2.3
task: image-classification
model: model.onnx
input: {name: input, height: 4, width: 4}
output: {name: logits}
labels: [a, b]
"""


def _manifest() -> dict[str, object]:
    return {
        "model": {"name": "demo", "version": "1.2.3"},
        "version": 7,
        "backend": "onnxruntime",
        "precision": "fp32",
        "artifact": "model.onnx",
        "io": {
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3, 4, 4]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 2]}],
        },
        "labels": ["a", "b"],
        "requirements": {"arch": "x86_64", "backends": ["onnxruntime"], "min_memory_mb": 64, "min_disk_mb": 1},
        "golden": {"atol": 1e-3, "rtol": 1e-3, "min_cosine": 0.999},
    }


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keypair(tmp_path / "keys")


@pytest.fixture
def bundle(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"not really onnx, but bytes to hash" * 10)
    (src / "demo.yaml").write_text(CARD)
    return build_bundle(
        tmp_path / "bundle",
        manifest=_manifest(),
        artifacts={"model.onnx": src / "model.onnx"},
        card_file=src / "demo.yaml",
        golden_inputs=np.ones((2, 3, 4, 4), np.float32),
        golden_outputs={"logits": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)},
        private_key=keys[0],
    )


def _reason(path: Path, key: Path | None) -> str:
    with pytest.raises(BundleVerificationError) as info:
        verify_bundle(path, key)
    return info.value.reason


def test_build_verify_load_roundtrip(bundle: Path, keys: tuple[Path, Path]) -> None:
    manifest = verify_bundle(bundle, keys[1])
    assert manifest.version == 7
    assert {f.path for f in manifest.files} == {
        "artifacts/model.onnx",
        "model-card.yaml",
        "golden/inputs.npy",
        "golden/outputs.npz",
    }
    with load_bundle(bundle, keys[1]) as loaded:
        assert loaded.artifact_path == bundle / "artifacts/model.onnx"
        assert loaded.card.name == "demo"
        inputs, outputs = loaded.golden()
        assert inputs.shape == (2, 3, 4, 4)
        np.testing.assert_array_equal(outputs["logits"], [[1.0, 2.0], [3.0, 4.0]])
    assert (keys[0].stat().st_mode & 0o777) == 0o600


def test_manifest_is_frozen_and_strict(bundle: Path) -> None:
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    with pytest.raises(ValidationError):
        manifest.version = 8  # type: ignore[misc]
    data = json.loads((bundle / "manifest.json").read_text())
    data["surprise"] = 1
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)


def test_changed_byte(bundle: Path, keys: tuple[Path, Path]) -> None:
    target = bundle / "artifacts/model.onnx"
    raw = bytearray(target.read_bytes())
    raw[5] ^= 0x01
    target.write_bytes(bytes(raw))
    assert _reason(bundle, keys[1]) == "checksum_mismatch"


def test_unlisted_file(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle / "artifacts" / "extra.bin").write_bytes(b"x")
    assert _reason(bundle, keys[1]) == "unlisted_file"


def test_missing_file(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle / "golden" / "outputs.npz").unlink()
    assert _reason(bundle, keys[1]) == "missing_file"


def test_wrong_key(bundle: Path, tmp_path: Path) -> None:
    _, other_public = generate_keypair(tmp_path / "other")
    assert _reason(bundle, other_public) == "bad_signature"


def test_edited_manifest_breaks_signature(bundle: Path, keys: tuple[Path, Path]) -> None:
    text = (bundle / "manifest.json").read_text().replace('"version": 7', '"version": 9')
    (bundle / "manifest.json").write_text(text)
    assert _reason(bundle, keys[1]) == "bad_signature"
    # without a key, integrity still holds: the files did not change
    assert verify_bundle(bundle, None).version == 9


def test_unsigned(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle / "manifest.sig").unlink()
    assert _reason(bundle, keys[1]) == "unsigned"
    sign_bundle(bundle, keys[0])
    assert verify_bundle(bundle, keys[1]).version == 7


def test_malformed_manifest(bundle: Path) -> None:
    (bundle / "manifest.json").write_text('{"schema_version": 1}')
    assert _reason(bundle, None) == "malformed_manifest"


def test_raw_signature_accepted(bundle: Path, keys: tuple[Path, Path]) -> None:
    sig = bytes.fromhex((bundle / "manifest.sig").read_text().strip())
    (bundle / "manifest.sig").write_bytes(sig)
    assert verify_bundle(bundle, keys[1]).version == 7
    raw_public = load_public_key(keys[1]).public_bytes_raw()
    assert verify_bundle(bundle, raw_public).version == 7


def test_tar_roundtrip(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    tar = pack_bundle(bundle, tmp_path / "b.tar")
    assert verify_bundle(tar, keys[1]).model.name == "demo"
    with load_bundle(tar, keys[1]) as loaded:
        root = loaded.root
        assert loaded.artifact_path.is_file()
    assert not root.exists(), "the temporary extraction is removed on close"
    assert pack_bundle(bundle, tmp_path / "c.tar").read_bytes() == tar.read_bytes(), "packing is reproducible"


def _tar_with(tmp_path: Path, bundle: Path, member: tarfile.TarInfo, payload: bytes = b"") -> Path:
    out = tmp_path / "evil.tar"
    shutil.copyfile(pack_bundle(bundle, tmp_path / "good.tar"), out)
    with tarfile.open(out, "a") as tar:
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return out


@pytest.mark.parametrize(
    "name, kind, link",
    [
        ("../escape.txt", tarfile.REGTYPE, ""),
        ("/tmp/absolute.txt", tarfile.REGTYPE, ""),
        ("artifacts/link", tarfile.SYMTYPE, "../../../etc/passwd"),
        ("artifacts/abslink", tarfile.SYMTYPE, "/etc/passwd"),
        ("artifacts/hard", tarfile.LNKTYPE, "../outside"),
    ],
)
def test_tar_escape_rejected(
    bundle: Path, keys: tuple[Path, Path], tmp_path: Path, name: str, kind: bytes, link: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    member.size = 3 if kind == tarfile.REGTYPE else 0
    evil = _tar_with(tmp_path, bundle, member, b"bad")
    dest = tmp_path / "x"
    with pytest.raises(BundleVerificationError) as info:
        extract_bundle(evil, dest)
    assert info.value.reason == "unsafe_archive"
    assert not (tmp_path / "escape.txt").exists()
    assert not any(dest.rglob("*")), "nothing is written before every member is checked"
    assert _reason(evil, keys[1]) == "unsafe_archive"


def test_symlink_in_directory_bundle_rejected(bundle: Path) -> None:
    (bundle / "artifacts" / "sneaky").symlink_to("/etc/hostname")
    assert _reason(bundle, None) == "unsafe_archive"


def test_generate_keypair_never_overwrites(tmp_path: Path) -> None:
    generate_keypair(tmp_path)
    with pytest.raises(BundleError):
        generate_keypair(tmp_path)
