"""The deploy steps on the device: ingest, stage, apply (activate, then commit or roll back), rollback,
prune, status, trust.

Guarantees: nothing reaches ``current`` before the signature, every sha256, the listing,
the device compatibility, the monotonic version and the disk precheck passed (:mod:`.admission`,
then :func:`ingest` and :func:`stage`). Every step is idempotent: re-running ``apply`` after an
interruption resumes (objects already ingested and releases already staged are reused). An
activation is recorded as pending in ``state.json`` before ``current`` flips; if the reload or
the health check fails, :func:`apply` flips back and reports FAILED_ROLLBACK_COMPLETE (or
FAILED_UNABLE_TO_ROLLBACK), and one that was never committed (a crash, a power cut) is rolled
back by :func:`.store.recover`, so a device always converges to its last committed release.
State-changing steps hold the store's lock. Each takes the store, its request and an
:data:`.protocol.Emit` for progress, and returns its result (see :mod:`.protocol`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ...errors import ReleaseRejected, StepFailed
from ...hashing import sha256_file
from .admission import Candidate, admit, disk_precheck
from .build import build_engine
from .health import agent_ready, health_check, reload_agent
from .protocol import (
    FAILED_NO_STATE_CHANGE,
    FAILED_ROLLBACK_COMPLETE,
    FAILED_UNABLE_TO_ROLLBACK,
    REJECTED,
    SUCCEEDED,
    Emit,
    quiet,
)
from .store import Store, agent_pid, fsync_dir, now, recover

log = logging.getLogger(__name__)


def ingest(store: Store, manifest: Any, emit: Emit = quiet) -> int:
    """Move verified uploads from incoming/ into objects/; return how many were ingested."""
    count = 0
    for entry in manifest.files:
        obj = store.objects / entry.sha256
        if obj.is_file():
            continue
        upload = store.incoming / entry.sha256
        if not upload.is_file():
            raise StepFailed(f"{entry.path} ({entry.sha256[:12]}) was not uploaded")
        size = upload.stat().st_size
        actual = sha256_file(upload) if size == entry.size else None
        if actual != entry.sha256:
            for other in manifest.files:  # the whole upload is rejected: keep none of it
                with contextlib.suppress(FileNotFoundError):
                    (store.incoming / other.sha256).unlink()
            got = f"sha256 {actual[:16]}..." if actual else f"size {size}"
            raise ReleaseRejected(
                "checksum_mismatch",
                f"{entry.path}: uploaded {got}, manifest says sha256 {entry.sha256[:16]}... size {entry.size}",
            )
        upload.chmod(0o444)
        os.replace(upload, obj)
        count += 1
    if count:
        fsync_dir(store.objects)
    emit("ingested", {"objects": count})
    return count


def stage(store: Store, candidate: Candidate, manifest: Any, release_id: str, emit: Emit = quiet) -> Path:
    """Build ``releases/<id>`` from objects and verify every file in it; reuse a finished one."""
    final = store.releases / release_id
    if (final / "manifest.json").is_file() and (final / ".verified").is_file():
        emit("staged", {"release": release_id, "reused": True})
        return final
    staging = store.releases / f".{release_id}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for entry in manifest.files:
        dest = staging / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(store.objects / entry.sha256, dest)
        except OSError:
            shutil.copyfile(store.objects / entry.sha256, dest)
    (staging / "manifest.json").write_bytes(candidate.manifest_bytes)
    (staging / "manifest.sig").write_bytes(candidate.signature or b"")
    verify_release_dir(staging, manifest)
    (staging / ".verified").write_text(f"{now()}\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    fsync_dir(store.releases)
    emit("staged", {"release": release_id, "reused": False})
    return final


def verify_release_dir(root: Path, manifest: Any) -> None:
    """Every listed file present with its sha256; nothing unlisted; no links."""
    listed = {e.path for e in manifest.files} | {"manifest.json", "manifest.sig", ".verified"}
    for entry in manifest.files:
        path = root / entry.path
        if path.is_symlink() or not path.is_file():
            raise ReleaseRejected("missing_file", f"{entry.path} missing in the staged release")
        if sha256_file(path) != entry.sha256:
            raise ReleaseRejected("checksum_mismatch", f"{entry.path}: staged file does not match its sha256")
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in listed:
                raise ReleaseRejected("unlisted_file", f"{rel} is in the release but not in the manifest")


def _rollback_to(store: Store, target: str | None, options: dict[str, Any], emit: Emit) -> str:
    """Flip back to ``target`` and make the agent serve it; the final status to report."""
    try:
        store.flip(target)
        emit("flipped_back", {"release": target})
        if target is not None and agent_pid(store) is not None:
            reload_agent(store, target, float(options.get("reload_timeout_s", 120)), emit)
    except (StepFailed, OSError) as exc:
        emit("rollback_failed", {"error": str(exc)})
        return FAILED_UNABLE_TO_ROLLBACK
    return FAILED_ROLLBACK_COMPLETE


def apply(store: Store, request: dict[str, Any], emit: Emit = quiet) -> dict[str, Any]:
    """Install (ingest + stage + verify), activate, reload, health-check, then commit or roll back."""
    store.ensure()
    recover(store)
    options = dict(request.get("options") or {})
    with store.locked():
        try:
            candidate, manifest, release_id, state, installed = admit(store, request)
            if installed:
                return {"status": SUCCEEDED, "release": release_id, "already_installed": True}
            disk_precheck(store, manifest, [])
            ingest(store, manifest, emit)
            stage(store, candidate, manifest, release_id, emit)
            if any(a.runtime == "tensorrt" for a in manifest.artifacts):
                build_engine(store, release_id, emit)
        except ReleaseRejected as exc:
            emit("rejected", {"reason": exc.reason, "message": exc.message})
            return {"status": REJECTED, "reason": exc.reason, "message": exc.message}
        except (StepFailed, OSError) as exc:
            return {"status": FAILED_NO_STATE_CHANGE, "message": str(exc)}

        previous = state.committed
        state.pending = {"id": release_id, "from": previous, "ts": now()}
        store.save_state(state)
        details: dict[str, Any] = {"release": release_id, "previous": previous}
        try:
            store.flip(release_id)
            emit("flipped", {"release": release_id})
            if options.get("crash_after_flip"):  # test hook: die like a power cut after the flip
                os._exit(9)
            details["reload"] = reload_agent(store, release_id, float(options.get("reload_timeout_s", 120)), emit)
            if not options.get("skip_health"):
                details["health"] = health_check(store, release_id, options.get("health") or {}, emit)
                emit("healthy", details["health"])
        except Exception as exc:  # whatever fails once current has flipped, the device goes back to previous
            if not isinstance(exc, (StepFailed, OSError)):  # not a failure the steps raise: keep its traceback
                log.exception("activating %s failed", release_id)
            emit("activation_failed", {"error": str(exc)})
            status = _rollback_to(store, previous, options, emit)
            state = store.load_state()
            state.pending = None
            state.failed.append(release_id)
            state.history.append({"event": "rolled_back", "from": release_id, "to": previous, "ts": now()})
            store.save_state(state)
            return {"status": status, "message": str(exc), **details}
        agent = store.agent_status()
        if agent.get("release") == release_id and agent.get("opened"):
            details["opened"] = agent["opened"]  # what the device runs: artifact, device, fallback and why
        elif isinstance(details.get("health"), dict) and details["health"].get("opened"):
            details["opened"] = details["health"]["opened"]
        state = store.load_state()
        state.previous, state.committed, state.pending = previous, release_id, None
        committed: dict[str, Any] = {"event": "committed", "id": release_id, "version": manifest.version, "ts": now()}
        if details.get("opened"):
            committed["opened"] = details["opened"]
        state.history.append(committed)
        store.save_state(state)
        emit("committed", {"release": release_id})
        return {"status": SUCCEEDED, **details}


def rollback(store: Store, request: dict[str, Any], emit: Emit = quiet) -> dict[str, Any]:
    """Make ``to`` (default: the previous committed release) current and committed."""
    store.ensure()
    recover(store)
    options = dict(request.get("options") or {})
    with store.locked():
        state = store.load_state()
        target = request.get("to") or state.previous
        if target is None:
            return {"status": FAILED_NO_STATE_CHANGE, "message": "no previous release to roll back to"}
        if not (store.releases / target / ".verified").is_file():
            return {"status": FAILED_NO_STATE_CHANGE, "message": f"release {target} is not on the device"}
        if target == state.committed:
            return {"status": SUCCEEDED, "release": target, "already_installed": True}
        old = state.committed
        try:
            store.flip(target)
            reload = reload_agent(store, target, float(options.get("reload_timeout_s", 120)), emit)
        except (StepFailed, OSError) as exc:
            status = _rollback_to(store, old, options, emit)
            return {"status": status, "message": str(exc)}
        state.previous, state.committed = old, target
        state.history.append({"event": "rollback", "id": target, "from": old, "ts": now()})
        store.save_state(state)
        return {"status": SUCCEEDED, "release": target, "previous": old, "reload": reload}


def prune(store: Store, request: dict[str, Any], emit: Emit = quiet) -> dict[str, Any]:
    """Keep the newest ``keep`` releases (plus current/committed/previous); drop unreferenced objects."""
    keep = max(1, int(request.get("keep", 3)))
    with store.locked():
        state = store.load_state()
        releases = store.list_releases()
        protected = {x for x in (state.committed, state.previous, store.current_id()) if x}
        by_age = sorted(releases, key=lambda r: (store.releases / r).stat().st_mtime, reverse=True)
        keepers = set(by_age[:keep]) | protected
        removed = [r for r in releases if r not in keepers]
        for release in removed:
            shutil.rmtree(store.releases / release, ignore_errors=True)
        referenced: set[str] = set()
        for release in keepers:
            manifest = store.release_manifest(release) or {}
            referenced |= {f["sha256"] for f in manifest.get("files", [])}
        dropped = 0
        for obj in store.objects.iterdir() if store.objects.is_dir() else []:
            if obj.name not in referenced:
                obj.unlink()
                dropped += 1
        for part in store.incoming.iterdir() if store.incoming.is_dir() else []:
            part.unlink()
        return {"status": "ok", "removed": removed, "kept": sorted(keepers), "objects_removed": dropped}


def _primary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The first artifact of a schema-2 manifest dict ({} for schema 1, which names its backend at the top)."""
    artifacts = manifest.get("artifacts") or [{}]
    first = artifacts[0]
    return first if isinstance(first, dict) else {}


