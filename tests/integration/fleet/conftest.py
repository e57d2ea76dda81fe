"""Fixtures of the fleet tests: a real OCI registry (Debian's docker-registry) on loopback, signing
keys, and small signed bundles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeds.bundle import generate_keypair
from edgeds.sim.registry import DockerRegistry, registry_binary


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(*generate_keypair(tmp_path_factory.mktemp("fleet-keys")))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """A second key pair: a device that trusts only it refuses bundles signed with ``keys``."""
    return Keys(*generate_keypair(tmp_path_factory.mktemp("fleet-other-keys")))


@pytest.fixture(scope="session")
def signed_bundle(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeds.sim.bundles import make_bundle

    return make_bundle(tmp_path_factory.mktemp("fleet-bundle") / "bundle", 3, keys.private, padding_bytes=256 * 1024)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    """A real docker-registry (CNCF distribution) on 127.0.0.1, its storage under ``tmp_path``
    (skips when it is not installed)."""
    if registry_binary() is None:
        pytest.skip("docker-registry is not installed (make system-deps)")
    with DockerRegistry(directory=tmp_path / "registry") as running:
        yield running
