"""``edgeds serve`` of a language model, ``edgeds chat URL`` and ``edgeds run --prompt``: real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ._serve import json_banner

pytest.importorskip("openvino_genai")

EDGEDS = [sys.executable, "-m", "edgeds"]


@pytest.fixture(scope="module")
def model_dir(lm_openvino_dir: Callable[[str], Path]) -> Path:
    return lm_openvino_dir("int8")


def test_serve_then_chat_against_its_url(model_dir: Path) -> None:
    command = [*EDGEDS, "serve", str(model_dir), "--port", "0", "--threads", "1", "--json", "--api-key", "k-12345678"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        info = json_banner(proc.stdout)
        assert info["task"] == "causal-lm" and info["runtime"] == "openvino-genai" and info["api_keys"] == 1
        chat = subprocess.run(
            [*EDGEDS, "chat", info["url"], "--api-key", "k-12345678", "--max-tokens", "4", "--json"],
            input="Status of station 3?\n" + "word " * 2000 + "\n/reset\nAnd station 4?\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        answers = [json.loads(line) for line in chat.stdout.splitlines()]
        assert [a["role"] for a in answers] == ["assistant", "assistant"]  # the turn over the context is dropped
        assert "400" in chat.stderr and "/reset" in chat.stderr and "Traceback" not in chat.stderr
        refused = subprocess.run(
            [*EDGEDS, "chat", info["url"], "--api-key", "wrong-key"],
            input="hi\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0 and "401" in refused.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_run_prompt_prints_the_completion(model_dir: Path) -> None:
    out = subprocess.run(
        [*EDGEDS, "run", str(model_dir), "--prompt", "Status?", "--max-tokens", "3", "--threads", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    completion = json.loads(out.stdout)
    assert completion["object"] == "chat.completion"
    assert 0 < completion["usage"]["completion_tokens"] <= 3
    streamed = subprocess.run(
        [*EDGEDS, "run", str(model_dir), "--prompt", "Status?", "--max-tokens", "3", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert streamed.stdout.endswith("\n") and "generated tokens" in streamed.stderr


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--threads", "0"], "--threads"),
        (["--seed", "-1"], "--seed"),
        (["--key", "pub.pem"], "not a signed bundle"),
    ],
)
def test_run_refuses_bad_options_in_one_line(model_dir: Path, extra: list[str], said: str) -> None:
    out = subprocess.run(
        [*EDGEDS, "run", str(model_dir), "--prompt", "Status?", "--max-tokens", "2", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert said in out.stderr and "Traceback" not in out.stderr


def test_serve_refuses_zero_threads(model_dir: Path) -> None:
    out = subprocess.run(
        [*EDGEDS, "serve", str(model_dir), "--port", "0", "--threads", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "--threads" in out.stderr and "Traceback" not in out.stderr
