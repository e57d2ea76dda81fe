"""The power sources against their file formats: a powercap tree and thermal zones written here
(the layout and units of Linux's sysfs), and tegrastats lines in the Orin Nano format of JetPack 6
(``VDD_IN`` / ``VDD_CPU_GPU_CV`` / ``VDD_SOC`` in ``mW``, a date prefix with one-second resolution).
No RAPL counter or Jetson was read: this machine has neither."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import pytest

from edgeds.power import DeviceMeter, Energy, EnergyWindow, Unmeasured, integrate_mw, logged_energy, open_source
from edgeds.power.rapl import counter_delta_uj, open_rapl
from edgeds.power.sources import RaplSource, TegrastatsSource
from edgeds.power.tegrastats import TegrastatsReader, board_power_mw, parse_tegrastats
from edgeds.power.thermal import thermal_zones

ORIN_NANO = (
    "{ts} RAM 2639/7620MB (lfb 9x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [1%@729,4%@729,8%@729,4%@729,5%@729,4%@729] GR3D_FREQ 0% cpu@44.156C soc2@43.781C "
    "soc0@44.687C gpu@45.968C tj@45.968C soc1@45.312C "
    "VDD_IN {mw}mW/5263mW VDD_CPU_GPU_CV 717mW/717mW VDD_SOC 1794mW/1794mW"
)


def _domain(root: Path, name: str, kind: str, uj: int, max_uj: int = 262143328850) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(kind + "\n")
    (path / "energy_uj").write_text(f"{uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def test_rapl_reads_package_domains_only_and_sums_them(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    p0 = _domain(root, "intel-rapl:0", "package-0", 1_000_000)
    p1 = _domain(root, "intel-rapl:1", "package-1", 5_000_000)
    _domain(root, "intel-rapl:0:0", "core", 900_000)  # inside package-0: not added again
    _domain(root, "intel-rapl:2", "psys", 9_000_000)  # the platform: contains the packages
    (root / "intel-rapl").mkdir()  # the control type directory
    source, reason = open_source(powercap_root=root, thermal_root=tmp_path / "none", tegrastats=None)
    assert reason is None and isinstance(source, RaplSource)
    assert source.name == "rapl package-0+package-1"
    with EnergyWindow(source) as window:
        (p0 / "energy_uj").write_text("3500000\n")  # +2.5 J
        (p1 / "energy_uj").write_text("5500000\n")  # +0.5 J
    result = window.result
    assert isinstance(result, Energy)
    assert result.joules == pytest.approx(3.0)
    assert result.watts_avg == pytest.approx(3.0 / result.seconds)
    assert result.as_dict(inferences=300)["joules_per_inference"] == pytest.approx(0.01)


def test_rapl_counter_wraps_at_its_range(tmp_path: Path) -> None:
    assert counter_delta_uj(100, 250, 1000) == 150
    assert counter_delta_uj(900, 50, 1000) == 150  # 100 to the top, then 50 from 0
    root = tmp_path / "powercap"
    p0 = _domain(root, "intel-rapl:0", "package-0", 262143000000)
    reader = open_rapl(root)
    assert not isinstance(reader, str)
    _, start = reader.read()
    (p0 / "energy_uj").write_text("671150\n")
    _, end = reader.read()
    assert reader.joules(start, end) == pytest.approx((262143328850 - 262143000000 + 671150) / 1e6)


def test_no_power_source_says_why(tmp_path: Path) -> None:
    source, reason = open_source(powercap_root=tmp_path / "powercap", tegrastats="edgeds-no-such-tegrastats")
    assert source is None
    assert reason == f"no power source: {tmp_path / 'powercap'} absent; edgeds-no-such-tegrastats not found"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert open_rapl(empty) == f"no RAPL package domain under {empty}"
    window = EnergyWindow(None, reason)
    with window:
        pass
    assert window.result == Unmeasured(reason)
    assert window.result.as_dict(10) == {
        "joules": None,
        "seconds": None,
        "watts_avg": None,
        "joules_per_inference": None,
        "source": None,
        "unavailable_reason": reason,
    }


def test_unreadable_counter_is_a_reason_not_a_source(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    p0 = _domain(root, "intel-rapl:0", "package-0", 1)
    (p0 / "energy_uj").chmod(0o000)
    try:
        if _readable(p0 / "energy_uj"):
            pytest.skip("running as root: every file is readable")
        reason = open_rapl(root)
        assert isinstance(reason, str) and "readable by root only" in reason
    finally:
        (p0 / "energy_uj").chmod(0o644)


def _readable(path: Path) -> bool:
    try:
        path.read_text()
    except PermissionError:
        return False
    return True


def test_this_machine_has_no_power_source() -> None:
    """This host (a VM) has no /sys/class/powercap and no tegrastats: the reason names both."""
    if Path("/sys/class/powercap").exists():
        pytest.skip("this machine has a powercap tree")
    source, reason = open_source()
    assert source is None and reason == "no power source: /sys/class/powercap absent; tegrastats not found"


def test_thermal_zones_in_celsius(tmp_path: Path) -> None:
    for number, kind, milli in [
        (0, "cpu-thermal", "45500"),
        (1, "gpu-thermal", "-256000"),
        (2, "cpu-thermal", "47000"),
    ]:
        zone = tmp_path / f"thermal_zone{number}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    (tmp_path / "cooling_device0").mkdir()
    assert thermal_zones(tmp_path) == {"cpu-thermal": 45.5, "cpu-thermal/2": 47.0}
    assert thermal_zones(tmp_path / "absent") == {}


def test_board_power_is_the_input_rail_or_the_sum_of_rails() -> None:
    line = parse_tegrastats(ORIN_NANO.format(ts="05-05-2025 06:05:39", mw=5263))
    assert board_power_mw(line) == (5263, "VDD_IN")
    agx_orin = parse_tegrastats("VDD_GPU_SOC 2383mW/2383mW VDD_CPU_CV 397mW/412mW VIN_SYS_5V0 2915mW/2915mW NC 0mW/0mW")
    assert board_power_mw(agx_orin) == (5695, "sum(VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0)")
    assert board_power_mw(parse_tegrastats("RAM 1/2MB CPU [1%@100]")) is None


def test_trapezoid_integration_holds_the_edges() -> None:
    samples = [(1.0, 4000), (2.0, 6000)]
    # 0.5 s held at 4 W, 1 s rising 4->6 W, 0.5 s held at 6 W
    assert integrate_mw(samples, 0.5, 2.5) == pytest.approx(2.0 + 5.0 + 3.0)


def test_energy_of_a_recorded_tegrastats_log() -> None:
    """Five dated lines a second apart (``tegrastats --interval 1000 --logfile``), a warning between."""
    powers = [5263, 7000, 9000, 7000, 5263]
    lines = [ORIN_NANO.format(ts=f"05-05-2025 06:05:{39 + i}", mw=mw) for i, mw in enumerate(powers)]
    lines.insert(2, "WARNING: some driver message")
    result = logged_energy(lines)
    assert isinstance(result, Energy)
    expected = sum((a + b) / 2 for a, b in itertools.pairwise(powers)) / 1000
    assert result.seconds == 4.0 and result.joules == pytest.approx(expected)
    assert result.watts_avg == pytest.approx(expected / 4) and result.source == "tegrastats VDD_IN"
    assert isinstance(logged_energy(lines[:1]), Unmeasured)


def _stand_in(tmp_path: Path, mw: int) -> Path:
    """A tegrastats stand-in: prints one Orin Nano line every ``--interval`` ms, at ``mw`` on VDD_IN."""
    line = ORIN_NANO.format(ts="05-05-2025 06:05:39", mw=mw)
    script = tmp_path / "tegrastats"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "interval = int(sys.argv[sys.argv.index('--interval') + 1]) / 1000\n"
        "while True:\n"
        f"    print({line!r}, flush=True)\n"
        "    time.sleep(interval)\n"
    )
    script.chmod(0o755)
    return script


def test_tegrastats_source_integrates_the_samples_of_its_window(tmp_path: Path) -> None:
    source, reason = open_source(tegrastats=str(_stand_in(tmp_path, 6000)), interval_ms=50)
    assert reason is None and isinstance(source, TegrastatsSource)
    try:
        deadline = time.monotonic() + 10
        while source.reader.latest() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        too_short = source.energy(source.mark())
        assert isinstance(too_short, Unmeasured) and "measure longer" in too_short.reason
        with EnergyWindow(source) as window:
            time.sleep(0.5)
        result = window.result
        assert isinstance(result, Energy), result
        assert result.watts_avg == pytest.approx(6.0) and result.source == "tegrastats VDD_IN"
        assert source.temperatures_c()["tj"] == 45.968
    finally:
        source.close()


def test_device_meter_reports_watts_between_samples_and_the_sum(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    p0 = _domain(root, "intel-rapl:0", "package-0", 0)
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("x86_pkg_temp\n")
    (zone / "temp").write_text("51000\n")
    meter = DeviceMeter(powercap_root=root, thermal_root=tmp_path / "thermal")
    (p0 / "energy_uj").write_text("2000000\n")
    first = meter.sample()
    assert first["source"] == "rapl package-0" and first["watts"] is not None and first["watts"] > 0
    assert first["energy_j"] == 2.0 and first["temperatures_c"] == {"x86_pkg_temp": 51.0}
    (p0 / "energy_uj").write_text("3000000\n")
    assert meter.sample()["energy_j"] == 3.0
    meter.close()
    none = DeviceMeter(powercap_root=tmp_path / "absent", thermal_root=tmp_path / "thermal")
    sample = none.sample()
    assert sample["source"] is None and sample["watts"] is None and sample["energy_j"] is None
    assert sample["unavailable_reason"] == f"no power source: {tmp_path / 'absent'} absent"
    assert sample["temperatures_c"] == {"x86_pkg_temp": 51.0}


def test_reader_without_history_keeps_no_power_samples() -> None:
    reader = TegrastatsReader(binary="edgeds-no-such-tegrastats")
    assert reader.power_samples(0.0, time.monotonic()) == []
