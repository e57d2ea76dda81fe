"""One host, seen from here: plan -> upload the missing objects -> apply; plus status/rollback/prune.

A host is reached through a transport (:mod:`.transport`): SSH for a remote device, child
processes for the ``local`` target (:func:`open_device` picks it from the plan); every step below
is the same either way. Every device-side step runs ``<install_dir>/bin/python -m
edgeds.deploy.device`` (that wrapper is written by ``edgeds device setup``) with a JSON request
on stdin; a deploy keeps one such process (``session``) for plan and apply, so the device starts
one interpreter per deploy. A lost connection before ``apply`` started changes nothing on the
device (FAILED_NO_STATE_CHANGE; the retry resumes the upload). A lost connection during
``apply`` is resolved by reconnecting once and reading the device's state (an uncommitted
activation is rolled back by the device itself).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..bundle import Bundle
from ..errors import BundleError, BundleVerificationError, ConnectionFailed, DeployError, DeviceError, HostKeyError
from .device.protocol import (
    FAILED_NO_STATE_CHANGE,
    FAILED_ROLLBACK_COMPLETE,
    FAILED_UNABLE_TO_ROLLBACK,
    REJECTED,
    SUCCEEDED,
)
from .device.server import step_argv
from .options import DeployOptions
from .ssh import Connection, connect
from .targets import HostPlan
from .transport import Transport

log = logging.getLogger(__name__)

Progress = Callable[[str, str, dict[str, Any]], None]  # (host, event, data)


def _no_progress(host: str, event: str, data: dict[str, Any]) -> None:
    return None


@dataclass
class HostResult:
    """The outcome of one host. ``status`` is one of :data:`edgeds.deploy.device.protocol.STATUSES`."""

    host: str
    status: str
    release: str | None = None
    previous: str | None = None
    message: str = ""
    reason: str | None = None
    already_installed: bool = False
    uploaded_bytes: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def offer(bundle: Bundle, **fields: Any) -> dict[str, Any]:
    """The device request that offers ``bundle``: its manifest as signed, its signature, ``fields``."""
    raw = bundle.signature
    sig = None
    if raw is not None:
        sig = raw.hex() if len(raw) == 64 else raw.decode(errors="replace")
    return {"manifest": bundle.manifest_bytes.decode(), "signature": sig, **fields}


def _event_reader(on_event: Callable[[dict[str, Any]], None]) -> Callable[[str], None]:
    """A stderr-line callback that hands each progress event (a JSON object line) to ``on_event``.

    A step's stderr also carries plain text (a traceback, a warning): such lines are not events
    and are skipped. An error raised by ``on_event`` itself propagates.
    """

    def line(text: str) -> None:
        if not text.startswith("{"):
            return
        try:
            event = json.loads(text)
        except ValueError:
            log.debug("device stderr line is not an event: %.200s", text)
            return
        on_event(event)

    return line


class Session:
    """A transport into one host plus where edgeds lives there. The session owns ``conn``: whoever
    opened the session closes it with ``session.conn.close()``."""

    conn: Transport

    def __init__(self, plan: HostPlan, conn: Transport) -> None:
        self.plan = plan
        self.conn = conn
        install_dir = plan.install_dir
        if install_dir.startswith("~"):
            home = conn.run(["sh", "-c", 'printf %s "$HOME"'], timeout=30).stdout.decode()
            install_dir = home + install_dir[1:]
        self.install_dir = install_dir.rstrip("/")
        self.python = f"{self.install_dir}/bin/python"

    def call(
        self,
        command: str,
        request: dict[str, Any] | None = None,
        *,
        timeout: float = 300.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Run one device command; its JSON result (raises :class:`DeviceError` if there is none)."""

        line = None if on_event is None else _event_reader(on_event)
        argv = step_argv(self.python, self.install_dir, [command, "--root", self.install_dir, "--json"])
        result = self.conn.run(argv, stdin=json.dumps(request or {}).encode(), timeout=timeout, on_stderr_line=line)
        out = result.stdout.decode(errors="replace").strip().splitlines()
        try:
            data: dict[str, Any] = json.loads(out[-1])
        except (IndexError, ValueError) as exc:
            hint = ""
            if result.exit_code == 127 or b"No such file" in result.stderr:
                hint = " (is the agent installed? run `edgeds device setup`)"
            raise DeviceError(
                f"{self.plan.host.name}: `{command}` gave no result (exit {result.exit_code}){hint}: "
                f"{result.stderr.decode(errors='replace')[-500:]}"
            ) from exc
        if data.get("status") == "error":
            raise DeviceError(f"{self.plan.host.name}: `{command}` failed: {data.get('error')}")
        return data


