"""``edgeds bench``'s library side: a bundle benchmarked in-process and a model over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeds.bench.commands import bench_bundle, bench_url, served_models
from edgeds.runtime.loading import load_served
from edgeds.sim.bundles import make_bundle

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bench") / "bundle", 1, None, max_batch_size=4)


def test_bench_bundle_floor_per_instance_and_config(bundle: Path) -> None:
    seen: list[str] = []
    report = bench_bundle(
        bundle, scenarios=["floor", "single"], duration_s=0.3, threads=2, instances=2, progress=seen.append
    )
    assert report["transport"] == "in-process"
    assert seen == ["floor", "single"]
    floor = report["scenarios"]["floor"]
    assert floor["instances"] == 2 and [r["batch"] for r in floor["per_batch"]] == [1, 2, 3, 4]
    assert report["scenarios"]["single"]["ok"] > 0
    config = report["config"]
    assert config["backend"] == "onnxruntime" and config["batching"]["instances"] == 2
    assert config["backend_options"]["intra_op_num_threads"] == 2
    assert report["environment"]["model_sha256"] and report["first_inference_s"] > 0


@pytest.fixture
def served(bundle: Path) -> Iterator[str]:
    from edgeds.runtime.server import InferenceServer

    server = InferenceServer(load_served(bundle, threads=1).engine, port=0).start()
    try:
        yield server.url
    finally:
        server.stop(close_engines=True)


def test_bench_url_asks_the_server_for_the_model(served: str) -> None:
    assert served_models(served + "/") == ["tiny"]
    report = bench_url(served + "/", "tiny", scenarios=["single"], duration_s=0.3)
    assert report["transport"] == "http"
    assert report["scenarios"]["single"]["ok"] > 0
    assert report["config"]["url"] == served and report["config"]["model"] == "tiny"
    assert report["config"]["batching"] is not None
