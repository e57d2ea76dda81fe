"""Pinned host keys: added once, never replaced silently (no network)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from edgeds.deploy.ssh import HostKey, pin_host_key, pinned_keys
from edgeds.errors import HostKeyError


def _key(host_id: str, seed: int) -> HostKey:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([seed]) * 32
    return HostKey(host_id, "ssh-ed25519", base64.b64encode(blob).decode())


def test_pin_once_then_refuse_a_changed_key(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts" / "fleet"
    first = _key("[127.0.10.1]:2201", 1)
    assert pin_host_key(known, first) is True
    assert pin_host_key(known, first) is False
    assert [k.base64 for k in pinned_keys(known, first.host_id)] == [first.base64]
    with pytest.raises(HostKeyError, match="CHANGED"):
        pin_host_key(known, _key(first.host_id, 2))
    assert known.read_text().count("\n") == 1
    assert first.fingerprint.startswith("SHA256:") and "=" not in first.fingerprint
    assert pin_host_key(known, _key("[127.0.10.2]:2202", 2)) is True
