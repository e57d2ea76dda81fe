"""The agent as a deploy step sees it: make it load a release, then check the release it serves.

:func:`reload_agent` sends the agent SIGHUP and waits on its status file (``run/agent.json``)
until it serves the release or reports failing to. :func:`health_check` then asks the agent's
Open Inference Protocol server whether it is ready, runs the bundle's golden inputs through it
(outputs within the manifest's tolerances) and measures p99 latency over N single requests
against the bound. Without a running agent the release is opened in-process instead. Every
failure raises :class:`edgeds.errors.StepFailed`; the apply step then rolls back.

The checks call the agent as any client must: over HTTPS when it serves TLS (trusting exactly
the certificate it serves, named in ``agent-config.json``) and with its first API key when it
asks for one (:func:`agent_access`).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ...errors import EdgedsError, StepFailed
from ...runtime.auth import client_tls_context, read_key_file
from .protocol import Emit, quiet
from .store import Store, agent_pid


def reload_agent(store: Store, release_id: str | None, timeout: float, emit: Emit = quiet) -> dict[str, Any]:
    """SIGHUP the agent and wait until it serves ``release_id`` (or reports failing to)."""
    pid = agent_pid(store)
    if pid is None:
        return {"agent": "not_running"}
    before = store.agent_status().get("generation", 0)
    os.kill(pid, signal.SIGHUP)
    emit("reload_sent", {"pid": pid, "release": release_id})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = store.agent_status()
        if not status["running"]:
            raise StepFailed(f"the agent (pid {pid}) died while loading {release_id}")
        if status.get("generation", 0) > before and status.get("attempted") == release_id:
            if status.get("state") == "serving" and status.get("release") == release_id:
                return {"agent": "serving", "load_s": status.get("load_s")}
            if status.get("state") in ("failed", "serving", "idle"):
                raise StepFailed(f"the agent failed to load {release_id}: {status.get('error')}")
        time.sleep(0.05)
    raise StepFailed(f"the agent did not load {release_id} within {timeout:.0f}s")


def agent_url(store: Store) -> str | None:
    """``http(s)://host:port`` of the running agent's server, from its status file; None when it does not run."""
    status = store.agent_status()
    http = status.get("http")
    scheme = status.get("scheme") or "http"
    return f"{scheme}://{http}" if http and status.get("running") else None


def agent_access(store: Store) -> tuple[dict[str, str], ssl.SSLContext | None]:
    """The header fields (the API key) and TLS context a client of this device's agent needs, from
    ``agent-config.json``; StepFailed when the key file or certificate named there cannot be read."""
    try:
        config = json.loads((store.root / "agent-config.json").read_text())
    except (OSError, ValueError):
        return {}, None
    try:
        key_file = config.get("api_keys_file")
        headers = {"Authorization": f"Bearer {read_key_file(key_file)[0]}"} if key_file else {}
        tls = config.get("tls")
        return headers, client_tls_context(tls["cert"]) if tls else None
    except (EdgedsError, OSError, ssl.SSLError) as exc:
        raise StepFailed(f"cannot call the agent as a client: {exc}") from exc


def agent_ready(store: Store, timeout: float = 3.0) -> bool | None:
    """Whether the running agent answers ``/v2/health/ready`` with 200; None without an agent or an answer."""
    url = agent_url(store)
    if url is None:
        return None
    try:
        return _http(f"{url}/v2/health/ready", timeout=timeout, access=agent_access(store))[0] == 200
    except (OSError, ValueError, StepFailed):  # no HTTP answer (refused, timed out, garbled): readiness unknown
        return None


def _http(
    url: str,
    body: bytes | None = None,
    timeout: float = 10.0,
    access: tuple[dict[str, str], ssl.SSLContext | None] = ({}, None),
) -> tuple[int, bytes]:
    """Status and body of a GET (a JSON POST with ``body``) with ``access`` (:func:`agent_access`);
    an HTTP error status is an answer, not an exception."""
    headers, context = access
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET", headers=headers)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _compare(outputs: dict[str, Any], golden: dict[str, Any], atol: float, rtol: float, min_cos: float) -> None:
    from ...runtime.golden import golden_mismatch

    why = golden_mismatch(outputs, golden, atol, rtol, min_cos)
    if why is not None:
        raise StepFailed(f"golden check: {why}")


