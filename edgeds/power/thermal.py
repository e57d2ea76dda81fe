"""Temperatures of the Linux thermal zones (``/sys/class/thermal/thermal_zone*``).

Each zone has a ``type`` (its sensor's name) and ``temp`` in millidegrees Celsius. Zones that
cannot be read, or read a value below -200 °C (absent sensors report such values), are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

THERMAL = Path("/sys/class/thermal")
_ZONE = re.compile(r"^thermal_zone(\d+)$")


def thermal_zones(root: Path = THERMAL) -> dict[str, float]:
    """``{type: °C}`` of every readable zone under ``root``; a repeated type gets ``/<zone number>``."""
    if not root.is_dir():
        return {}
    zones = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _ZONE.match(p.name)))
    out: dict[str, float] = {}
    for number, path in zones:
        try:
            kind = (path / "type").read_text().strip() or f"zone{number}"
            celsius = int((path / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if celsius <= -200:
            continue
        out[kind if kind not in out else f"{kind}/{number}"] = round(celsius, 3)
    return out