class DeviceSession(Session):
    """A session over SSH (what the HIL runner uses: it forwards ports through ``conn``)."""

    conn: Connection

    def __init__(self, plan: HostPlan, conn: Connection) -> None:
        super().__init__(plan, conn)


class StepRunner:
    """One device process (``device session``) answering several steps; progress events streamed."""

    def __init__(self, session: Session, on_event: Callable[[dict[str, Any]], None]) -> None:
        argv = step_argv(session.python, session.install_dir, ["session", "--root", session.install_dir])
        self.name = session.plan.host.name
        self.process = session.conn.start(argv, on_stderr_line=_event_reader(on_event))

    def call(self, command: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        raw = self.process.request(json.dumps({"command": command, "request": request}).encode(), timeout)
        try:
            data: dict[str, Any] = json.loads(raw)
        except ValueError as exc:
            raise DeviceError(f"{self.name}: `{command}` answered garbage: {raw[:200]!r}") from exc
        if data.get("status") == "error":
            raise DeviceError(f"{self.name}: `{command}` failed: {data.get('error')}")
        return data

    def close(self) -> None:
        self.process.close()


def open_session(plan: HostPlan) -> DeviceSession:
    """An SSH session to ``plan``'s host; a local plan has no SSH (DeployError: use :func:`open_device`)."""
    if plan.local:
        raise DeployError(f"{plan.host.name}: this machine is reached without SSH")
    conn = connect(plan.endpoint)
    try:
        return DeviceSession(plan, conn)
    except BaseException:
        conn.close()
        raise


def open_device(plan: HostPlan) -> Session:
    """A session to ``plan``'s host through its transport: this machine's for a local plan, else SSH."""
    if not plan.local:
        return open_session(plan)
    from .local import LocalConnection

    conn = LocalConnection(plan.host.name)
    try:
        return Session(plan, conn)
    except BaseException:
        conn.close()
        raise


def deploy_host(
    plan: HostPlan,
    bundle: Bundle,
    *,
    options: DeployOptions | None = None,
    progress: Progress = _no_progress,
    timeout: float = 900.0,
    cancel: threading.Event | None = None,
) -> HostResult:
    """Deploy the opened ``bundle`` to one host. Never raises for device/network failures: see the result.

    ``options`` (default :class:`DeployOptions`) become the fields of the device's plan and apply
    requests. The caller owns ``bundle`` and keeps it open for the call.
    """
    name = plan.host.name
    started = time.monotonic()
    deadline = started + timeout
    result = HostResult(name, FAILED_NO_STATE_CHANGE)
    session: Session | None = None
    applying = False
    committed_before: str | None = None
    watchdog: threading.Timer | None = None
    steps: StepRunner | None = None
    chosen = options or DeployOptions()
    try:
        progress(name, "connecting", {})
        session = open_device(plan)
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), session.conn.close)
        watchdog.daemon = True
        watchdog.start()
        progress(name, "planning", {})

        def on_event(event: dict[str, Any]) -> None:
            progress(name, str(event.get("event")), event)

        steps = StepRunner(session, on_event)
        planned = steps.call("plan", offer(bundle, **chosen.plan_fields()), timeout=120)
        committed_before = planned.get("committed")
        if planned["status"] in (REJECTED, FAILED_NO_STATE_CHANGE):
            result.status, result.reason, result.message = planned["status"], planned.get("reason"), planned["message"]
            return result
        if planned["status"] == "already_installed":
            result.status, result.release, result.already_installed = SUCCEEDED, planned["release"], True
            result.message = "already installed"
            progress(name, "already_installed", {"release": planned["release"]})
            return result
        result.release = planned["release"]
        missing = planned["missing"]
        total = int(planned["upload_bytes"])
        progress(name, "uploading", {"objects": len(missing), "bytes": total})
        done_before = 0
        objects = bundle.objects()
        for obj in missing:
            if cancel is not None and cancel.is_set():
                raise ConnectionFailed(f"{name}: cancelled")
            local = objects[obj["sha256"]]
            base = done_before

            def tick(done: int, size: int, base: int = base) -> None:
                progress(name, "upload_bytes", {"done": base + done, "total": total})

            result.uploaded_bytes += session.conn.upload(local, f"{planned['incoming']}/{obj['sha256']}", progress=tick)
            done_before += int(obj["size"])
        progress(name, "applying", {"release": planned["release"]})
        applying = True
        applied = steps.call(
            "apply", offer(bundle, **chosen.apply_fields()), timeout=max(1.0, deadline - time.monotonic())
        )
        result.status = applied["status"]
        result.previous = applied.get("previous")
        result.reason = applied.get("reason")
        result.message = applied.get("message", "")
        result.already_installed = bool(applied.get("already_installed"))
        result.details = {k: applied[k] for k in ("health", "reload", "opened") if k in applied}
        return result
    except HostKeyError as exc:
        result.status, result.reason, result.message = FAILED_NO_STATE_CHANGE, "host_key", str(exc)
        return result
    except (BundleVerificationError, BundleError) as exc:
        result.status, result.message = REJECTED, str(exc)
        result.reason = getattr(exc, "reason", "bundle")
        return result
    except DeployError as exc:
        result.message = str(exc)
        if applying:
            result.status, result.message = _after_lost_apply(plan, result.release, committed_before, str(exc))
        return result
    except Exception as exc:  # a bug (ours, a callback's, the SSH library's) is this host's result
        log.exception("deploying to %s failed unexpectedly", name)
        result.message = f"unexpected {type(exc).__name__}: {exc}"
        if applying:  # the device may be mid-activation: let its state decide, as for a dropped connection
            result.status, result.message = _after_lost_apply(plan, result.release, committed_before, result.message)
        return result
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if steps is not None:  # end the device's step session (its stdin), then the transport
            steps.close()
        if session is not None:
            session.conn.close()
        result.seconds = round(time.monotonic() - started, 3)
        progress(name, "done", {"status": result.status})


