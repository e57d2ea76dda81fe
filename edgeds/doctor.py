"""What this machine can do: Python, platform, which backends, LM runtimes and toolchains work here,
and which hardware paths this build was not verified on (and how to check them on the device)."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from . import backends, config
from ._version import __version__
from .backends.base import Availability


@dataclass(frozen=True)
class HardwareCheck:
    """A hardware path and whether this build was verified on it; ``check`` says how to verify it."""

    name: str
    verified: bool
    note: str
    check: str


UNVERIFIED: tuple[HardwareCheck, ...] = (
    HardwareCheck(
        "tensorrt",
        False,
        "TensorRT engine build and inference (10.x and 11.x builder APIs) not verified on hardware in this "
        "build: it was built and tested without TensorRT or an NVIDIA GPU",
        "hil/gpu-check.sh on a Jetson or any machine with TensorRT and a GPU installed",
    ),
    HardwareCheck(
        "openvino-gpu",
        False,
        "OpenVINO on an Intel iGPU or NPU (HETERO:GPU,CPU, GPU, NPU device strings) not verified on hardware in "
        "this build: only the CPU plugin ran; the device falls back to the bundle's CPU artifact and says so",
        "deploy an intel-nuc-12 bundle to the NUC; edgeds status shows the device string it opened",
    ),
    HardwareCheck(
        "energy",
        False,
        "RAPL and tegrastats energy readings not verified on hardware in this build: neither source exists here",
        "edgeds bench BUNDLE on an x86 machine with readable /sys/class/powercap, or on a Jetson (tegrastats)",
    ),
    HardwareCheck(
        "litert-delegates",
        False,
        "LiteRT NNAPI and QNN delegates not verified on hardware in this build: only XNNPACK (CPU) ran",
        "compile for the profile and deploy to an Android / Snapdragon device; the device reports the delegate used",
    ),
)
"""What no test of this build ran on real hardware; ``edgeds doctor`` lists each."""


@dataclass(frozen=True)
class DoctorReport:
    edgeds_version: str
    python: str
    platform: str
    machine: str
    cpu_count: int
    local_profile: str
    backends: tuple[Availability, ...]
    toolchains: tuple[Availability, ...] = ()
    """The toolchains edgeds installs itself (``edgeds toolchain install NAME``): installed or not."""
    lm_runtimes: tuple[Availability, ...] = ()
    """The LM runtimes (``llm.runtimes`` in a profile); ``devices`` says how each batches here."""
    hardware: tuple[HardwareCheck, ...] = ()
    """Hardware paths and whether this build was verified on them (see :data:`UNVERIFIED`)."""
    power: str = ""
    """The power source energy figures come from here (``rapl``, ``tegrastats``), or ``n/a (why)``."""


def diagnose() -> DoctorReport:
    """Probe every registered backend and installable toolchain; never raises for a missing optional library."""
    import os

    from .backends import lm
    from .compile import toolchains

    return DoctorReport(
        edgeds_version=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        machine=platform.machine(),
        cpu_count=os.cpu_count() or 1,
        local_profile=config.detect_profile_name(),
        backends=tuple(backends.probe(name) for name in backends.names()),
        toolchains=tuple(toolchains.installable(name).available() for name in toolchains.INSTALLABLE),
        lm_runtimes=tuple(lm.lm_probe(name) for name in lm.lm_names()),
        hardware=UNVERIFIED,
        power=_power_source(),
    )


def _power_source() -> str:
    """The power source this machine measures, by name, or ``n/a (<why>)``; closed again at once."""
    import shutil

    from .power import open_source

    if shutil.which("tegrastats") is not None:  # a Jetson: bench and HIL start it; doctor does not
        return "tegrastats (on PATH; not started by doctor)"
    source, why = open_source(tegrastats=None)
    if source is None:
        return f"n/a ({why})"
    try:
        return source.name
    finally:
        source.close()
