"""Simulated devices: one real OpenSSH ``sshd`` per device on its own loopback address.

Device ``N`` listens on ``127.0.10.N`` port ``2200 + N`` (the next free port if taken), key
auth only (``PasswordAuthentication no``, ``UsePAM no``), ``Subsystem sftp internal-sftp``.
When this process runs as root, every device gets its own Unix user ``edgeds-simN``
(``useradd``; ``usermod -p '*'`` unlocks it for key auth) whose home directory is the device
root; otherwise all devices log in as the current user and each gets its own root directory.
The install dir of a device is ``<root>/edgeds``.

The fleet generates the host keys (pinned into a ``known_hosts`` file it writes) and the
client key, and writes a target YAML describing the devices, so the real deploy path
(RejectPolicy + pinned keys) is what tests exercise. Addresses are loopback only.

Lifecycle::

    with SimFleet(3) as fleet:          # creates users, keys, sshd configs; starts every sshd
        fleet.target_path               # targets YAML for edgeds deploy/status/rollback
        fleet.devices[0].kill()         # SIGKILL sshd and its live sessions (a network cut)
        fleet.devices[0].start()        # back again, same host key
    # on exit: every process of the device users is killed, sshd stopped, files removed

Only :meth:`SimDevice.stop` / :meth:`SimFleet.close` end the device's agent; :meth:`kill`
leaves it running, like a network outage that does not power the device off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import HilError

log = logging.getLogger(__name__)

SSHD = Path("/usr/sbin/sshd")
ADDRESS_PREFIX = "127.0.10."
USER_PREFIX = "edgeds-sim"


def _keypair(path: Path) -> str:
    """Write an OpenSSH ed25519 private key at ``path`` (0600); return the public line."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.with_suffix(".pub").write_bytes(public + b"\n")
    return public.decode()


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _accessible_to_others(path: Path) -> bool:
    """Whether every directory above ``path`` lets other users through (o+x)."""
    path = path.resolve()
    return all(parent.stat().st_mode & 0o001 for parent in path.parents)


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie's parent may never reap it in a container)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def _system_python() -> Path | None:
    """The distribution's python3 of this interpreter's X.Y, reachable by every user."""
    candidate = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    return candidate if candidate.exists() and _accessible_to_others(candidate) else None


def _ensure_user(name: str, home: Path) -> tuple[int, int, bool]:
    """Create (or re-home) the device user, unlocked for key auth only; True if created now."""
    created = False
    try:
        pwd.getpwnam(name)
        subprocess.run(["usermod", "-d", str(home), name], check=True, capture_output=True)
    except KeyError:
        created = True
        subprocess.run(
            ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--user-group", name],
            check=True,
            capture_output=True,
        )
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid, created


@dataclass
class SimDevice:
    """One simulated device: an sshd on ``address:port`` logging in as ``user``."""

    name: str
    index: int
    address: str
    port: int
    user: str
    root: Path
    sim_dir: Path
    uid: int
    gid: int
    host_public_key: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def install_dir(self) -> Path:
        return self.root / "edgeds"

    @property
    def log_path(self) -> Path:
        return self.sim_dir / "sshd.log"

    @property
    def config_path(self) -> Path:
        return self.sim_dir / "sshd_config"

    def write_config(self, authorized_keys: Path) -> None:
        host_key = self.sim_dir / "ssh_host_ed25519_key"
        if not host_key.exists():
            self.host_public_key = _keypair(host_key)
        else:
            self.host_public_key = host_key.with_suffix(".pub").read_text().strip()
        lines = [
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {host_key}",
            f"PidFile {self.sim_dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"PermitRootLogin {'prohibit-password' if self.user == 'root' else 'no'}",
            f"AllowUsers {self.user}",
            "Subsystem sftp internal-sftp",
            "MaxStartups 64:30:128",
            "MaxSessions 32",
            "LoginGraceTime 20",
            "ClientAliveInterval 5",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "PrintMotd no",
            "UseDNS no",
            "LogLevel INFO",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd (no-op if running) and wait until it accepts TCP connections."""
        if self.running:
            return
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd_log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.config_path)],
            stdout=sshd_log,
            stderr=sshd_log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        sshd_log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HilError(f"sshd for {self.name} exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), 0.5):
                return
            time.sleep(0.05)
        raise HilError(f"sshd for {self.name} did not listen on {self.address}:{self.port} in {timeout}s")

    def _session_processes(self) -> list[psutil.Process]:
        if self._proc is None:
            return []
        try:
            return [psutil.Process(self._proc.pid), *psutil.Process(self._proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the sshd listener and every live SSH session (a network cut, not a power cut).

        Processes the sessions had detached (the agent) keep running.
        """
        for proc in self._session_processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        self._proc = None

    def agent_pid(self) -> int | None:
        """The pid of the agent running on this device (from its pid file), if alive."""
        pid_file = self.install_dir / "run" / "agent.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def kill_agent(self, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to the device's agent; True if there was one."""
        pid = self.agent_pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return True

    def stop(self) -> None:
        """Stop sshd and every process of the device (agent included)."""
        self.kill()
        victims: list[psutil.Process] = []
        if self.user != pwd.getpwuid(os.geteuid()).pw_name:
            for proc in psutil.process_iter(["username"]):
                if proc.info["username"] == self.user:
                    victims.append(proc)
        else:
            with contextlib.suppress(OSError):
                (self.install_dir / "run" / "supervisor.stop").touch()
            for pid_file in ("supervisor.pid", "agent.pid"):
                with contextlib.suppress(OSError, ValueError, IndexError, psutil.NoSuchProcess):
                    victims.append(psutil.Process(int((self.install_dir / "run" / pid_file).read_text().split()[0])))
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in victims):
            time.sleep(0.02)

    def host_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "install_dir": str(self.install_dir),
            "agent_host": self.address,
        }


