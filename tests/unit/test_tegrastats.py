"""tegrastats lines written from NVIDIA's documented formats (Jetson Linux developer guide).

Xavier (JetPack 4/5): bare power numbers (mW), offline cores as ``off``, ``EMC_FREQ x%``.
Orin (JetPack 5/6): a date prefix, ``mW`` units on rails, ``GR3D_FREQ x%@[f0,f1]``, sensors at
-256C (not present on the module). Nano: ``IRAM`` and ``POM_*`` rails. The reader runs a stand-in
program (no Jetson here) to check what it keeps, drops and ends.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from edgeds.telemetry.metrics import CpuCore, PowerRail, TegrastatsReader, parse_tegrastats

XAVIER = (
    "RAM 1903/15692MB (lfb 2834x4MB) SWAP 0/7846MB (cached 0MB) "
    "CPU [2%@1190,0%@1190,0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0% GR3D_FREQ 0% "
    "AO@30.5C GPU@30C Tdiode@33.25C PMIC@100C AUX@29.5C CPU@31.5C thermal@30.2C Tboard@31C "
    "GPU 0/0 CPU 155/155 SOC 932/932 CV 0/0 VDDRQ 155/155 SYS5V 1260/1260"
)

ORIN = (
    "11-22-2026 13:44:05 RAM 2448/62840MB (lfb 14542x4MB) SWAP 0/31420MB (cached 0MB) "
    "CPU [3%@729,1%@729,0%@729,0%@729,off,off,off,off,0%@1497,0%@1497,0%@1497,0%@1497] "
    "EMC_FREQ 1%@2133 GR3D_FREQ 12%@[305,305] NVENC off NVDEC off VIC_FREQ 729 APE 174 "
    "CV0@-256C CPU@42.468C Tboard@32C SOC2@38.718C Tdiode@34.25C SOC0@38.375C CV1@-256C GPU@-256C "
    "tj@42.468C SOC1@38.406C CV2@-256C "
    "VDD_GPU_SOC 2383mW/2383mW VDD_CPU_CV 397mW/412mW VIN_SYS_5V0 2915mW/2915mW NC 0mW/0mW "
    "VDDQ_VDD2_1V8AO 299mW/299mW NC 0mW/0mW"
)

NANO = (
    "RAM 1216/3956MB (lfb 157x4MB) SWAP 0/1978MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [2%@102,1%@102,0%@102,0%@102] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@21C CPU@24C "
    "PMIC@100C GPU@22.5C AO@29C thermal@23.25C POM_5V_IN 1055/1055 POM_5V_GPU 0/0 POM_5V_CPU 122/122"
)


def test_xavier_offline_cores_and_bare_power_numbers() -> None:
    t = parse_tegrastats(XAVIER)
    assert (t.ram_used_mb, t.ram_total_mb, t.lfb_blocks, t.lfb_block_mb) == (1903, 15692, 2834, 4)
    assert (t.swap_used_mb, t.swap_total_mb, t.swap_cached_mb) == (0, 7846, 0)
    assert t.cpu[:2] == (CpuCore(True, 2.0, 1190), CpuCore(True, 0.0, 1190))
    assert [c.online for c in t.cpu] == [True] * 4 + [False] * 4
    assert t.cpu[4] == CpuCore(False, None, None)
    assert (t.emc_percent, t.emc_freq_mhz, t.gpu_percent, t.gpu_freq_mhz) == (0.0, None, 0.0, ())
    assert t.temperatures_c["Tdiode"] == 33.25 and t.temperatures_c["GPU"] == 30.0
    assert len(t.temperatures_c) == 8 and t.absent_sensors == ()
    # Rails named like temperature sensors (GPU, CPU) are told apart by the cur/avg form.
    assert t.power_mw["GPU"] == PowerRail(0, 0)
    assert t.power_mw["SYS5V"] == PowerRail(1260, 1260)
    assert set(t.power_mw) == {"GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"}
    assert t.timestamp is None


def test_orin_units_absent_sensors_and_two_gpcs() -> None:
    t = parse_tegrastats(ORIN)
    assert t.timestamp == "11-22-2026 13:44:05"
    assert (t.ram_used_mb, t.ram_total_mb) == (2448, 62840)
    assert len(t.cpu) == 12 and sum(not c.online for c in t.cpu) == 4
    assert t.cpu[8] == CpuCore(True, 0.0, 1497)
    assert (t.emc_percent, t.emc_freq_mhz) == (1.0, 2133)
    assert (t.gpu_percent, t.gpu_freq_mhz) == (12.0, (305, 305))
    assert set(t.absent_sensors) == {"CV0", "CV1", "CV2", "GPU"}
    assert "GPU" not in t.temperatures_c and t.temperatures_c["CPU"] == 42.468
    assert t.temperatures_c["tj"] == 42.468
    assert t.power_mw["VDD_CPU_CV"] == PowerRail(397, 412)
    assert t.power_mw["VIN_SYS_5V0"] == PowerRail(2915, 2915)
    assert "NC" not in t.power_mw and "RAM" not in t.power_mw and "SWAP" not in t.power_mw


def test_nano_iram_is_not_a_power_rail() -> None:
    t = parse_tegrastats(NANO)
    assert (t.gpu_percent, t.gpu_freq_mhz) == (0.0, (76,))
    assert (t.emc_percent, t.emc_freq_mhz) == (0.0, 1600)
    assert t.power_mw == {
        "POM_5V_IN": PowerRail(1055, 1055),
        "POM_5V_GPU": PowerRail(0, 0),
        "POM_5V_CPU": PowerRail(122, 122),
    }
    assert t.temperatures_c["PMIC"] == 100.0


def test_partial_or_foreign_line_yields_nones() -> None:
    t = parse_tegrastats("garbage without any known field")
    assert t.ram_used_mb is None and t.cpu == () and t.power_mw == {} and t.temperatures_c == {}
    d = parse_tegrastats(XAVIER).as_dict()
    assert d["power_mw"]["SOC"] == {"current_mw": 932, "average_mw": 932}


def test_reader_skips_foreign_lines_drops_stale_readings_and_ends_a_wrapper_and_its_child(tmp_path: Path) -> None:
    """A wrapper script (as vendors ship) runs the printer: one real line, a warning and a blank line,
    then silence. The warning keeps the reading; the silence makes it stale; stop() ends both."""
    printer = tmp_path / "printer.py"
    printer.write_text(
        "import sys, time\n"
        f"print({ORIN!r}, flush=True)\n"
        "print('WARNING: some driver message', flush=True)\n"
        "print('', flush=True)\n"
        "time.sleep(600)\n"
    )
    wrapper = tmp_path / "tegrastats"
    wrapper.write_text(f'#!/bin/sh\n"{sys.executable}" "{printer}" "$@"\n')
    wrapper.chmod(0o755)
    reader = TegrastatsReader(interval_ms=300, binary=str(wrapper))
    assert reader.start()
    try:
        deadline = time.monotonic() + 10
        while reader.latest() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first = reader.latest()
        assert first is not None and first.gpu_percent == 12.0
        time.sleep(0.3)  # the warning and the blank line have been read by now: still the Orin reading
        still = reader.latest()
        assert still is not None and still.ram_used_mb == 2448
        time.sleep(1.0)  # over three intervals without a line
        assert reader.latest() is None
        running = [p for p in psutil.process_iter(["cmdline"]) if str(printer) in " ".join(p.info["cmdline"] or [])]
        assert len(running) == 1
    finally:
        reader.stop()

    def gone() -> bool:  # SIGTERM was sent to its group; the kernel ends it a moment later
        try:
            return bool(running[0].status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:  # reaped already
            return True

    deadline = time.monotonic() + 2
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone()


def test_reader_without_the_program_stays_idle() -> None:
    reader = TegrastatsReader(binary="edgeds-no-such-tegrastats")
    assert reader.start() is False and reader.latest() is None
    reader.stop()
