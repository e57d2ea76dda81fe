"""``edgeds device setup``: probe a device, install the agent environment and its service.

Steps per host, each idempotent:

1. **probe** (before anything is installed): the device's own ``python3`` runs
   :mod:`edgeds.deploy.device.probe`'s source from stdin -> arch, OS, Python, disk, memory, which
   backends import, GPU / TensorRT / JetPack fingerprint.
2. **environment**: ``<install_dir>/bin/python`` is the interpreter every device step uses.
   Default: a venv at ``<install_dir>/venv`` with an edgeds wheel built here (``pip wheel``),
   installed from the package index or, with ``wheelhouse``, offline (``--no-index``) from a
   directory of wheels uploaded with it. Sim rigs pass ``python=`` an interpreter that already
   has edgeds and its backends (:meth:`edgeds.sim.devices.SimFleet.device_python`): the wrapper
   then points at it and nothing is installed - documented, and only meant for rigs that share
   this machine's packages.
3. **trust**: the bundle publisher's public key goes to ``<install_dir>/trust/``.
4. **secrets**: the target's API keys (``agent.api_keys_file`` / ``agent.api_keys_env``) and TLS
   certificate and key (``agent.tls``), read on this machine, go to ``<install_dir>/secrets/``
   (directory 0700, files 0600, owned by the agent's user); ones the target no longer names are
   removed.
5. **agent config** (``agent-config.json``: HTTP bind, device id, MQTT, the profile's server
   limits, the secrets' paths on the device) and **service**: where systemd runs and the SSH user
   is root, a hardened unit that runs the agent as its own unprivileged user (``agent.user``,
   created when missing; the install dir is its only writable path, and device steps run by root
   over SSH drop to that user too);
   otherwise, and always on the local target (this machine: no systemd unit, no root needed), a
   supervised background process of the SSH user (``bin/edgeds-supervise``: restarts the agent
   when it exits; pid files under ``run/``; its output in ``logs/agent.log``). The result names the user the agent's
   process runs as, read from the device.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Target, load_profile
from ..errors import DeployError, DeviceError, EdgedsError
from ..runtime.auth import ApiKeys, read_key_file, server_tls_context
from .device import probe as device_probe
from .host import Session, open_device
from .targets import HostPlan, resolve_path

Progress = Callable[[str, str, dict[str, Any]], None]

# cwd is never on sys.path: a directory named ``edgeds`` in $HOME must not shadow the package.
WRAPPER = """#!/bin/sh
PYTHONSAFEPATH=1 exec {python} "$@"
"""

# A pid file outlives its process (a reboot, a kill -9): a pid is only ours when its command line
# names what we started, so a reused pid is never taken for the agent, let alone signalled.
_IS_OURS = '[ -n "{pid}" ] && tr "\\0" " " < /proc/{pid}/cmdline 2>/dev/null | grep -qF {what}'
_KILL_AGENT = "{{ " + _IS_OURS.format(pid="{pid}", what="'edgeds agent'") + ' && kill "{pid}" 2>/dev/null; }}'

SUPERVISOR = """#!/bin/sh
# edgeds agent supervisor (written by `edgeds device setup`): restarts the agent when it exits.
D={root}
mkdir -p "$D/run" "$D/logs"
cd "$D" || exit 1
echo $$ > "$D/run/supervisor.pid"
rm -f "$D/run/supervisor.stop"
while [ ! -e "$D/run/supervisor.stop" ]; do
  "$D/bin/python" -m edgeds agent --root "$D" >> "$D/logs/agent.log" 2>&1
  sleep 1
done
rm -f "$D/run/supervisor.pid"
"""

# Under a systemd unit the agent runs as {user}; a step started by root over SSH drops to that user
# too, so every file of the install dir stays the agent's.
DROPPING_WRAPPER = """#!/bin/sh
if [ "$(id -u)" = 0 ]; then
  exec runuser -u {user} -- env PYTHONSAFEPATH=1 {python} "$@"
