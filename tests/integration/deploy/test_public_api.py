"""The whole trip through the public API alone: compile -> sign -> deploy to a simulated device -> infer.

Only names from ``edgeds.__all__`` drive the trip; the fixtures provide what a user brings (a
model with its card, a profile, a signing key, a target with a device) and the HTTP request is the
device's own protocol (Open Inference Protocol, JSON).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgeds
from edgeds.compile.tiny import write_tiny_model

from ...unit._compile_fixtures import BUDGET, profile
from .conftest import Rig


def _infer_over_http(url: str, model: str, name: str, x: np.ndarray) -> dict[str, Any]:
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def test_compile_sign_deploy_infer_through_the_public_api(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEDS_CACHE_DIR", str(tmp_path / "cache"))
    model = write_tiny_model(tmp_path / "model", 64, 16)
    tiny_profile = profile(tmp_path / "profiles", "tiny-ort", "x86-cpu", "backends:\n  - name: onnxruntime\n" + BUDGET)

    result = edgeds.compile_model(model, tiny_profile, precision="fp32", key=rig.keys.private, version=41)
    assert isinstance(result, edgeds.CompileResult)

    with edgeds.Bundle.open(result.bundle, rig.keys.public) as bundle:
        assert bundle.version == 41 and bundle.signature is not None
        rollout = edgeds.deploy_bundle(
            bundle, rig.target_path, options=edgeds.DeployOptions(health_requests=5, reload_timeout_s=60)
        )
        assert rollout.succeeded, [(h.host, h.status, h.message) for h in rollout.hosts]
        (host,) = rollout.hosts
        assert isinstance(host, edgeds.HostResult) and host.status == "SUCCEEDED"

        inputs, _ = bundle.golden()
        x = np.ascontiguousarray(inputs[:2], dtype=np.float32)
        with edgeds.Engine.from_bundle(bundle) as engine:
            assert engine.io is not None
            name = engine.io.inputs[0].name
            local = engine.infer({name: x})

    agent = rig.wait_agent(release=host.release)
    answer = _infer_over_http(f"http://{agent['http']}", bundle.name, name, x)
    (output,) = [o for o in answer["outputs"] if o["name"] in local]
    remote = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(remote, local[output["name"]], rtol=1e-5, atol=1e-5)