class SimFleet:
    """``count`` simulated devices sharing one client key, ``known_hosts`` and target YAML.

    ``base_dir`` defaults to a fresh directory in the system temp dir (made world-traversable:
    device users must reach their homes). Files are removed by :meth:`close` unless ``keep``.
    """

    def __init__(
        self,
        count: int,
        base_dir: Path | None = None,
        *,
        name_prefix: str = "sim",
        target_name: str = "sim",
        profile: str = "x86-cpu",
        mqtt_url: str | None = None,
        dedicated_users: bool | None = None,
        keep: bool = False,
    ) -> None:
        if not SSHD.exists():
            raise HilError(f"{SSHD} is missing: install Debian's openssh-server (make system-deps)")
        self.count = count
        self.keep = keep
        self._own_base = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="edgeds-sim-")) if base_dir is None else Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        self.target_name = target_name
        self.profile = profile
        self.mqtt_url = mqtt_url
        is_root = os.geteuid() == 0
        if dedicated_users is None:
            dedicated_users = (
                is_root
                and _system_python() is not None
                and all(_accessible_to_others(p) for p in (*_site_dirs(), Path(__file__)))
            )
        if dedicated_users and not is_root:
            raise HilError("dedicated device users need root (useradd)")
        self.dedicated_users = dedicated_users
        self.client_key = self.base_dir / "client_ed25519"
        self.known_hosts = self.base_dir / "known_hosts"
        self.target_path = self.base_dir / f"{target_name}.yaml"
        self.devices: list[SimDevice] = []
        self._name_prefix = name_prefix
        self._started = False
        self._created_users: list[str] = []

    # -- setup -----------------------------------------------------------------------------

    def _pick_indices(self) -> list[tuple[int, int]]:
        picked: list[tuple[int, int]] = []
        for index in range(1, 250):
            address = f"{ADDRESS_PREFIX}{index}"
            port = 2200 + index if index < 100 else 22000 + index
            if _port_free(address, port) and _port_free(address, 8000):
                picked.append((index, port))
                if len(picked) == self.count:
                    return picked
        raise HilError(f"no {self.count} free loopback addresses in {ADDRESS_PREFIX}0/24")

    def setup(self) -> None:
        """Create keys, users and sshd configs (no process is started)."""
        public_client = _keypair(self.client_key)
        authorized = self.base_dir / "authorized_keys"
        authorized.write_text(public_client + "\n")
        authorized.chmod(0o644)
        me = pwd.getpwuid(os.geteuid())
        for number, (index, port) in enumerate(self._pick_indices(), start=1):
            name = f"{self._name_prefix}-{number}"
            sim_dir = self.base_dir / name
            sim_dir.mkdir(mode=0o755, exist_ok=True)
            sim_dir.chmod(0o755)
            root = sim_dir / "root"
            root.mkdir(exist_ok=True)
            if self.dedicated_users:
                user = f"{USER_PREFIX}{index}"
                uid, gid, created = _ensure_user(user, root)
                if created:
                    self._created_users.append(user)
                os.chown(root, uid, gid)
                root.chmod(0o755)
            else:
                user, uid, gid = me.pw_name, me.pw_uid, me.pw_gid
            device = SimDevice(name, index, f"{ADDRESS_PREFIX}{index}", port, user, root, sim_dir, uid, gid)
            device.write_config(authorized)
            self.devices.append(device)
        self.write_known_hosts()
        self.write_target()

    def write_known_hosts(self, path: Path | None = None) -> Path:
        """Pin every device's host key (OpenSSH ``[addr]:port key`` lines)."""
        path = path or self.known_hosts
        lines = [f"[{d.address}]:{d.port} {d.host_public_key}" for d in self.devices]
        path.write_text("\n".join(lines) + "\n")
        return path

    def write_target(self, path: Path | None = None, **overrides: Any) -> Path:
        """Write the target YAML for the fleet (``overrides`` replace top-level keys)."""
        path = path or self.target_path
        doc: dict[str, Any] = {
            "schema": 1,
            "name": self.target_name,
            "description": f"{self.count} simulated device(s) on loopback (edgeds.sim)",
            "profile": self.profile,
            "hosts": [d.host_entry() for d in self.devices],
            "ssh": {
                "user": self.devices[0].user if self.devices else "edgeds",
                "key": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "connect_timeout_s": 5.0,
            },
            "install_dir": "~/edgeds",
            "rollout": {"canary": 1, "batch": "50%", "max_failures": "0", "host_timeout_s": 300},
            "agent": {"http_host": "127.0.0.1", "http_port": 8000},
        }
        if self.mqtt_url:
            doc["mqtt"] = {"url": self.mqtt_url, "protocol": "3.1.1"}
        doc.update(overrides)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def device_python(self) -> Path:
        """An interpreter every device user can run, with this process's packages (edgeds included).

        Sim rigs use it as the agent environment (``edgeds device setup --python``) instead of
        installing onnxruntime & co. into a venv per device. It is a venv of the system Python
        whose ``.pth`` adds this interpreter's site-packages (same X.Y ABI) and, first on the path,
        the directory this process imports ``edgeds`` from: the devices run the code under test
        (a checkout on ``PYTHONPATH`` included, which an SSH session would not inherit). Without
        dedicated users and without such a system Python it is simply ``sys.executable``.
        """
        system = _system_python()
        if not self.dedicated_users and system is None:
            return Path(sys.executable)
        venv = self.base_dir / "shared-venv"
        python = venv / "bin" / "python"
        if not python.exists():
            if system is None:
                raise HilError("no system python3 of this X.Y version for the shared device environment")
            subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
            version = f"python{sys.version_info.major}.{sys.version_info.minor}"
            site = venv / "lib" / version / "site-packages"
            lines = [f"import site; site.addsitedir({str(d)!r})" for d in _site_dirs()]
            source = str(Path(__file__).resolve().parents[2])  # the directory holding this edgeds package
            lines.append(f"import sys; sys.path.insert(0, {source!r})")
            (site / "edgeds-shared-env.pth").write_text("\n".join(lines) + "\n")
        return python

    def start(self) -> None:
        if not self.devices:
            self.setup()
        for device in self.devices:
            device.start()
        self._started = True

    def close(self) -> None:
        """Stop every device (agents included) and remove the fleet's files unless ``keep``."""
        for device in self.devices:
            try:
                device.stop()
            except Exception:  # one device that does not stop must not leave the others running
                log.warning("sim: stopping %s failed", device.name, exc_info=True)
        if not self.keep:
            for user in self._created_users:  # users this fleet added; pre-existing ones are left alone
                subprocess.run(["userdel", user], capture_output=True)
            self._created_users.clear()
        if self._own_base and not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> SimFleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __getitem__(self, index: int) -> SimDevice:
        return self.devices[index]

    def by_name(self, name: str) -> SimDevice:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeds.sim.devices N`` — run N devices until Ctrl-C (for manual poking)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("count", type=int, nargs="?", default=2)
    args = parser.parse_args(argv)
    with SimFleet(args.count, keep=True) as fleet:
        print(f"target: {fleet.target_path}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
