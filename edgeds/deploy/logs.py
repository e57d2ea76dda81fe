"""The agent's log from a target's devices: its last lines, or followed as it grows.

The agent's output goes to ``<install_dir>/logs/agent.log`` (the supervised process of ``edgeds
device setup`` and of the local target); a device whose agent runs under the systemd unit logs to
the journal instead (``journalctl -u edgeds-agent.service``), read when the file is missing. Each
host is reached through its transport (SSH, or this machine for the ``local`` target) and the
reading runs there with POSIX ``sh`` and ``tail``. A host with neither log raises
:class:`~edgeds.errors.DeviceError` (one line: where the log would be and what writes it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, DeployError, DeviceError
from .host import Session, open_device
from .targets import HostPlan, host_plans, resolve_target

LOG_FILE = "logs/agent.log"
UNIT = "edgeds-agent.service"
_NO_LOG = 3  # the exit code of the scripts below when there is no log

# $1: the log file, $2: lines. The journal only where the unit exists (and journalctl can read it).
_TAIL = (
    'if [ -f "$1" ]; then exec tail -n "$2" "$1"; fi; '
    f"if command -v journalctl >/dev/null 2>&1 && systemctl cat {UNIT} >/dev/null 2>&1; then "
    f'exec journalctl -u {UNIT} -n "$2" --no-pager -q; fi; exit {_NO_LOG}'
)
# The same, following: the reader runs in the background and ends when this script's stdin closes
# (the caller stopped), so nothing is left running on the device.
_FOLLOW = (
    'if [ -f "$1" ]; then tail -n "$2" -F "$1" & '
    f"elif command -v journalctl >/dev/null 2>&1 && systemctl cat {UNIT} >/dev/null 2>&1; then "
    f'journalctl -u {UNIT} -n "$2" -f --no-pager -q & '
    f"else exit {_NO_LOG}; fi; "
    'reader=$!; cat >/dev/null; kill "$reader" 2>/dev/null; exit 0'
)


def _log_path(session: Session) -> str:
    return f"{session.install_dir}/{LOG_FILE}"


def _no_log(plan: HostPlan, path: str) -> DeviceError:
    return DeviceError(
        f"{plan.host.name}: no agent log yet ({path} does not exist): the agent has not run there; "
        "`edgeds deploy` (local target) or `edgeds device setup` starts it"
    )


def _argv(script: str, path: str, lines: int) -> list[str]:
    return ["sh", "-c", script, "edgeds-logs", path, str(lines)]


def _plans(target: str | Path, hosts: list[str] | None) -> list[HostPlan]:
    loaded, path = resolve_target(target)
    return host_plans(loaded, path, hosts or None)


def read_log(plan: HostPlan, lines: int = 100, timeout: float = 60.0) -> str:
    """The last ``lines`` lines of ``plan``'s agent log. DeviceError when it has none;
    DeployError when the host cannot be reached."""
    session = open_device(plan)
    try:
        path = _log_path(session)
        result = session.conn.run(_argv(_TAIL, path, max(0, lines)), timeout=timeout)
    finally:
        session.conn.close()
    if result.exit_code == _NO_LOG:
        raise _no_log(plan, path)
    if result.exit_code != 0:
        raise DeviceError(
            f"{plan.host.name}: reading {path} failed (exit {result.exit_code}): "
            f"{' '.join(result.stderr.decode(errors='replace').split())[:300]}"
        )
    return result.stdout.decode(errors="replace")


def read_logs(target: str | Path, hosts: list[str] | None = None, lines: int = 100) -> dict[str, str | DeployError]:
    """Each (or each named) host's last ``lines`` log lines, or the error that host gave, in target order.

    An unknown host name raises :class:`ConfigError` before any host is contacted.
    """
    out: dict[str, str | DeployError] = {}
    for plan in _plans(target, hosts):
        try:
            out[plan.host.name] = read_log(plan, lines)
        except DeployError as exc:
            out[plan.host.name] = exc
    return out


def follow_log(
    target: str | Path,
    host: str | None,
    on_output: Callable[[bytes], None],
    *,
    lines: int = 10,
    stop: threading.Event | None = None,
) -> None:
    """Hand ``host``'s agent log to ``on_output`` as it grows (its last ``lines`` lines first) until
    ``stop`` is set or the caller is interrupted (Ctrl-C: KeyboardInterrupt propagates after the
    reader on the device was stopped). ``host`` may be None for a target with one host.

    Raises :class:`ConfigError` for an unknown host or a target of several hosts without ``host``,
    :class:`DeviceError` when the host has no log, :class:`DeployError` when it cannot be reached.
    """
    loaded, path = resolve_target(target)
    plans = host_plans(loaded, path, [host] if host else None)
    if len(plans) != 1:
        names = ", ".join(p.host.name for p in plans)
        raise ConfigError.single(path, None, "hosts", f"following reads one host: name it with --host ({names})")
    (plan,) = plans
    session = open_device(plan)
    try:
        log_path = _log_path(session)
        code = session.conn.stream(_argv(_FOLLOW, log_path, max(0, lines)), on_output, stop)
    finally:
        session.conn.close()
    if code == _NO_LOG:
        raise _no_log(plan, log_path)
