"""Admission: whether an offered bundle may be installed on this device, and what must be uploaded for it.

Every check that needs no upload runs here, before any byte is sent: the signature under a
trusted key, the manifest schema and its paths, expiry, the device's arch / backends / memory,
the bundle size limit, the monotonic version (unless a downgrade is allowed) and free disk.
A refusal raises :class:`edgeds.errors.ReleaseRejected`; ``plan`` reports it as REJECTED (or
FAILED_NO_STATE_CHANGE for lack of disk, which is the device's state, not the bundle's fault).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from typing import Any

from ...errors import ReleaseRejected
from ...paths import is_safe_relative
from .probe import BACKEND_MODULES, MIB, machine, memory_mb
from .protocol import FAILED_NO_STATE_CHANGE, REJECTED, Emit, quiet
from .store import DeviceState, Store, recover, release_id_for


@dataclass
class Candidate:
    """A manifest offered to the device, with its signature (bytes as received)."""

    manifest_bytes: bytes
    signature: bytes | None

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> Candidate:
        manifest = request.get("manifest")
        if not isinstance(manifest, str):
            raise ReleaseRejected("malformed_manifest", "request carries no manifest")
        sig = request.get("signature")
        return cls(manifest.encode(), sig.encode() if isinstance(sig, str) else None)


def _signature_bytes(raw: bytes) -> bytes:
    if len(raw) == 64:
        return raw
    try:
        sig = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReleaseRejected("bad_signature", "manifest.sig is neither 64 raw bytes nor hex") from exc
    if len(sig) != 64:
        raise ReleaseRejected("bad_signature", f"manifest.sig holds {len(sig)} bytes, expected 64")
    return sig


def verify_candidate(store: Store, candidate: Candidate) -> Any:
    """Signature, schema, paths, compatibility: raise :class:`ReleaseRejected` or return the Manifest."""
    from cryptography.exceptions import InvalidSignature

    from ...errors import BundleVerificationError
    from ...manifest import parse_manifest

    keys = store.trusted_keys()
    if not keys:
        raise ReleaseRejected("no_trusted_key", f"no publisher key in {store.trust}; run `edgeds device setup`")
    if not candidate.signature:
        raise ReleaseRejected("unsigned", "the bundle has no manifest.sig")
    sig = _signature_bytes(candidate.signature)
    for key in keys:
        try:
            key.verify(sig, candidate.manifest_bytes)
            break
        except InvalidSignature:
            continue
    else:
        raise ReleaseRejected("bad_signature", "manifest.sig does not verify under any trusted key")
    try:
        manifest = parse_manifest(candidate.manifest_bytes)
    except BundleVerificationError as exc:
        # malformed_manifest, or unsupported_schema for a manifest newer than this edgeds
        raise ReleaseRejected(exc.reason, str(exc).removeprefix(f"{exc.reason}: ")) from exc
    for entry in manifest.files:
        if not is_safe_relative(entry.path) or entry.path in ("manifest.json", "manifest.sig"):
            raise ReleaseRejected("unsafe_archive", f"manifest lists an unsafe path {entry.path!r}")
    unlisted = manifest.unlisted_artifacts(f.path for f in manifest.files)
    if unlisted:
        raise ReleaseRejected("missing_file", f"artifact {unlisted[0]!r} is not listed")
    if manifest.expires_at is not None and _expired(manifest.expires_at):
        raise ReleaseRejected("expired", f"the bundle expired at {manifest.expires_at}")
    req = manifest.requirements
    if req.arch not in ("any", machine()):
        raise ReleaseRejected("incompatible_device", f"bundle is for {req.arch}, this device is {machine()}")
    # the artifacts are in the order the device tries them: one whose runtime is here will do
    runtimes = list(dict.fromkeys(a.runtime for a in manifest.artifacts))
    usable = [r for r in runtimes if importlib.util.find_spec(BACKEND_MODULES.get(r, r)) is not None]
    if not usable:
        shown = ", ".join(f"{r!r} ({BACKEND_MODULES.get(r, r)})" for r in runtimes)
        raise ReleaseRejected("incompatible_device", f"no runtime of the bundle is importable here: {shown}")
    memory = memory_mb()
    if memory is not None and req.min_memory_mb > memory:
        raise ReleaseRejected("incompatible_device", f"needs {req.min_memory_mb} MiB memory, device has {memory}")
    total = sum(f.size for f in manifest.files)
    if req.max_bundle_bytes is not None and total > req.max_bundle_bytes:
        raise ReleaseRejected("oversized", f"bundle holds {total} bytes, limit {req.max_bundle_bytes}")
    return manifest


def _expired(expires_at: str) -> bool:
    """Whether the ISO 8601 ``expires_at`` lies in the past (naive times are UTC)."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReleaseRejected("malformed_manifest", f"expires_at is not an ISO 8601 time: {expires_at!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when <= dt.datetime.now(dt.timezone.utc)


def _check_version(store: Store, manifest: Any, release_id: str, allow_downgrade: bool) -> None:
    state = store.load_state()
    if state.committed is None or state.committed == release_id:
        return
    current = store.release_manifest(state.committed)
    if current is None or current.get("model", {}).get("name") != manifest.model.name:
        return
    if manifest.version <= int(current.get("version", -1)) and not allow_downgrade:
        raise ReleaseRejected(
            "downgrade",
            f"version {manifest.version} is not newer than the committed {current.get('version')} ({state.committed})",
        )


def missing_objects(store: Store, manifest: Any) -> list[dict[str, Any]]:
    """Files of the manifest the device does not hold yet (by sha256), each once."""
    seen: set[str] = set()
    missing = []
    for entry in manifest.files:
        if entry.sha256 in seen or (store.objects / entry.sha256).is_file():
            continue
        seen.add(entry.sha256)
        missing.append({"sha256": entry.sha256, "size": entry.size, "path": entry.path})
    return missing


def disk_precheck(store: Store, manifest: Any, missing: list[dict[str, Any]]) -> dict[str, int]:
    """Room for the ``missing`` uploads plus the bundle's ``min_disk_mb``, or ``insufficient_disk``."""
    store.ensure()
    usage = shutil.disk_usage(store.root)
    need = sum(m["size"] for m in missing) + manifest.requirements.min_disk_mb * MIB
    if usage.free < need:
        raise ReleaseRejected(
            "insufficient_disk",
            f"needs {need // MIB} MiB free (upload {sum(m['size'] for m in missing) // MIB} MiB + "
            f"min_disk_mb {manifest.requirements.min_disk_mb}), device has {usage.free // MIB} MiB",
        )
    return {"free_bytes": usage.free, "need_bytes": need}


def admit(store: Store, request: dict[str, Any]) -> tuple[Candidate, Any, str, DeviceState, bool]:
    """What plan and apply both check first: the candidate verifies, its release id, the device state,
    and whether it already is the committed, current release (else its version must be acceptable).
    Raises :class:`ReleaseRejected`."""
    candidate = Candidate.from_request(request)
    manifest = verify_candidate(store, candidate)
    release_id = release_id_for(candidate.manifest_bytes, manifest.model.name, manifest.version)
    state = store.load_state()
    installed = state.committed == release_id and store.current_id() == release_id
    if not installed:
        _check_version(store, manifest, release_id, bool(request.get("allow_downgrade")))
    return candidate, manifest, release_id, state, installed


def plan(store: Store, request: dict[str, Any], emit: Emit = quiet) -> dict[str, Any]:
    """Every check that needs no upload: says REJECTED, already installed, or what to upload."""
    store.ensure()
    recover(store)
    try:
        _, manifest, release_id, _, installed = admit(store, request)
        if installed:
            return {"status": "already_installed", "release": release_id}
        missing = missing_objects(store, manifest)
        disk = disk_precheck(store, manifest, missing)
    except ReleaseRejected as exc:
        emit("rejected", {"reason": exc.reason, "message": exc.message})
        # Lack of disk is the device's state, not the bundle's fault: failed at precheck, nothing changed.
        final = FAILED_NO_STATE_CHANGE if exc.reason == "insufficient_disk" else REJECTED
        return {"status": final, "reason": exc.reason, "message": exc.message}
    return {
        "status": "ready",
        "release": release_id,
        "committed": store.load_state().committed,
        "missing": missing,
        "upload_bytes": sum(m["size"] for m in missing),
        "incoming": str(store.incoming),
        "disk": disk,
    }
