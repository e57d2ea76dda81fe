"""What this machine can do: Python, platform, and which backends, LM runtimes and toolchains work here."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

from . import backends, config
from ._version import __version__
from .backends.base import Availability


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
    )
