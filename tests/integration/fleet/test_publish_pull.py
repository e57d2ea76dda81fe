"""Publish a signed bundle to a real OCI registry and pull it back by digest, verified: the right
key, a wrong key, a corrupted blob, a resumed fetch (HTTP Range answered with 206) and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from edgeds.errors import BundleVerificationError, FleetError
from edgeds.fleet.oci import (
    MEDIA_BUNDLE,
    MEDIA_CONFIG,
    MEDIA_MANIFEST,
    MEDIA_SIGNATURE,
    OCI_MANIFEST,
    publish_bundle,
    pull_bundle,
)
from edgeds.manifest import MANIFEST, manifest_digest
from edgeds.sim.registry import DockerRegistry

from .conftest import Keys

pytestmark = pytest.mark.integration
pytest.importorskip("oras", reason="the fleet extra is not installed: pip install 'edgeds[fleet]'")


def _oci_manifest(registry: DockerRegistry, repository: str, reference: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{registry.url}/v2/{repository}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        parsed: dict[str, object] = json.loads(response.read())
    return parsed


def _layers(manifest: dict[str, object]) -> dict[str, dict[str, object]]:
    layers = manifest["layers"]
    assert isinstance(layers, list)
    return {str(layer["mediaType"]): layer for layer in layers}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_publish_then_pull_by_digest_verifies(
    registry: DockerRegistry, signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    published = publish_bundle(signed_bundle, registry.url, public_key=keys.public)
    bundle_digest = manifest_digest((signed_bundle / MANIFEST).read_bytes())
    assert published.bundle_digest == bundle_digest
    assert published.reference.digest is not None
    assert str(published.reference) == f"127.0.0.1:{registry.port}/tiny@{published.reference.digest}"
    assert str(published.tagged) == f"127.0.0.1:{registry.port}/tiny:v3"

    oci = _oci_manifest(registry, "tiny", published.reference.digest)
    assert oci["mediaType"] == OCI_MANIFEST
    config = oci["config"]
    assert isinstance(config, dict) and config["mediaType"] == MEDIA_CONFIG
    assert sorted(_layers(oci)) == sorted([MEDIA_BUNDLE, MEDIA_MANIFEST, MEDIA_SIGNATURE])
    assert oci["annotations"] == {
        "io.edgeds.model.name": "tiny",
        "io.edgeds.model.version": "1.0.3",
        "io.edgeds.bundle.version": "3",
        "io.edgeds.bundle.digest": bundle_digest,
        "io.edgeds.bundle.schema": "2",
        "io.edgeds.profile": "x86-cpu",
        "io.edgeds.task": "image-classification",
    }

    dest = tmp_path / "pulled" / "bundle"
    pulled = pull_bundle(str(published.reference), dest, keys.public)
    assert pulled.path == dest
    assert manifest_digest((dest / MANIFEST).read_bytes()) == bundle_digest
    assert pulled.manifest.version == 3 and pulled.resumed == 0 and pulled.fetched > 256 * 1024
    assert _leftovers(dest.parent) == []  # no staging directory stays

    by_tag = pull_bundle(str(published.tagged), tmp_path / "pulled" / "by-tag", keys.public)
    assert by_tag.reference == published.reference  # a tag is resolved to the same digest
    with pytest.raises(FleetError, match="exists already"):
        pull_bundle(str(published.reference), dest, keys.public)


def test_a_bundle_signed_by_another_key_is_refused(
    registry: DockerRegistry, signed_bundle: Path, other_keys: Keys, tmp_path: Path
) -> None:
    published = publish_bundle(signed_bundle, registry.url)
    dest = tmp_path / "pulled"
    with pytest.raises(BundleVerificationError, match="bad_signature") as info:
        pull_bundle(str(published.reference), dest, other_keys.public)
    assert "\n" not in str(info.value)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_a_corrupted_blob_is_refused_and_nothing_is_left(
    registry: DockerRegistry, signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    published = publish_bundle(signed_bundle, registry.url)
    assert published.reference.digest is not None
    tar_layer = _layers(_oci_manifest(registry, "tiny", published.reference.digest))[MEDIA_BUNDLE]
    blob = registry.blob_path(str(tar_layer["digest"]))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped: only the sha256 tells
    blob.write_bytes(bytes(data))

    dest = tmp_path / "pulled"
    with pytest.raises(BundleVerificationError, match="digest_mismatch"):
        pull_bundle(str(published.reference), dest, keys.public)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_a_cut_fetch_resumes_with_a_range_request(
    registry: DockerRegistry, signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    published = publish_bundle(signed_bundle, registry.url)
    assert published.reference.digest is not None
    tar_layer = _layers(_oci_manifest(registry, "tiny", published.reference.digest))[MEDIA_BUNDLE]
    digest, size = str(tar_layer["digest"]), int(str(tar_layer["size"]))

    url = f"{registry.url}/v2/tiny/blobs/{digest}"
    request = urllib.request.Request(url, headers={"Range": f"bytes={size // 2}-"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {size // 2}-{size - 1}/{size}"
        tail = response.read()
    assert len(tail) == size - size // 2

    # what an interrupted pull leaves: the first half of the tar in the staging directory
    dest = tmp_path / "pulled"
    staging = tmp_path / f".pulled.pull-{published.reference.digest[7:19]}" / "blobs"
    staging.mkdir(parents=True)
    with urllib.request.urlopen(url, timeout=10) as response:
        (staging / digest[7:]).write_bytes(response.read()[: size // 2])

    pulled = pull_bundle(str(published.reference), dest, keys.public)
    assert pulled.resumed == size // 2
    assert (dest / MANIFEST).is_file() and _leftovers(tmp_path) == []


def test_wrong_bytes_left_by_a_cut_fetch_are_refused_then_a_fresh_pull_works(
    registry: DockerRegistry, signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    published = publish_bundle(signed_bundle, registry.url)
    assert published.reference.digest is not None
    tar_layer = _layers(_oci_manifest(registry, "tiny", published.reference.digest))[MEDIA_BUNDLE]
    staging = tmp_path / f".pulled.pull-{published.reference.digest[7:19]}" / "blobs"
    staging.mkdir(parents=True)
    (staging / str(tar_layer["digest"])[7:]).write_bytes(b"\0" * 1000)  # not the blob's first bytes

    with pytest.raises(BundleVerificationError, match="digest_mismatch"):
        pull_bundle(str(published.reference), tmp_path / "pulled", keys.public)
    assert _leftovers(tmp_path) == []
    assert pull_bundle(str(published.reference), tmp_path / "pulled", keys.public).resumed == 0


def test_publish_refuses_unsigned_bundles_and_plain_http_off_loopback(registry: DockerRegistry, tmp_path: Path) -> None:
    from edgeds.sim.bundles import make_bundle

    unsigned = make_bundle(tmp_path / "unsigned", 1, None)
    with pytest.raises(BundleVerificationError, match="unsigned"):
        publish_bundle(unsigned, registry.url)
    with pytest.raises(FleetError, match="plain HTTP is allowed only to a loopback address"):
        publish_bundle(unsigned, "http://registry.example.com:5000")


def test_an_unreachable_registry_fails_fast(signed_bundle: Path) -> None:
    from edgeds.sim.broker import free_port

    with pytest.raises(FleetError, match="cannot be reached"):
        publish_bundle(signed_bundle, f"http://127.0.0.1:{free_port()}")


def test_cli_publish_prints_the_reference_by_digest(
    registry: DockerRegistry, signed_bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    command = [sys.executable, "-m", "edgeds", "publish", str(signed_bundle), "--registry", registry.url]
    proc = subprocess.run(
        [*command, "--repository", "plant/tiny", "--tag", "candidate", "--key", str(keys.public), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["reference"] == f"127.0.0.1:{registry.port}/plant/tiny@{out['digest']}"
    assert out["tagged"] == f"127.0.0.1:{registry.port}/plant/tiny:candidate"
    pulled = pull_bundle(out["reference"], tmp_path / "pulled", keys.public)
    assert pulled.manifest.model.name == "tiny"

    plain = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert plain.returncode == 0, plain.stderr
    # the default repository is the model name; the same bytes give the same manifest digest
    assert plain.stdout.splitlines()[0] == f"127.0.0.1:{registry.port}/tiny@{out['digest']}"

    refused = subprocess.run(
        [*command[:-1], "http://10.0.0.1:5000"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode == 2
    assert "plain HTTP is allowed only to a loopback address" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