def status(store: Store, request: dict[str, Any] | None = None, emit: Emit = quiet) -> dict[str, Any]:
    """Current, committed and previous release, pending activation, releases, agent."""
    state = store.load_state()
    current = store.current_id()

    def describe(release: str | None) -> dict[str, Any] | None:
        if release is None:
            return None
        manifest = store.release_manifest(release) or {}
        return {
            "id": release,
            "model": manifest.get("model", {}).get("name"),
            "model_version": manifest.get("model", {}).get("version"),
            "version": manifest.get("version"),
            "backend": _primary(manifest).get("runtime", manifest.get("backend")),
            "precision": _primary(manifest).get("precision", manifest.get("precision")),
        }

    agent = store.agent_status()
    ready = agent_ready(store)
    if ready is not None:
        agent["ready"] = ready
    served = describe(current)
    if served is not None and agent.get("release") == current and agent.get("opened"):
        served["opened"] = agent["opened"]  # what the device opened: artifact, device, fallback and why
    return {
        "current": served,
        "committed": state.committed,
        "previous": describe(state.previous),
        "pending": state.pending,
        "consistent": state.pending is None and current == state.committed,
        "releases": store.list_releases(),
        "failed": state.failed[-10:],
        "agent": agent,
    }


def trust(store: Store, request: dict[str, Any], emit: Emit = quiet) -> dict[str, Any]:
    """Trust the publisher key ``key`` (PEM) under ``name``; ``added`` is False when it already was."""
    added = store.add_trusted_key(str(request.get("name", "publisher")), str(request["key"]).encode())
    return {"status": "ok", "added": added}
