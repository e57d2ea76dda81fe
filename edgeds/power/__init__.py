"""Measured power, energy and temperature of this machine, where its hardware reports them.

- :mod:`.sources`: :func:`open_source`, :class:`PowerSource`, :class:`Energy` /
  :class:`Unmeasured`, :class:`EnergyWindow` (a measured block), :class:`DeviceMeter` (the
  telemetry ``power`` section)
- :mod:`.rapl`: RAPL package counters under ``/sys/class/powercap`` (x86)
- :mod:`.tegrastats`: the tegrastats parser and reader (Jetson)
- :mod:`.thermal`: ``/sys/class/thermal`` zones

Standard library only: every layer may import it.
"""

from __future__ import annotations

from .sources import (
    DeviceMeter,
    Energy,
    EnergyWindow,
    PowerSource,
    Unmeasured,
    integrate_mw,
    logged_energy,
    open_source,
)
from .thermal import thermal_zones

__all__ = [
    "DeviceMeter",
    "Energy",
    "EnergyWindow",
    "PowerSource",
    "Unmeasured",
    "integrate_mw",
    "logged_energy",
    "open_source",
    "thermal_zones",
]
