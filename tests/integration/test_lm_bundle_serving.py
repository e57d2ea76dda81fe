"""A causal-lm bundle served as it was compiled: ``edgeds serve BUNDLE`` with the real ``openai``
client, ``edgeds run BUNDLE --prompt``, ``edgeds chat BUNDLE``; the profile's settings and the
card's generation defaults read from the manifest; an artifact that cannot open here skipped for
the next (a re-signed copy of the shared bundle); readiness, runtime failures and clients that
go away."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeds.bundle import generate_keypair, load_bundle, pack_bundle, sign_bundle
from edgeds.errors import BundleVerificationError
from edgeds.runtime.lm import LMEngine, SamplingParams
from edgeds.runtime.lm.loading import is_language_model, open_engine
from edgeds.runtime.lm.server import LMServer

from ._serve import json_banner

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("openvino_genai")

pytestmark = pytest.mark.slow  # the shared bundle is compiled once per session (cached exports)

EDGEDS = [sys.executable, "-m", "edgeds"]
MESSAGES = [{"role": "user", "content": "Shift summary for station 3?"}]


def _manifest(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / "manifest.json").read_text()))


def _client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def signed_copy(lm_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``signed_copy(edit)``: a copy of the shared bundle whose manifest ``edit(manifest)`` changed,
    signed again with a key made here; returns (bundle, public key)."""
    keys = tmp_path_factory.mktemp("lm-keys")
    private, public = generate_keypair(keys)

    def make(edit: Any) -> tuple[Path, Path]:
        root = tmp_path_factory.mktemp("lm-copy") / "bundle"
        shutil.copytree(lm_bundle, root)
        manifest = _manifest(root)
        edit(manifest)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        sign_bundle(root, private)
        return root, public

    return make


