"""Switching models under constant load: no request fails while releases are swapped."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter

import numpy as np

from edgeds.deploy.device.protocol import SUCCEEDED
from edgeds.deploy.options import DeployOptions

from .conftest import Rig

MIN_REQUESTS = 2000


def _client(address: str, stop: threading.Event, results: list[tuple[int, str]]) -> None:
    """Closed-loop client: binary OIP requests on one kept-alive connection; (status, model_version)."""
    raw = np.random.default_rng(0).random((1, 3, 160, 160), dtype=np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 160, 160],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    conn = http.client.HTTPConnection(address, 8000, timeout=30)
    while not stop.is_set():
        try:
            conn.request(
                "POST",
                "/v2/models/tiny/infer",
                body=header + raw,
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            response = conn.getresponse()
            payload = response.read()
            version = json.loads(payload).get("model_version", "") if response.status == 200 else payload.decode()
            results.append((response.status, str(version)))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            results.append((-1, repr(exc)))
            conn.close()
            conn = http.client.HTTPConnection(address, 8000, timeout=30)
    conn.close()


def test_switching_models_under_load_drops_no_request(rig: Rig) -> None:
    first = rig.deploy(rig.bundle(seed=1))
    assert first.status == SUCCEEDED
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=_client, args=(rig.devices[0].address, stop, results), daemon=True) for _ in range(2)
    ]
    for thread in clients:
        thread.start()
    switches = 0
    try:
        seed = 2
        while switches < 3 or len(results) < MIN_REQUESTS:
            result = rig.deploy(rig.bundle(seed=seed), options=DeployOptions(health_requests=10))
            assert result.status == SUCCEEDED, result
            switches += 1
            seed += 1
            assert switches < 40, f"only {len(results)} requests after {switches} switches"
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    failures = [r for r in results if r[0] != 200]
    versions = Counter(v for status, v in results if status == 200)
    print(f"\n{len(results)} requests across {switches} switches, {len(failures)} failed; versions {dict(versions)}")
    assert len(results) >= MIN_REQUESTS
    assert failures == []
    assert len(versions) >= 3, "requests should have been answered by several releases"


def test_unload_first_mode_reports_the_gap(rig: Rig) -> None:
    device = rig.devices[0]
    config_path = device.install_dir / "agent-config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "swap_mode": "unload_first"}))
    first = rig.deploy(rig.bundle())
    assert first.status == SUCCEEDED
    old_pid = device.agent_pid()
    assert device.kill_agent()  # the supervisor restarts it with the new config
    rig.wait_agent(release=first.release, not_pid=old_pid)
    second = rig.deploy(rig.bundle())
    assert second.status == SUCCEEDED, second
    agent = rig.agent()
    assert agent["release"] == second.release
    assert agent["gap_s"] > 0  # memory-constrained swap: the old engine was unloaded first