fi
PYTHONSAFEPATH=1 exec {python} "$@"
"""

UNIT = """[Unit]
Description=edgeds agent ({root})
After=network-online.target
Wants=network-online.target

[Service]
User={user}
Group={user}
ExecStart={root}/bin/python -m edgeds agent --root {root}
WorkingDirectory={root}
Environment=HOME={root}
Restart=always
RestartSec=1
KillSignal=SIGTERM
UMask=0077
# The agent may write its install dir and nothing else; it needs no privilege.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome={protect_home}
ReadWritePaths={root}
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
{mdwe}SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
RemoveIPC=yes

[Install]
WantedBy={wanted_by}
"""

# Backends that generate code at run time (oneDNN / CUDA JIT) and so cannot run under
# MemoryDenyWriteExecute; ONNX Runtime's CPU provider runs under it (checked with PR_SET_MDWE).
_JIT_BACKENDS = ("openvino", "tensorrt")
SECRETS_DIR = "secrets"
API_KEYS_FILE = "api-keys"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"


@dataclass
class SetupResult:
    host: str
    ok: bool
    probe: dict[str, Any] = field(default_factory=dict)
    environment: str = ""
    service: str = ""
    agent_user: str = ""  # who the agent's process runs as, read from the device: "name (uid N)" (agent_user)
    secrets: list[str] = field(default_factory=list)  # what was installed under <install_dir>/secrets
    installed_seconds: float = 0.0
    message: str = ""


def _q(text: str) -> str:
    return shlex.quote(text)


def build_wheel(out_dir: Path) -> Path:
    """Build an edgeds wheel from this checkout (no dependencies) into ``out_dir``."""
    repo = Path(__file__).resolve().parents[2]
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out_dir),
            str(repo),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(out_dir.glob("edgeds-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DeployError(f"building the edgeds wheel failed: {proc.stderr[-800:]}")
    return wheels[-1]


def _sh(session: Session, script: str, timeout: float = 600.0) -> str:
    result = session.conn.run(["sh", "-c", script], timeout=timeout)
    if result.exit_code != 0:
        raise DeviceError(
            f"{session.plan.host.name}: `{script[:80]}...` exited {result.exit_code}: "
            f"{result.stderr.decode(errors='replace')[-800:]}"
        )
    return result.stdout.decode(errors="replace")


def probe_host(session: Session, python: str = "python3") -> dict[str, Any]:
    """Probe with the device's own interpreter, before edgeds is installed there."""
    source = Path(device_probe.__file__).read_bytes()
    result = session.conn.run([python, "-", "probe", "--root", session.install_dir], stdin=source, timeout=120)
    try:
        data: dict[str, Any] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise DeviceError(
            f"{session.plan.host.name}: probe with {python} failed: {result.stderr.decode(errors='replace')[-500:]}"
        ) from exc
    return data


def install_environment(
    session: Session,
    wheel: Path | None,
    *,
    python: str | None = None,
    wheelhouse: Path | None = None,
    extras: str = "",
    progress: Progress | None = None,
) -> str:
    """Make ``<install_dir>/bin/python`` an interpreter with edgeds; returns what was done."""
    root = session.install_dir
    _sh(session, f"mkdir -p {_q(root)}/bin {_q(root)}/run {_q(root)}/logs {_q(root)}/dist")
    wrapper = f"{root}/bin/python"
    if python is not None:
        body = WRAPPER.format(python=_q(python))
        session.conn.write_file(wrapper, body.encode())
        _sh(session, f"chmod 755 {_q(wrapper)}")
        return f"shared interpreter {python}"
    if wheel is None:
        raise DeployError("install_environment needs a wheel (or python=)")
    remote_wheel = f"{root}/dist/{wheel.name}"
    session.conn.upload(wheel, remote_wheel)
    find_links = ""
    if wheelhouse is not None:
        remote_house = f"{root}/wheelhouse"
        _sh(session, f"mkdir -p {_q(remote_house)}")
        files = sorted(wheelhouse.glob("*.whl"))
        for number, file in enumerate(files, 1):
            if progress is not None:
                progress(session.plan.host.name, "wheelhouse", {"done": number, "total": len(files)})
            session.conn.upload(file, f"{remote_house}/{file.name}")
        find_links = f"--no-index --find-links {_q(remote_house)}"
    spec = remote_wheel + (f"[{extras}]" if extras else "")
    venv = f"{root}/venv"
    script = (
        f"set -e; test -x {_q(venv)}/bin/python || python3 -m venv {_q(venv)}; "
        f"{_q(venv)}/bin/python -m pip install -q --disable-pip-version-check {find_links} {_q(spec)}"
    )
    _sh(session, script, timeout=1800)
    body = WRAPPER.format(python=f"{_q(venv)}/bin/python")
    session.conn.write_file(wrapper, body.encode())
    _sh(session, f"chmod 755 {_q(wrapper)}")
    return f"venv {venv} ({'offline wheelhouse' if wheelhouse else 'package index'})"