def _in_process(
    root: Path, manifest: Any, image_input: str | None, extra: dict[str, Any], engines: Path
) -> dict[str, Any]:
    """Open the release as the agent would (the first artifact that opens here) and compare its
    outputs on the golden inputs of that artifact with the golden outputs."""
    import numpy as np

    from ...bundle import load_bundle
    from ...config import Batching
    from ...runtime.engine import Engine
    from ...runtime.selection import tensorrt_resolver

    try:
        with load_bundle(root, verify=False) as bundle:
            rows = int(np.load(root / manifest.golden_for(0).inputs, mmap_mode="r").shape[0])
            batching = Batching(max_batch_size=rows, buckets=(rows,))
            resolver = tensorrt_resolver(bundle.card, cache_root=engines, build=False)
            with Engine.from_bundle(bundle, batching=batching, warmup=False, engine_resolver=resolver) as engine:
                assert engine.selection is not None
                index = engine.selection.index
                inputs, expected = bundle.golden(index)
                outputs = engine.infer({image_input: inputs, **extra} if image_input is not None else extra)
                opened = engine.selection.as_dict()
    except Exception as exc:  # any failure to open or run means the release is not healthy here
        raise StepFailed(f"release does not load/run in-process: {exc}") from exc
    golden = manifest.golden_for(index)
    _compare(outputs, expected, golden.atol, golden.rtol, golden.min_cosine)
    return {"mode": "in_process", "golden": "ok", "opened": opened}


def health_check(store: Store, release_id: str, options: dict[str, Any], emit: Emit = quiet) -> dict[str, Any]:
    """Agent ready, golden outputs within tolerance, p99 under the bound over N requests.

    Without a running agent the release is checked in-process instead (open the artifact with
    its backend and run the golden batch); the result says which was done.
    """
    import numpy as np

    from ...manifest import GOLDEN_EXTRA_INPUTS, parse_manifest
    from ...runtime.oip_requests import oip_binary_inputs

    root = store.releases / release_id
    parsed = parse_manifest((root / "manifest.json").read_bytes())
    manifest = parsed.model_dump(mode="json")
    url = agent_url(store)
    # the golden of the artifact the agent opened (a fallback artifact may carry its own)
    agent = store.agent_status() if url is not None else {}
    opened = agent.get("opened") if agent.get("release") == release_id else None
    index = int(opened.get("artifact", 0)) if isinstance(opened, dict) else 0
    if not 0 <= index < len(parsed.artifacts):
        index = 0
    if parsed.golden is None:
        raise StepFailed(f"a {parsed.task} release has no tensor golden to check")
    golden = parsed.golden_for(index).model_dump()
    inputs = np.load(root / golden["inputs"], allow_pickle=False)
    extra: dict[str, Any] = {}  # a multi-input model's other golden inputs, by name
    if (root / GOLDEN_EXTRA_INPUTS).is_file():
        with np.load(root / GOLDEN_EXTRA_INPUTS, allow_pickle=False) as npz:
            extra = {k: npz[k] for k in npz.files}
    with np.load(root / golden["outputs"], allow_pickle=False) as npz:
        expected = {k: npz[k] for k in npz.files}
    tol = (float(golden["atol"]), float(golden["rtol"]), float(golden["min_cosine"]))
    # the golden inputs file holds the image input: the one input the extra file does not name
    # (a model may list its image input after its tensor inputs); a generic model has none: every
    # input is in the extra file and golden/inputs.npy is [rows, 0]
    image_input = next((i["name"] for i in manifest["io"]["inputs"] if i["name"] not in extra), None)
    bound = options.get("p99_ms") or (manifest.get("profile", {}).get("latency", {}) or {}).get("p99_ms")
    if url is None:
        return _in_process(root, parsed, image_input, extra, store.engines)
    model = manifest["model"]["name"]
    access = agent_access(store)
    code, _ = _http(f"{url}/v2/health/ready", access=access)
    if code != 200:
        raise StepFailed(f"agent not ready (HTTP {code})")
    code, _ = _http(f"{url}/v2/models/{model}/ready", access=access)
    if code != 200:
        raise StepFailed(f"model {model} not ready (HTTP {code})")
    in_name = image_input
    auth, context = access
    host, _, port = url.partition("://")[2].rpartition(":")
    conn = (
        http.client.HTTPSConnection(host, int(port), timeout=30, context=context)
        if context is not None
        else http.client.HTTPConnection(host, int(port), timeout=30)
    )

    def infer(rows: int) -> dict[str, Any]:
        """One OIP request of the first ``rows`` golden samples (every input) with the binary tensor
        extension (JSON outputs), on a kept-alive connection."""
        feeds = {in_name: np.ascontiguousarray(inputs[:rows], dtype=np.float32)} if in_name is not None else {}
        feeds.update((k, v[:rows]) for k, v in extra.items())
        body, headers = oip_binary_inputs(feeds, binary_outputs=False)
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers={**headers, **auth})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise StepFailed(f"infer returned HTTP {response.status}: {payload[:200]!r}")
        reply = json.loads(payload)
        return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in reply["outputs"]}

    count = int(options.get("requests", 50))
    latencies = []
    try:
        _compare(infer(len(inputs)), expected, *tol)
        emit("golden_ok", {"release": release_id})
        for _ in range(count):
            start = time.perf_counter()
            infer(1)
            latencies.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] if latencies else 0.0
    result = {"mode": "agent", "golden": "ok", "requests": count, "p99_ms": round(p99, 3), "bound_ms": bound}
    if bound is not None and count and p99 > float(bound):
        raise StepFailed(f"p99 {p99:.1f} ms over {count} requests exceeds the bound {bound} ms")
    return result
