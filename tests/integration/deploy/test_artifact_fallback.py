"""A bundle carries its fallback chain: TensorRT recipe + ONNX Runtime, on a device without TensorRT.

Real path: ``compile_model`` for a Jetson-class profile (TensorRT INT8 recipe, then ONNX Runtime
FP32 gated here) -> deploy over SSH to a simulated device (no TensorRT installed, as on this
machine) -> the device skips the engine build, the agent opens the ONNX Runtime artifact and says
``tensorrt unavailable: <reason>`` in ``edgeds status``, its model metadata and its telemetry
(real mosquitto). The same chain with ``require: true`` on TensorRT fails the deploy with that
reason and rolls back to the release that served before.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from edgeds.compile import compile_model
from edgeds.deploy.device.protocol import FAILED_ROLLBACK_COMPLETE, SUCCEEDED
from edgeds.sim.broker import Mosquitto
from tests.integration.telemetry.conftest import Consumer, wait_until
from tests.unit._compile_fixtures import BUDGET, cache_env, profile, tiny

from .conftest import Keys, Rig

pytestmark = pytest.mark.integration
__all__ = ["cache_env", "tiny"]  # fixtures used by this module

CHAIN = """hardware:
  arch: x86_64
memory:
  budget_mb: 256
backends:
  - name: tensorrt
    options: {{workspace_mb: 256}}{require}
  - name: onnxruntime
    precision: fp32
    options: {{intra_op_num_threads: 1}}
"""


@pytest.fixture(scope="module")
def chain_bundles(tiny: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the chain, the chain with TensorRT required), signed, versions 100 and 101."""
    root = tmp_path_factory.mktemp("chain")
    out = []
    for version, require in ((100, ""), (101, "\n    require: true")):
        path = profile(root, f"jetson-sim-{version}", "jetson-orin-nx", CHAIN.format(require=require) + BUDGET)
        result = compile_model(tiny, path, out=root / f"b{version}", key=keys.private, version=version)
        out.append(result.bundle)
    return out[0], out[1]


def _metadata(rig: Rig, model: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{rig.agent()['http']}/v2/models/{model}", timeout=10) as response:
        return dict(json.loads(response.read()))


def test_a_device_without_tensorrt_serves_the_fallback_and_says_why(
    telemetry_rig: Rig, broker: Mosquitto, chain_bundles: tuple[Path, Path]
) -> None:
    rig = telemetry_rig
    plain, required = chain_bundles
    manifest = json.loads((plain / "manifest.json").read_text())
    assert [a["runtime"] for a in manifest["artifacts"]] == ["tensorrt", "onnxruntime"]
    consumer = Consumer(broker.url, "5").start()
    try:
        result = rig.deploy(plain)
        assert result.status == SUCCEEDED, result
        rig.wait_agent(release=result.release)

        opened = rig.status()["current"]["opened"]
        assert (opened["artifact"], opened["runtime"], opened["precision"]) == (1, "onnxruntime", "fp32")
        assert opened["fallback"].startswith("tensorrt unavailable: "), opened
        assert "tensorrt" in opened["fallback"].removeprefix("tensorrt unavailable: ")  # the reason, whole
        assert [s["runtime"] for s in opened["skipped"]] == ["tensorrt"]
        assert _metadata(rig, manifest["model"]["name"])["opened"] == opened
        assert result.details["opened"] == opened  # the deploy's own result says it, and the release history
        state = json.loads((rig.devices[0].install_dir / "state.json").read_text())
        assert state["history"][-1]["opened"] == opened

        def reported() -> list[dict[str, object]]:
            return [
                dict(e.payload["deploy"]["opened"])
                for e in consumer.stream(rig.devices[0].name)
                if e.kind == "telemetry" and (e.payload.get("deploy") or {}).get("opened")
            ]

        assert wait_until(lambda: bool(reported()), 30), "no telemetry with what the device opened"
        assert reported()[-1]["fallback"] == opened["fallback"]
    finally:
        consumer.sub.stop()

    # TensorRT required: the same chain fails the deploy with the reason and rolls back
    failed = rig.deploy(required)
    assert failed.status == FAILED_ROLLBACK_COMPLETE, failed
    assert "tensorrt unavailable: " in (failed.message or "") and "require" in (failed.message or ""), failed
    assert rig.current() == result.release
    assert rig.wait_agent(release=result.release)["opened"]["runtime"] == "onnxruntime"
