"""What runs ON the device: object store, verified releases, atomic switch, rollback, status.

Invoked over SSH as ``<python> -m edgeds.deploy.device <command> --root <install_dir>`` (through
:data:`RELAY`, which forks the step from the agent's step server when one runs) with a JSON request
on stdin; writes ONE JSON result object on stdout and progress events (JSON lines
``{"event": ...}``) on stderr. Exit code 0 whenever a result was written (the result says
whether the step worked). The same functions are used in-process by the unit tests.

The install dir is described in :mod:`.store`.

Guarantees: nothing reaches ``current`` before the signature, every sha256, the listing,
the device compatibility, the monotonic version and the disk precheck passed. Every step is
idempotent: re-running ``apply`` after an interruption resumes (objects already ingested and
releases already staged are reused). An activation that is not committed is rolled back by
:func:`recover` (run by the agent on start and by every step), so a device always converges to
its last committed release.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import ReleaseRejected, StepFailed
from ...hashing import sha256_file
from .admission import Candidate, admit, disk_precheck, plan
from .build import build_engine
from .health import agent_ready, health_check, reload_agent
from .probe import probe
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

# --------------------------------------------------------------------------- install


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


# --------------------------------------------------------------------------- apply / rollback


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
            if manifest.recipe is not None:
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
        except (StepFailed, OSError, Exception) as exc:
            emit("activation_failed", {"error": str(exc)})
            status = _rollback_to(store, previous, options, emit)
            state = store.load_state()
            state.pending = None
            state.failed.append(release_id)
            state.history.append({"event": "rolled_back", "from": release_id, "to": previous, "ts": now()})
            store.save_state(state)
            return {"status": status, "message": str(exc), **details}
        state = store.load_state()
        state.previous, state.committed, state.pending = previous, release_id, None
        state.history.append({"event": "committed", "id": release_id, "version": manifest.version, "ts": now()})
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
            "backend": manifest.get("backend"),
            "precision": manifest.get("precision"),
        }

    agent = store.agent_status()
    ready = agent_ready(store)
    if ready is not None:
        agent["ready"] = ready
    return {
        "current": describe(current),
        "committed": state.committed,
        "previous": describe(state.previous),
        "pending": state.pending,
        "consistent": state.pending is None and current == state.committed,
        "releases": store.list_releases(),
        "failed": state.failed[-10:],
        "agent": agent,
    }


def trust(store: Store, request: dict[str, Any], emit: Emit = quiet) -> dict[str, Any]:
    added = store.add_trusted_key(str(request.get("name", "publisher")), str(request["key"]).encode())
    return {"status": "ok", "added": added}


# --------------------------------------------------------------------------- step launcher

# Run by ``<install_dir>/bin/python -S -c RELAY <root> <python> ARGS...`` over SSH: hands this
# process's stdin/stdout/stderr to the device's step server (``serve``, started by the agent with
# edgeds already imported), which forks a child that runs ``main(ARGS)`` on them; the relay exits
# with the child's exit code. Without a step server it execs ``<python> -m edgeds.deploy.device
# ARGS`` instead. Either way the step sees the same stdin/stdout/stderr and arguments.
RELAY = r"""
import json, os, socket, sys
root, py, args = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(root, "run", "device.sock"))
    socket.send_fds(s, [json.dumps(args).encode()], [0, 1, 2])
except OSError:
    os.execv(py, [py, "-m", "edgeds.deploy.device", *args])
data = b""
while True:
    chunk = s.recv(64)
    if not chunk:
        break
    data += chunk
sys.exit(int(data) if data.strip().lstrip(b"-").isdigit() else 1)
"""


def step_argv(python: str, root: str, args: list[str]) -> list[str]:
    """The command line that runs ``python -m edgeds.deploy.device ARGS`` on the device, via the
    step server when one is up (see :data:`RELAY`)."""
    return [python, "-S", "-c", RELAY, root, python, *args]


def serve(root: str | Path) -> int:
    """The step server: import once, fork per step. Exits when its parent (the agent) goes away.

    Listens on ``run/device.sock`` (mode 0600: only the device user). Each connection carries the
    step's arguments and its three file descriptors (SCM_RIGHTS); a forked child runs
    :func:`main` on them and sends back its exit code.
    """
    import socket
    import traceback

    from ... import bundle as _bundle  # noqa: F401  (the point: import before forking)

    store = Store(root)
    store.ensure()
    path = store.run_dir / "device.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old_umask)
    server.listen(32)
    server.settimeout(1.0)
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while os.getppid() == parent:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            try:
                message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
                args = [str(a) for a in json.loads(message)]
            except (OSError, ValueError):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:  # the step
                code = 1
                try:
                    server.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for number, fd in enumerate(fds):
                        os.dup2(fd, number)
                        os.close(fd)
                    code = main(args)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:
                    traceback.print_exc()
                finally:
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                    with contextlib.suppress(Exception):
                        conn.settimeout(10)
                        conn.sendall(str(code).encode())
                    os._exit(0)
            for fd in fds:
                os.close(fd)
            conn.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if server.getsockname() == str(path):
                path.unlink()
        server.close()
    return 0


COMMANDS: dict[str, Callable[[Store, dict[str, Any], Emit], dict[str, Any]]] = {
    "plan": plan,
    "apply": apply,
    "rollback": rollback,
    "prune": prune,
    "status": status,
    "trust": trust,
    "probe": lambda store, request, emit: probe(store.root),
    "recover": lambda store, request, emit: {"recovered": recover(store)},
}


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeds.deploy.device COMMAND --root DIR [--json]`` with the request on stdin."""
    parser = argparse.ArgumentParser(prog="edgeds.deploy.device", description=main.__doc__)
    parser.add_argument("command", choices=[*sorted(COMMANDS), "session", "serve"])
    parser.add_argument("--root", required=True, help="install dir on the device")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.root)
    store = Store(args.root)

    def emit(event: str, data: dict[str, Any]) -> None:
        sys.stderr.write(json.dumps({"event": event, **data}) + "\n")
        sys.stderr.flush()

    def run(command: str, request: dict[str, Any]) -> None:
        try:
            result = COMMANDS[command](store, request, emit)
        except Exception as exc:  # the controller maps this to DeviceError
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()

    if args.command == "session":
        # One process for several steps (saves an interpreter start per step): one JSON request
        # per line ``{"command": ..., "request": {...}}``, one JSON result line each, until EOF.
        for line in sys.stdin:
            if line.strip():
                message = json.loads(line)
                run(str(message.get("command")), dict(message.get("request") or {}))
        return 0
    raw = sys.stdin.read() if not sys.stdin.isatty() else ""
    run(args.command, json.loads(raw) if raw.strip() else {})
    return 0