@dataclass(frozen=True)
class AgentSecrets:
    """What the agent's callers must present, read on this machine: API keys and TLS files (PEM bytes)."""

    api_keys: tuple[str, ...] = ()
    tls_cert: bytes | None = None
    tls_key: bytes | None = None


def read_agent_secrets(target: Target, plan: HostPlan) -> AgentSecrets:
    """The target's API keys and TLS files, checked here (keys well-formed, certificate and key a
    pair) so that a device never gets ones its agent would refuse. DeployError when they cannot be read."""
    agent = target.agent
    base = plan.target_dir or Path.cwd()
    keys: list[str] = []
    try:
        if agent.api_keys_file is not None:
            keys += read_key_file(resolve_path(agent.api_keys_file, base))
        if agent.api_keys_env is not None:
            value = os.environ.get(agent.api_keys_env, "")
            if not value.strip():
                raise DeployError(f"agent.api_keys_env: ${agent.api_keys_env} is not set here")
            keys += [part.strip() for part in value.split(",") if part.strip()]
        ApiKeys(keys)  # refuses a malformed key (without showing it)
        if agent.tls is None:
            return AgentSecrets(tuple(keys))
        cert, key = resolve_path(agent.tls.cert, base), resolve_path(agent.tls.key, base)
        server_tls_context(cert, key)  # a certificate and key that load, and belong together
        return AgentSecrets(tuple(keys), cert.read_bytes(), key.read_bytes())
    except OSError as exc:
        raise DeployError(f"agent secrets: {exc}") from exc
    except DeployError:
        raise
    except EdgedsError as exc:
        raise DeployError(f"agent secrets: {exc}") from exc


