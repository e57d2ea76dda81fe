"""``edgeds serve`` (a real process on loopback), ``edgeds run`` and ``edgeds bench --url``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeds.cli import app

from ._serve import json_banner

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeds.compile.pipeline import compile_model
    from edgeds.compile.tiny import write_tiny_model

    work = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:  # private dataset/compile caches: nothing stale from other runs
        mp.setenv("EDGEDS_CACHE_DIR", str(work / "cache"))
        model = write_tiny_model(work / "src", validation_count=16, calibration_count=8)
        return compile_model(model, "x86-cpu", precision="fp32", out=work / "bundle", use_cache=False).bundle


@pytest.fixture(scope="module")
def served(bundle: Path) -> Iterator[str]:
    exe = Path(sys.executable).parent / "edgeds"
    proc = subprocess.Popen(
        [str(exe), "serve", str(bundle), "--port", "0", "--threads", "2", "--instances", "2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        info = json_banner(proc.stdout)
        # the default execution: each of the two instances runs on its own event loop
        assert info["execution"] == "inline" and info["instances"] == 2
        yield info["url"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(15) == 0


def test_serve_answers_health_and_metadata(served: str) -> None:
    with urllib.request.urlopen(f"{served}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{served}/v2/models/tiny", timeout=5) as r:
        meta = json.loads(r.read())
    assert meta["inputs"][0]["shape"] == [-1, 3, 160, 160]


def test_bench_over_http(served: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["bench", "--url", served, "--scenarios", "single,offline", "--duration", "0.5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["transport"] == "http"
    single = report["scenarios"]["single"]
    assert single["ok"] > 0 and single["errors"] == 0 and single["p50_ms"] <= single["p99_ms"]
    assert report["scenarios"]["offline"]["mean_batch_size"] >= 1.0
    assert report["environment"]["cores"] >= 1


def test_run_on_image_and_npy(bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    from edgeds.datasets.surface import LABELS, generate

    images, _ = generate(3, 2, 160)
    png = tmp_path / "a.png"
    Image.fromarray(images[0]).save(png)
    npy = tmp_path / "b.npy"
    np.save(npy, images)
    runner = CliRunner()
    one = runner.invoke(app, ["run", str(bundle), "--input", str(png), "--json", "--top", "2"])
    assert one.exit_code == 0, one.output
    data = json.loads(one.output)
    assert len(data["predictions"]) == 1 and len(data["predictions"][0]) == 2
    assert data["predictions"][0][0]["label"] in LABELS
    two = runner.invoke(app, ["run", str(bundle), "--input", str(npy), "--json"])
    assert two.exit_code == 0, two.output
    preds = json.loads(two.output)["predictions"]
    assert len(preds) == 2
    full = json.loads(runner.invoke(app, ["run", str(bundle), "--input", str(png), "--json", "--top", "5"]).output)
    assert abs(sum(p["score"] for p in full["predictions"][0]) - 1.0) < 1e-6  # softmax over every label


def test_bench_in_process_floor_with_two_instances(bundle: Path, tmp_path: Path) -> None:
    """``edgeds bench BUNDLE --instances 2``: the floor runs two bare sessions at once, one thread each."""
    out = tmp_path / "report.json"
    args = ["bench", str(bundle), "--scenarios", "floor,single", "--duration", "0.4", "--threads", "2"]
    result = CliRunner().invoke(app, [*args, "--instances", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    floor = report["scenarios"]["floor"]
    assert floor["instances"] == 2
    assert [r["batch"] for r in floor["per_batch"]] == list(range(1, len(floor["per_batch"]) + 1))
    assert all(r["samples_per_s"] > 0 and r["iterations"] > 0 for r in floor["per_batch"])
    assert report["config"]["batching"]["instances"] == 2
    assert report["scenarios"]["single"]["ok"] > 0