def _after_lost_apply(plan: HostPlan, release: str | None, before: str | None, error: str) -> tuple[str, str]:
    """The connection dropped during apply: reconnect once and let the device's state decide."""
    try:
        session = open_device(plan)
    except DeployError as exc:
        return FAILED_UNABLE_TO_ROLLBACK, f"{error}; device unreachable afterwards, state unknown: {exc}"
    try:
        for _ in range(20):  # an apply still running holds the lock; recover waits for it
            state = session.call("status", timeout=60)
            if state.get("pending") is None:
                break
            session.call("recover", timeout=60)
            time.sleep(0.5)
        if state.get("committed") == release and state.get("consistent"):
            return SUCCEEDED, f"connection dropped after commit ({error})"
        if state.get("committed") == before and state.get("consistent"):
            return FAILED_ROLLBACK_COMPLETE, f"{error}; device back on its committed release {before}"
        return FAILED_UNABLE_TO_ROLLBACK, f"{error}; device state: {state}"
    except DeployError as exc:
        return FAILED_UNABLE_TO_ROLLBACK, f"{error}; then {exc}"
    finally:
        session.conn.close()


def host_command(
    plan: HostPlan, command: str, request: dict[str, Any] | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """Run one device command (status, rollback, prune, probe, trust) on a host."""
    session = open_device(plan)
    try:
        return session.call(command, request or {}, timeout=timeout)
    finally:
        session.conn.close()