def test_serve_a_bundle_with_the_openai_client(lm_bundle: Path) -> None:
    manifest = _manifest(lm_bundle)
    command = [*EDGEDS, "serve", str(lm_bundle), "--port", "0", "--threads", "1", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        info = json_banner(proc.stdout)
        assert info["task"] == "causal-lm" and info["runtime"] == "openvino-genai"
        assert info["model"] == manifest["model"]["name"] and info["version"] == manifest["model"]["version"]
        assert info["release"] == str(manifest["version"])
        assert info["artifact"].startswith("artifact 0 (openvino-genai int4") and info["skipped"] == []
        # the profile's llm settings and the card's generation defaults, from the manifest
        assert info["max_num_seqs"] == manifest["profile"]["llm"]["max_num_seqs"] == 4
        assert info["max_queue"] == manifest["llm"]["max_queue"]
        assert info["max_tokens"] == manifest["llm"]["generation"]["max_new_tokens"]
        client = _client(info["url"])
        (model,) = [m.id for m in client.models.list()]
        answer = client.chat.completions.create(model=model, messages=MESSAGES)
        assert answer.choices[0].finish_reason in ("stop", "length")
        assert 0 < answer.usage.completion_tokens <= info["max_tokens"]  # no max_tokens: the card's
        pieces = []
        for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True, max_tokens=4):
            pieces += [c.delta.content or "" for c in chunk.choices]
        assert (
            "".join(pieces)
            == client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=4).choices[0].message.content
        )
        assert httpx.get(f"{info['url']}/v2/health/ready", timeout=10).json() == {"ready": True}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_run_a_bundle_with_a_prompt(lm_bundle: Path) -> None:
    default = _manifest(lm_bundle)["llm"]["generation"]["max_new_tokens"]
    out = subprocess.run(
        [*EDGEDS, "run", str(lm_bundle), "--prompt", "Status?", "--threads", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    completion = json.loads(out.stdout)
    assert completion["object"] == "chat.completion"
    assert 0 < completion["usage"]["completion_tokens"] <= default
    short = subprocess.run(
        [*EDGEDS, "run", str(lm_bundle), "--prompt", "Status?", "--max-tokens", "2", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert short.stdout.endswith("\n") and "generated tokens" in short.stderr


def test_chat_with_a_bundle_on_stdin(lm_bundle: Path) -> None:
    chat = subprocess.run(
        [*EDGEDS, "chat", str(lm_bundle), "--threads", "1", "--max-tokens", "4", "--json"],
        input="Status of station 3?\n/reset\nAnd station 4?\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answers = [json.loads(line) for line in chat.stdout.splitlines()]
    assert [a["role"] for a in answers] == ["assistant", "assistant"]


def test_the_profiles_max_num_seqs_is_honoured_from_the_bundle(lm_bundle: Path) -> None:
    manifest = _manifest(lm_bundle)
    cap = manifest["profile"]["llm"]["max_num_seqs"]
    assert cap == manifest["llm"]["kv_plan"]["max_num_seqs"] == 4  # the test profile's, not the default 8
    with LMEngine.from_bundle(lm_bundle, options={"num_threads": 1}) as engine:
        assert engine.plan.max_num_seqs == engine.spec.max_num_seqs == cap
        assert engine.release == str(manifest["version"]) and engine.version == manifest["model"]["version"]
        prompt = engine.chat_prompt(MESSAGES)
        room = engine.spec.context_length - len(engine.encode(prompt))
        long = SamplingParams(max_tokens=room, ignore_eos=True)
        generations = [engine.submit(prompt, long) for _ in range(cap + 1)]
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                stats = engine.stats()
                if stats.running == cap and stats.waiting == 1:
                    break
                time.sleep(0.005)
            assert (stats.running, stats.waiting) == (cap, 1)
        finally:
            for generation in generations:
                generation.cancel()
    # an explicit override plans afresh
    with LMEngine.from_bundle(lm_bundle, max_num_seqs=2, max_queue=3) as engine:
        assert engine.plan.max_num_seqs == engine.spec.max_num_seqs == 2 and engine.max_queue == 3


def test_a_first_artifact_that_cannot_open_here_falls_to_the_next(lm_bundle: Path, signed_copy: Any) -> None:
    def unknown_device_first(manifest: dict[str, Any]) -> None:
        first = dict(manifest["artifacts"][0])
        first["options"] = {**first["options"], "device": "NO_SUCH_DEVICE"}
        first["device"] = "NO_SUCH_DEVICE"
        manifest["artifacts"].insert(0, first)

    bundle, key = signed_copy(unknown_device_first)
    engine = open_engine(bundle, public_key=key, threads=1)
    try:
        assert engine.artifact_index == 1 and engine.artifact is not None
        assert engine.artifact.startswith("artifact 1 (openvino-genai int4 on CPU")
        (why,) = engine.skipped
        assert why.startswith("artifact 0 (openvino-genai int4 on NO_SUCH_DEVICE") and "cannot open" in why
        generation = engine.submit(engine.chat_prompt(MESSAGES), SamplingParams(max_tokens=2))
        assert generation.result(60).usage.completion_tokens > 0
    finally:
        engine.close()
    # the serve banner says the same
    command = [*EDGEDS, "serve", str(bundle), "--key", str(key), "--port", "0", "--threads", "1", "--json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        info = json_banner(proc.stdout)
        assert info["artifact"].startswith("artifact 1") and info["skipped"][0].startswith("artifact 0")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_an_unknown_runtime_is_skipped_when_the_artifact_is_chosen(lm_bundle: Path, signed_copy: Any) -> None:
    def unknown_runtime_first(manifest: dict[str, Any]) -> None:
        manifest["artifacts"].insert(0, {**manifest["artifacts"][0], "runtime": "tensorrt-llm", "options": {}})

    bundle, key = signed_copy(unknown_runtime_first)
    engine = LMEngine.from_bundle(bundle, public_key=key)
    try:
        assert engine.artifact_index == 1 and engine.runtime == "openvino-genai"
        assert engine.skipped[0].startswith("artifact 0 (tensorrt-llm") and "unknown LM runtime" in engine.skipped[0]
    finally:
        engine.close()  # never started: closes the bundle it opened
    with load_bundle(bundle, key) as opened:  # the re-signed copy verifies; the original key does not sign it
        assert opened.manifest.artifacts[0].runtime == "tensorrt-llm"
    _, other = generate_keypair(bundle.parent / "other-keys")
    with pytest.raises(BundleVerificationError):
        LMEngine.from_bundle(bundle, public_key=other)


def test_a_bundle_tar_is_served_from_its_extraction(lm_bundle: Path, tmp_path: Path) -> None:
    tar = pack_bundle(lm_bundle, tmp_path / "lm.tar")
    assert is_language_model(tar) and is_language_model(lm_bundle)
    engine = open_engine(tar, threads=1)
    try:
        extracted = engine.model_dir
        assert extracted.is_dir() and not extracted.is_relative_to(lm_bundle)
        assert engine.submit(engine.chat_prompt(MESSAGES), SamplingParams(max_tokens=2)).result(60).usage
    finally:
        engine.close()
    assert not extracted.exists()  # the engine opened the tar: its extraction went with it


@pytest.fixture
def served(lm_bundle: Path) -> Iterator[tuple[LMEngine, LMServer]]:
    """A started engine of the shared bundle behind a started LM server (one per test)."""
    engine = open_engine(lm_bundle, threads=1)
    server = LMServer(engine, port=0).start()
    try:
        yield engine, server
    finally:
        server.stop()
        engine.close()


def test_health_says_not_ready_after_close(served: tuple[LMEngine, LMServer]) -> None:
    engine, server = served
    assert engine.ready and not engine.closed
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
    engine.close()
    assert not engine.ready and engine.closed
    ready = httpx.get(f"{server.url}/v2/health/ready", timeout=10)
    assert ready.status_code == 400 and ready.json() == {"ready": False}
    assert httpx.get(f"{server.url}/v2/models/{engine.name}/ready", timeout=10).json() == {"ready": False}


def test_a_runtime_failure_reaches_a_stream_as_an_openai_error(served: tuple[LMEngine, LMServer]) -> None:
    engine, server = served
    ids = engine.encode("Status of station 3?")
    engine.backend.close()  # the runtime is gone under the engine: adding the next sequence fails the step loop
    with pytest.raises(openai.APIError, match="the runtime failed this request"):
        for _ in _client(server.url).completions.create(model=engine.name, prompt=ids, stream=True):
            pass
    assert not engine.ready
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": False}


def test_a_runtime_failure_answers_a_whole_request_with_500(served: tuple[LMEngine, LMServer]) -> None:
    engine, server = served
    ids = engine.encode("Status of station 3?")
    engine.backend.close()  # token ids in: the request reaches the step loop, which fails adding it
    with pytest.raises(openai.InternalServerError, match="the runtime failed this request"):
        _client(server.url).completions.create(model=engine.name, prompt=ids)
    answer = httpx.post(f"{server.url}/v2/models/{engine.name}/generate", json={"text_input": "Status?"}, timeout=30)
    assert answer.status_code == 503  # the engine closed itself: nothing more is taken
    assert engine.failed and engine.stats().running == 0  # nothing is left counted as running
    live = httpx.get(f"{server.url}/v2/health/live", timeout=10)
    assert live.status_code == 503 and live.json() == {"live": False}  # a supervisor restarts it


def test_a_whole_request_whose_client_goes_away_is_cancelled(served: tuple[LMEngine, LMServer]) -> None:
    engine, server = served
    prompt = "Status of station 3?"
    room = engine.spec.context_length - len(engine.encode(prompt))
    body = json.dumps({"model": engine.name, "prompt": prompt, "max_tokens": room, "ignore_eos": True}).encode()
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        deadline = time.monotonic() + 30
        while engine.stats().running == 0 and sum(engine.stats().requests.values()) == 0:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.005)
    deadline = time.monotonic() + 30
    while sum(engine.stats().requests.values()) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = engine.stats()
    assert stats.requests["abort"] == sum(stats.requests.values()) == 1 and stats.running == 0
