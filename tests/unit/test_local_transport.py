"""The local transport (child processes and copies) and the local target's one host plan."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeds.config import load_target
from edgeds.deploy.host import open_device, open_session
from edgeds.deploy.local import LocalConnection
from edgeds.deploy.targets import LOCAL_DIR_ENV, LOCAL_HOST, host_plans
from edgeds.errors import ConfigError, ConnectionFailed, DeployError, DeviceError

ECHO_LINES = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"


def test_run_passes_stdin_and_reports_stderr_lines_as_they_come() -> None:
    lines: list[str] = []
    with LocalConnection("here") as conn:
        script = "import sys; data = sys.stdin.read(); print('e1', file=sys.stderr); print(data[::-1]); sys.exit(3)"
        result = conn.run([sys.executable, "-c", script], stdin=b"abc", on_stderr_line=lines.append)
    assert result.exit_code == 3
    assert result.stdout == b"cba\n"
    assert lines == ["e1"] and result.stderr == b"e1\n"


def test_run_past_its_timeout_fails_and_leaves_no_child() -> None:
    conn = LocalConnection("here")
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="did not finish"):
        conn.run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - started < 10
    assert not conn._children
    conn.close()


def test_close_from_another_thread_ends_a_running_command() -> None:
    conn = LocalConnection("here")
    threading.Timer(0.3, conn.close).start()
    with pytest.raises(ConnectionFailed, match="closed"):
        conn.run(["sleep", "30"], timeout=30)
    with pytest.raises(ConnectionFailed, match="closed"):
        conn.run(["true"])
    assert not conn.is_active()


def test_close_ends_a_command_whose_pipes_another_process_holds(tmp_path: Path) -> None:
    """A step relayed through the local agent: the process edgeds started is killed on close, but
    the pipes stay open in a process outside its group, so no end of output ever comes."""
    pid_file = tmp_path / "holder.pid"
    script = f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 30' & sleep 30"
    conn = LocalConnection("here")
    threading.Timer(0.5, conn.close).start()
    try:
        with pytest.raises(ConnectionFailed, match="closed"):
            conn.run(["sh", "-c", script], timeout=20)
    finally:
        if pid_file.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_process_answers_line_by_line_until_it_is_closed() -> None:
    with LocalConnection("here") as conn:
        proc = conn.start([sys.executable, "-c", ECHO_LINES])
        assert proc.request(b"one", timeout=10) == b"ONE"
        assert proc.request(b"two\n", timeout=10) == b"TWO"
        proc.close()
        dead = conn.start([sys.executable, "-c", "import sys; print('bye', file=sys.stderr)"])
        with pytest.raises(ConnectionFailed, match="ended without answering"):
            dead.request(b"hello", timeout=10)
        dead.close()


def test_stream_hands_over_output_until_stopped() -> None:
    stop = threading.Event()
    seen = bytearray()

    def on_output(data: bytes) -> None:
        seen.extend(data)
        if b"3" in seen:
            stop.set()

    script = "import time\nfor i in range(1000):\n    print(i, flush=True)\n    time.sleep(0.01)\n"
    with LocalConnection("here") as conn:
        code = conn.stream([sys.executable, "-c", script], on_output, stop)
        assert b"0\n1\n2\n3" in seen
        assert code != 0  # the child was ended with the stream (killed, not its own exit)
        assert conn.stream(["sh", "-c", "echo done; exit 4"], lambda data: None) == 4


def test_upload_copies_whole_and_write_file_replaces(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 300_000)
    ticks: list[tuple[int, int]] = []
    with LocalConnection("here") as conn:
        target = str(tmp_path / "dest.bin")
        assert conn.upload(source, target, progress=lambda done, total: ticks.append((done, total))) == 300_000
        assert Path(target).read_bytes() == source.read_bytes()
        assert ticks[-1] == (300_000, 300_000)
        assert not Path(target + ".part").exists()
        assert conn.upload(source, target) == 0  # already there with its size
        conn.write_file(str(tmp_path / "small"), b"one")
        conn.write_file(str(tmp_path / "small"), b"two")
        assert (tmp_path / "small").read_bytes() == b"two"
        with pytest.raises(DeviceError, match="writing"):
            conn.write_file(str(tmp_path / "no-such-dir" / "f"), b"")


def test_a_missing_program_says_nothing_is_installed(tmp_path: Path) -> None:
    with LocalConnection("local") as conn, pytest.raises(DeviceError, match="nothing is installed there yet"):
        conn.run([str(tmp_path / "bin" / "python"), "-c", "pass"])


def test_the_local_target_has_one_host_reached_without_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCAL_DIR_ENV, str(tmp_path / "here"))
    monkeypatch.chdir(tmp_path)
    (plan,) = host_plans(load_target("local"), None)
    assert plan.local and plan.host.name == LOCAL_HOST
    assert plan.install_dir == str(tmp_path / "here")
    assert host_plans(load_target("local"), None, [LOCAL_HOST])[0].local
    with pytest.raises(ConfigError, match="no host 'other'"):
        host_plans(load_target("local"), None, ["other"])
    with pytest.raises(DeployError, match="without SSH"):
        open_session(plan)
    session = open_device(plan)
    try:
        assert session.install_dir == str(tmp_path / "here")
        assert isinstance(session.conn, LocalConnection)
    finally:
        session.conn.close()
    monkeypatch.delenv(LOCAL_DIR_ENV)
    (plan,) = host_plans(load_target("local"), None)
    assert plan.install_dir == str(Path("~/.local/share/edgeds").expanduser())