def _put_secret(session: Session, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` on the device as 0600 from the first byte (umask 077, temp + rename)."""
    script = f"umask 077; cat > {_q(path)}.tmp && chmod 600 {_q(path)}.tmp && mv -f {_q(path)}.tmp {_q(path)}"
    result = session.conn.run(["sh", "-c", script], stdin=data, timeout=60)
    if result.exit_code != 0:
        raise DeviceError(f"{session.plan.host.name}: writing {path} failed: {result.stderr.decode(errors='replace')}")


def install_secrets(session: Session, secrets: AgentSecrets) -> dict[str, Any]:
    """Install the API keys and TLS files under ``<install_dir>/secrets`` (0700 / 0600) and remove
    those the target no longer names; returns their paths on the device for ``agent-config.json``."""
    directory = f"{session.install_dir}/{SECRETS_DIR}"
    _sh(session, f"mkdir -p {_q(directory)} && chmod 700 {_q(directory)}")
    paths: dict[str, Any] = {"api_keys_file": None, "tls": None}
    stale: list[str] = []
    if secrets.api_keys:
        paths["api_keys_file"] = f"{directory}/{API_KEYS_FILE}"
        _put_secret(session, paths["api_keys_file"], ("\n".join(secrets.api_keys) + "\n").encode())
    else:
        stale.append(API_KEYS_FILE)
    if secrets.tls_cert is not None and secrets.tls_key is not None:
        paths["tls"] = {"cert": f"{directory}/{TLS_CERT_FILE}", "key": f"{directory}/{TLS_KEY_FILE}"}
        _put_secret(session, paths["tls"]["cert"], secrets.tls_cert)
        _put_secret(session, paths["tls"]["key"], secrets.tls_key)
    else:
        stale += [TLS_CERT_FILE, TLS_KEY_FILE]
    if stale:
        _sh(session, "rm -f " + " ".join(_q(f"{directory}/{name}") for name in stale))
    return paths


def describe_secrets(secrets: AgentSecrets, directory: str) -> list[str]:
    """What :func:`install_secrets` put on the device, in words (never the keys)."""
    out = []
    if secrets.api_keys:
        out.append(f"{len(secrets.api_keys)} API key(s) in {directory}/{API_KEYS_FILE} (0600)")
    if secrets.tls_cert is not None:
        out.append(f"TLS certificate and key in {directory}/{TLS_CERT_FILE}, {TLS_KEY_FILE} (0600)")
    return out


def agent_config(target: Target, plan: HostPlan, secret_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The agent's ``agent-config.json`` for ``plan``'s host. DeployError (one line) when the target's
    profile cannot be loaded here (see :func:`profile_server_limits`)."""
    host = plan.host
    return {
        "device_id": host.name,
        "http_host": host.agent_host or target.agent.http_host,
        "http_port": target.agent.http_port,
        "swap_mode": target.agent.swap_mode,
        "publish_logs": target.agent.publish_logs,
        "server": profile_server_limits(target, plan),
        "mqtt": target.mqtt.model_dump(mode="json") if target.mqtt.url else None,
        "inspection": [station.model_dump(mode="json") for station in target.inspection],
        "metrics_public": target.agent.metrics_public,
        **(secret_paths or {"api_keys_file": None, "tls": None}),
    }


def profile_server_limits(target: Target, plan: HostPlan) -> dict[str, Any] | None:
    """The server limits of the target's profile, for the agent; None for ``auto`` (the agent's
    defaults, the profile being detected on the device). A profile path (``/`` in it or a YAML
    suffix) that is relative starts at the target file's directory; a name is looked up on this
    machine's profile search path. DeployError, with the first problem on one line, when it cannot
    be loaded."""
    profile = target.profile
    if profile == "auto":
        return None
    source: str | Path = profile
    if "/" in profile or profile.endswith((".yaml", ".yml")):
        source = resolve_path(profile, plan.target_dir or Path.cwd())
    try:
        return load_profile(source).server.model_dump(mode="json")
    except (OSError, EdgedsError) as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        more = f" (and {len(lines) - 1} more problems)" if len(lines) > 1 else ""
        raise DeployError(f"profile {profile!r}: {lines[0]}{more}") from exc


def write_agent_config(
    session: Session, target: Target, plan: HostPlan, secret_paths: dict[str, Any] | None = None
) -> None:
    """Write :func:`agent_config` to the device's install dir."""
    config = agent_config(target, plan, secret_paths)
    session.conn.write_file(f"{session.install_dir}/agent-config.json", json.dumps(config, indent=2).encode())


def render_unit(root: str, user: str, probe: dict[str, Any]) -> str:
    """The systemd unit of the agent in ``root``, run as ``user``. ``ProtectHome`` is read-only when
    the install dir lies under a home directory (else ``yes``); ``MemoryDenyWriteExecute`` is on
    unless the device has a backend that generates code at run time (``probe['backends']``)."""
    under_home = any(root == top or root.startswith(top + "/") for top in ("/home", "/root", "/run/user"))
    backends = probe.get("backends") or {}
    jit = any(backends.get(name) for name in _JIT_BACKENDS) or bool(probe.get("gpu"))
    return UNIT.format(
        root=root,
        user=user,
        protect_home="read-only" if under_home else "yes",
        mdwe="" if jit else "MemoryDenyWriteExecute=yes\n",
        wanted_by="multi-user.target",
    )


def install_service(session: Session, probe: dict[str, Any], restart: bool = False, user: str = "edgeds") -> str:
    """A hardened systemd unit running the agent as ``user`` where systemd runs and we are root
    there; else (and always for the local target) the supervised background process of the user
    the steps run as."""
    root = session.install_dir
    if probe.get("systemd") and session.plan.endpoint.user == "root" and not session.plan.local:
        name = "edgeds-agent.service"
        path = f"/etc/systemd/system/{name}"
        python = _sh(session, f"sed -n 's/^PYTHONSAFEPATH=1 exec \\(.*\\) \"\\$@\"$/\\1/p' {_q(root)}/bin/python")
        python = python.strip().splitlines()[-1] if python.strip() else ""
        if python:  # the plain wrapper install_environment wrote: steps run by root drop to the agent's user
            body = DROPPING_WRAPPER.format(user=user, python=python)
            session.conn.write_file(f"{root}/bin/python", body.encode())
        create = (
            f"id -u {user} >/dev/null 2>&1 || useradd --system --user-group --home-dir {_q(root)} "
            f"--no-create-home --shell /usr/sbin/nologin {user}"
        )
        reach = (
            f"runuser -u {user} -- test -x {_q(root)} || {{ echo 'the agent user {user} cannot reach "
            f"{root}: use an install_dir outside a private home, e.g. /opt/edgeds' >&2; exit 3; }}"
        )
        _sh(session, f"set -e; {create}; chown -R {user}:{user} {_q(root)}; chmod 755 {_q(root)}/bin/python; {reach}")
        session.conn.write_file(f"{path}.new", render_unit(root, user, probe).encode())
        # a changed unit (e.g. hardening added) is applied now; an unchanged one leaves the agent alone
        changed = f"if cmp -s {path}.new {path}; then rm -f {path}.new; else mv -f {path}.new {path}; echo changed; fi"
        verb = "restart" if restart or _sh(session, changed).strip() == "changed" else "start"
        _sh(session, f"systemctl daemon-reload && systemctl enable {name} && systemctl {verb} {name}")
        return f"systemd unit {name} (user {user}, hardened)"
    script = SUPERVISOR.format(root=_q(root))
    session.conn.write_file(f"{root}/bin/edgeds-supervise", script.encode())
    _sh(session, f"chmod 755 {_q(root)}/bin/edgeds-supervise")
    running = (
        f"p=$(cat {_q(root)}/run/supervisor.pid 2>/dev/null) && {_IS_OURS.format(pid='$p', what='edgeds-supervise')}"
    )
    start = f"setsid -f {_q(root)}/bin/edgeds-supervise </dev/null >/dev/null 2>&1"
    if restart:
        stop_agent = f"a=$(cat {_q(root)}/run/agent.pid 2>/dev/null) && {_KILL_AGENT.format(pid='$a')}; true"
        _sh(session, f"if {running}; then {stop_agent}; else {start}; fi")
    else:
        _sh(session, f"if {running}; then true; else {start}; fi")
    return f"supervised process ({root}/bin/edgeds-supervise, pid file {root}/run/supervisor.pid)"


# The agent's effective uid from /proc (busybox `ps` has no -o user/uid), then its name: getent,
# else Python's pwd with the install's interpreter. Prints "UID NAME", "UID" or nothing; exits 0.
_AGENT_USER = (
    'p=$(cat {pid_file} 2>/dev/null); [ -n "$p" ] || exit 0; '
    "u=$(sed -n 's/^Uid:[[:space:]]*[0-9]*[[:space:]]*\\([0-9]*\\).*/\\1/p' /proc/\"$p\"/status 2>/dev/null); "
    '[ -n "$u" ] || exit 0; '
    'n=$(getent passwd "$u" 2>/dev/null | cut -d: -f1); '
    '[ -n "$n" ] || n=$({python} -c \'import pwd, sys; print(pwd.getpwuid(int(sys.argv[1])).pw_name)\' "$u" '
    "2>/dev/null); "
    'echo "$u" $n; exit 0'
)


def agent_user_script(install_dir: str) -> str:
    """The shell script :func:`agent_user` runs on the device (POSIX sh and busybox alike)."""
    return _AGENT_USER.format(pid_file=_q(f"{install_dir}/run/agent.pid"), python=_q(f"{install_dir}/bin/python"))


def parse_agent_user(out: str) -> str:
    """``name (uid N)`` or ``uid N`` from :func:`agent_user_script`'s output; "" when it has none."""
    words = out.split()
    if not words or not words[0].isdigit():
        return ""
    return f"{words[1]} (uid {words[0]})" if len(words) > 1 else f"uid {words[0]}"


def agent_user(session: Session) -> str:
    """The user the device's agent process runs as, read from the device: ``name (uid N)``, ``uid
    N`` when the uid has no name there, or ``unknown (why)``. Never an error: it is a report on a
    setup whose steps are done."""
    try:
        out = _sh(session, agent_user_script(session.install_dir), timeout=60)
    except DeployError as exc:
        return f"unknown ({str(exc).splitlines()[0][:200]})"
    return parse_agent_user(out) or "unknown (no readable agent pid or /proc/PID/status)"


def wait_for_agent(session: Session, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = session.call("status", timeout=60)
        agent = last.get("agent", {})
        if agent.get("running") and agent.get("state") in ("idle", "serving", "failed"):
            return last
        time.sleep(0.3)
    raise DeviceError(f"{session.plan.host.name}: the agent did not come up within {timeout:.0f}s: {last}")


def setup_host(
    target: Target,
    plan: HostPlan,
    *,
    wheel: Path | None,
    public_key: bytes | None,
    python: str | None = None,
    wheelhouse: Path | None = None,
    start_agent: bool = True,
    progress: Progress | None = None,
) -> SetupResult:
    """Probe, install the environment, trust the key, configure and start the agent on one host."""
    name = plan.host.name
    result = SetupResult(name, ok=False)
    started = time.monotonic()
    try:
        session = open_device(plan)
    except DeployError as exc:
        result.message = str(exc)
        return result
    try:
        if progress:
            progress(name, "probing", {})
        result.probe = probe_host(session, python or "python3")
        if progress:
            progress(name, "installing", {})
        result.environment = install_environment(
            session, wheel, python=python, wheelhouse=wheelhouse, progress=progress
        )
        if public_key is not None:
            session.call("trust", {"name": "publisher", "key": public_key.decode()}, timeout=60)
        secrets = read_agent_secrets(target, plan)
        secret_paths = install_secrets(session, secrets)
        result.secrets = describe_secrets(secrets, f"{session.install_dir}/{SECRETS_DIR}")
        if progress and result.secrets:
            progress(name, "secrets", {"installed": result.secrets})
        write_agent_config(session, target, plan, secret_paths)
        if start_agent:
            if progress:
                progress(name, "service", {})
            result.service = install_service(session, result.probe, user=target.agent.user)
            wait_for_agent(session)
            result.agent_user = agent_user(session)
            if progress:
                progress(name, "agent", {"runs_as": result.agent_user})
        result.ok = True
    except DeployError as exc:
        result.message = str(exc)
    finally:
        session.conn.close()
        result.installed_seconds = round(time.monotonic() - started, 2)
    return result


def stop_agent(plan: HostPlan) -> None:
    """Stop the supervised agent (supervisor first, so it does not restart it)."""
    session = open_device(plan)
    try:
        root = _q(session.install_dir)
        _sh(
            session,
            f"touch {root}/run/supervisor.stop; a=$(cat {root}/run/agent.pid 2>/dev/null) && "
            f"{_KILL_AGENT.format(pid='$a')}; true",
        )
    finally:
        session.conn.close()


def temp_wheel_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="edgeds-wheel-")
