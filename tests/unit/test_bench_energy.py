"""``edgeds bench`` energy: n/a with the reason on this machine (no power source), and the figures
from a RAPL counter where there is one (a powercap tree written here, its counter advanced by a
thread as the hardware would)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeds.bench.commands import bench_bundle
from edgeds.bench.energy import open_bench_power
from edgeds.cli import app
from edgeds.power import open_source
from edgeds.sim.bundles import make_bundle

pytest.importorskip("onnxruntime")

NO_SOURCE = "no power source: /sys/class/powercap absent; tegrastats not found"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bench-energy") / "bundle", 1, None, max_batch_size=4)


@pytest.fixture
def no_power_here() -> None:
    source, _ = open_source()
    if source is not None:
        source.close()
        pytest.skip("this machine has a power source")


@pytest.mark.usefixtures("no_power_here")
def test_bench_json_says_na_with_the_reason(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = ["bench", str(bundle), "--scenarios", "single", "--duration", "0.3", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["power_source"] is None and report["power_unavailable_reason"] == NO_SOURCE
    energy = report["scenarios"]["single"]["energy"]
    assert energy["joules"] is None and energy["watts_avg"] is None and energy["joules_per_inference"] is None
    assert energy["unavailable_reason"] == NO_SOURCE and energy["inferences"] > 0
    assert "J/inf" in result.output and f"energy: n/a ({NO_SOURCE})" in " ".join(result.output.split())


def test_a_remote_server_is_not_measured_here() -> None:
    source, reason = open_bench_power("http://10.0.0.7:8000")
    assert source is None
    assert reason == "no power source: the server at 10.0.0.7 is another machine (its power is not read here)"


def test_bench_gives_joules_per_inference_from_a_rapl_counter(bundle: Path, tmp_path: Path) -> None:
    package = tmp_path / "powercap" / "intel-rapl:0"
    package.mkdir(parents=True)
    (package / "name").write_text("package-0\n")
    (package / "max_energy_range_uj").write_text("262143328850\n")
    counter = package / "energy_uj"
    counter.write_text("0\n")
    source, reason = open_source(powercap_root=tmp_path / "powercap", tegrastats=None)
    assert source is not None and reason is None
    stop = threading.Event()

    def hardware() -> None:  # 0.1 J every 10 ms, written as the counter would show it
        uj = 0
        while not stop.wait(0.01):
            uj += 100_000
            counter.write_text(f"{uj}\n")

    thread = threading.Thread(target=hardware, daemon=True)
    thread.start()
    try:
        report = bench_bundle(bundle, scenarios=["single"], duration_s=0.3, threads=1, power=(source, None))
    finally:
        stop.set()
        thread.join(5)
    assert report["power_source"] == "rapl package-0" and report["power_unavailable_reason"] is None
    assert "load generator" in report["power_scope"]
    energy = report["scenarios"]["single"]["energy"]
    assert energy["source"] == "rapl package-0" and energy["unavailable_reason"] is None
    assert energy["joules"] > 0 and energy["watts_avg"] > 0 and energy["inferences"] > 0
    assert energy["joules_per_inference"] == pytest.approx(energy["joules"] / energy["inferences"], rel=1e-3)
