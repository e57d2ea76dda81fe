"""The CLI walked with a new user's mistakes: each ends with exit code 2 and one line on stderr
that names the problem, never a Python traceback. Real processes (``python -m edgeds``), so what
is asserted is what a terminal or a CI log shows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

SAMPLE = Path(__file__).resolve().parents[2] / "models" / "surface-defect" / "samples"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeds.compile.pipeline import compile_model
    from edgeds.compile.tiny import write_tiny_model

    work = tmp_path_factory.mktemp("mistakes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_CACHE_DIR", str(work / "cache"))
        model = write_tiny_model(work / "src", validation_count=16, calibration_count=8)
        return compile_model(model, "x86-cpu", precision="fp32", out=work / "bundle", use_cache=False).bundle


@pytest.fixture(scope="module")
def banner_url() -> Iterator[str]:
    """A loopback port that answers every connection with an SSH banner, as a wrong port would."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _edgeds(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}  # the message's own line breaks, not the terminal's
    return subprocess.run(
        [sys.executable, "-m", "edgeds", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def _files(tmp: Path) -> dict[str, Path]:
    """The broken inputs: a missing file, text named .png, a cut-off PNG, text named .npy, a
    pickled-object .npy, and a file where a directory belongs."""
    real = next(iter(sorted(SAMPLE.glob("*.png"))))
    (tmp / "text.png").write_text("not an image\n")
    (tmp / "cut.png").write_bytes(real.read_bytes()[:200])
    (tmp / "text.npy").write_text("1 2 3\n")
    np.save(tmp / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp / "a-file").write_text("")
    with open(tmp / "archive.npy", "wb") as fh:
        np.savez(fh, x=np.zeros(3))
    return {p.name: p for p in tmp.iterdir()} | {"missing.png": tmp / "missing.png"}


CASES: list[tuple[str, Callable[[Path, dict[str, Path]], list[str]], str]] = [
    ("run a missing file", lambda b, f: ["run", str(b), "-i", str(f["missing.png"])], "no such file"),
    ("run text named .png", lambda b, f: ["run", str(b), "-i", str(f["text.png"])], "not an image"),
    ("run a truncated png", lambda b, f: ["run", str(b), "-i", str(f["cut.png"])], "truncated"),
    ("run a text .npy", lambda b, f: ["run", str(b), "-i", str(f["text.npy"])], "not a numpy .npy array"),
    ("run a pickled .npy", lambda b, f: ["run", str(b), "-i", str(f["objects.npy"])], "not a numpy .npy array"),
    ("run an .npz named .npy", lambda b, f: ["run", str(b), "-i", str(f["archive.npy"])], "an .npz archive"),
    (
        "bench --url of a server that is not HTTP",
        lambda b, f: ["bench", "--url", f["not-http"].read_text()],
        "no usable",
    ),
    ("run a missing bundle", lambda b, f: ["run", str(f["missing.png"]), "-i", str(f["cut.png"])], "missing.png"),
    ("bench --url with nothing there", lambda b, f: ["bench", "--url", "http://127.0.0.1:1"], "no server answers"),
    ("bench --duration 0", lambda b, f: ["bench", str(b), "--duration", "0"], "--duration"),
    ("bench --duration -1", lambda b, f: ["bench", str(b), "--duration", "-1"], "--duration"),
    ("bench --concurrency 1,x", lambda b, f: ["bench", str(b), "--concurrency", "1,x"], "--concurrency"),
    (
        "compile -o an existing file",
        lambda b, f: ["compile", str(SAMPLE.parent / "model.onnx"), "-p", "x86-cpu", "-o", str(f["a-file"])],
        "is a file",
    ),
    ("compile a missing model", lambda b, f: ["compile", str(f["missing.png"]), "-p", "x86-cpu"], "missing.png"),
    ("an unknown profile", lambda b, f: ["profiles", "show", "no-such-profile"], "no-such-profile"),
    ("verify a png as a bundle", lambda b, f: ["bundle", "verify", str(f["cut.png"])], "not a readable tar"),
    ("a png as the public key", lambda b, f: ["bundle", "verify", str(b), "-k", str(f["cut.png"])], "ed25519"),
    ("serve on port 99999", lambda b, f: ["serve", str(b), "--port", "99999"], "--port"),
    ("serve --max-batch 0", lambda b, f: ["serve", str(b), "--port", "0", "--max-batch", "0"], "max_batch_size"),
    ("serve --preferred 99", lambda b, f: ["serve", str(b), "--port", "0", "--preferred", "99"], "outside 1..max"),
    ("an image bundle asked a prompt", lambda b, f: ["run", str(b), "--prompt", "hi"], "not causal-lm"),
    ("logs --wait without --mqtt", lambda b, f: ["logs", "--target", "local", "--wait", "1"], "--wait"),
    ("logs --mqtt --follow", lambda b, f: ["logs", "--target", "local", "--mqtt", "--follow"], "--follow"),
    ("logs --mqtt of an unknown host", lambda b, f: ["logs", "-t", "local", "--mqtt", "--host", "nope"], "'nope'"),
]


@pytest.mark.parametrize(("what", "argv", "says"), CASES, ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_and_exit_2(
    what: str,
    argv: Callable[[Path, dict[str, Path]], list[str]],
    says: str,
    bundle: Path,
    banner_url: str,
    tmp_path: Path,
) -> None:
    files = _files(tmp_path)
    files["not-http"] = tmp_path / "not-http"
    files["not-http"].write_text(banner_url)
    args = argv(bundle, files)
    proc = _edgeds(*args, cwd=tmp_path)
    assert proc.returncode == 2, (what, proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert says in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], proc.stderr
