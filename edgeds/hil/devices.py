"""How a HIL run reaches one device and injects faults into it — the same for real and sim rigs.

:class:`RigDevice` holds an SSH session to the device for the run (reopened after a network
cut): the device lease lives there (:class:`~.lease.SshFiles`), the agent's status is the
device's own ``status`` step, the agent is killed with ``kill -9`` over SSH, and the agent's
HTTP endpoint is reached directly when the target says where it binds (``agent_host``, or an
``agent.http_host`` that is not loopback), else through an SSH port forward.

Faults (:class:`Faults`): the network cut is the rig's ``network_cut``/``network_restore``
hooks on real rigs and stopping the device's sshd on the sim rig; the power cycle is the
``power_cycle`` hook (none on the sim rig); the broker outage is only possible where the run
owns the broker (the sim rig). Hook commands run on this machine through ``sh -c`` with
``{host}`` (device name) and ``{address}`` replaced by shell-quoted values.
"""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
import time
from typing import TYPE_CHECKING, Any

from ..errors import DeployError, HilError
from .lease import SshFiles

if TYPE_CHECKING:
    from ..deploy.host import DeviceSession
    from ..deploy.ssh import LocalForward
    from ..deploy.targets import HostPlan
    from ..sim.broker import Mosquitto
    from ..sim.devices import SimDevice
    from .rig import Hooks

LEASE_FILE = "hil.lease"


def _loopback_or_any(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return address.is_loopback or address.is_unspecified


class RigDevice:
    """One device for the length of a run. Construction is free; :meth:`open` connects."""

    def __init__(self, plan: HostPlan, agent_http_host: str, agent_http_port: int) -> None:
        self.plan = plan
        self.name = plan.host.name
        self._agent_host = plan.host.agent_host or agent_http_host
        self._agent_port = agent_http_port
        self._session: DeviceSession | None = None
        self._forward: LocalForward | None = None
        self.install_dir = ""

    # -- connection -------------------------------------------------------------------------------

    def open(self) -> RigDevice:
        from ..deploy.host import open_session

        self._session = open_session(self.plan)
        self.install_dir = self._session.install_dir
        return self

    @property
    def session(self) -> DeviceSession:
        """The SSH session, reopened when the previous one died (e.g. after a network cut)."""
        session = self._session
        if session is None or not session.conn.is_active():
            self.close_session()
            self.open()
            assert self._session is not None
            return self._session
        return session

    def close_session(self) -> None:
        if self._forward is not None:
            self._forward.close()
            self._forward = None
        if self._session is not None:
            self._session.conn.close()  # never raises for a dead connection (ssh.Connection.close)
            self._session = None

    close = close_session

    def lease_files(self) -> tuple[SshFiles, str]:
        """Where this device's lease lives: ``<install dir>/hil.lease`` on the device."""
        return SshFiles(lambda: self.session.conn, self.name), f"{self.install_dir}/{LEASE_FILE}"

    # -- agent ------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The agent's OIP base URL as reachable from here (direct, or a forward over SSH)."""
        if not _loopback_or_any(self._agent_host) or self.plan.endpoint.address == self._agent_host:
            return f"http://{self._agent_host}:{self._agent_port}"
        if self._agent_host in ("0.0.0.0", "::") and not _loopback_or_any(self.plan.endpoint.address):
            return f"http://{self.plan.endpoint.address}:{self._agent_port}"
        session = self.session  # may reopen, which drops an old forward
        if self._forward is None:
            remote = "127.0.0.1" if self._agent_host in ("0.0.0.0", "localhost") else self._agent_host
            self._forward = session.conn.forward(remote, self._agent_port)
        return f"http://127.0.0.1:{self._forward.port}"

    def status(self, timeout: float = 60.0) -> dict[str, Any]:
        """The device's ``status`` step: current/previous release and the agent (state, pid, load_s)."""
        return self.session.call("status", {}, timeout=timeout)

    def agent(self) -> dict[str, Any]:
        agent: dict[str, Any] = self.status().get("agent", {})
        return agent

    def serving(self, release: str | None = None) -> bool:
        """Whether the agent runs and serves ``release`` (any release when None); False when unreachable."""
        try:
            agent = self.agent()
        except DeployError:
            return False
        wanted = release is None or agent.get("release") == release
        return bool(agent.get("running") and agent.get("state") == "serving" and wanted)

    def kill_agent(self) -> int | None:
        """``kill -9`` the agent (its supervisor or service restarts it); the pid killed, or None."""
        pid = self.agent().get("pid")
        if not isinstance(pid, int):
            return None
        self.session.conn.run(["kill", "-9", str(pid)], timeout=30.0)
        return pid

    def reachable(self, timeout: float = 10.0) -> bool:
        """Whether a fresh SSH session to the device opens and its status step answers."""
        from ..deploy.host import host_command

        try:
            host_command(self.plan, "status", timeout=timeout)
        except (DeployError, OSError):
            return False
        return True


def wait_until(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Faults:
    """The fault hooks of a run (see the module docstring). A method returns None when the rig
    has no way to inject that fault (the check is then reported as skipped)."""

    def __init__(self, hooks: Hooks, sim: dict[str, SimDevice] | None = None, broker: Mosquitto | None = None):
        self.hooks = hooks
        self.sim = sim or {}
        self.broker = broker

    @staticmethod
    def _command(template: str, device: RigDevice) -> str:
        """The hook's shell line: ``{host}``/``{address}`` replaced by shell-quoted values (other
        braces, e.g. ``${VAR}`` or awk's ``{print}``, are left alone)."""
        return template.replace("{host}", shlex.quote(device.name)).replace(
            "{address}", shlex.quote(device.plan.endpoint.address)
        )

    def _hook(self, command: str, device: RigDevice, timeout: float = 120.0) -> None:
        line = self._command(command, device)
        proc = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise HilError(f"hook {line!r} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-300:]}")

    def can_cut_network(self, device: RigDevice) -> bool:
        hooks = self.hooks
        return device.name in self.sim or (hooks.network_cut is not None and hooks.network_restore is not None)

    def cut_network(self, device: RigDevice) -> None:
        device.close_session()
        if device.name in self.sim:
            self.sim[device.name].kill()  # sshd stopped: the device is unreachable, the agent keeps running
        else:
            assert self.hooks.network_cut is not None
            self._hook(self.hooks.network_cut, device)

    def restore_network(self, device: RigDevice) -> None:
        if device.name in self.sim:
            self.sim[device.name].start()
        else:
            assert self.hooks.network_restore is not None
            self._hook(self.hooks.network_restore, device)

    def can_power_cycle(self) -> bool:
        return self.hooks.power_cycle is not None

    def power_cycle(self, device: RigDevice) -> None:
        assert self.hooks.power_cycle is not None
        device.close_session()
        self._hook(self.hooks.power_cycle, device, timeout=300.0)

    def can_stop_broker(self) -> bool:
        return self.broker is not None

    def broker_outage(self, seconds: float) -> None:
        assert self.broker is not None
        self.broker.stop()
        time.sleep(seconds)
        self.broker.start()

    def console(self, device: RigDevice, seconds: float = 5.0) -> str | None:
        """The last lines the serial console hook prints within ``seconds`` (for a failing device)."""
        if self.hooks.serial_console is None:
            return None
        line = self._command(self.hooks.serial_console, device)
        try:
            proc = subprocess.run(
                ["timeout", f"{seconds:g}", "sh", "-c", line], capture_output=True, text=True, timeout=seconds + 10
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"serial console hook failed: {exc}"
        return (proc.stdout + proc.stderr)[-4000:]
