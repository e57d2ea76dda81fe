"""RAPL energy counters of x86 packages, read from the Linux powercap tree.

Each package domain is a directory ``<root>/intel-rapl:<N>`` whose ``name`` starts with
``package`` (AMD Zen exposes its packages under the same name). Its ``energy_uj`` counts
microjoules and wraps to 0 after ``max_energy_range_uj``. Subdomains (``intel-rapl:N:M``: core,
uncore, dram) and the ``psys`` platform domain are not read: they are inside a package or contain
it, and adding them would count energy twice. DRAM energy is therefore not included.

``energy_uj`` is readable by root only on Linux 5.10 and later (CVE-2020-8694); :func:`open_rapl`
says so instead of returning a source that cannot be read.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
_PACKAGE_DIR = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class RaplDomain:
    """One package domain: its directory, its ``name`` and the counter's range (µJ)."""

    path: Path
    name: str
    max_energy_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def counter_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Microjoules between two readings of one counter, across at most one wrap to 0."""
    return end - start if end >= start else max_range_uj - start + end


class RaplReader:
    """The package domains of one powercap tree; :meth:`read` gives (monotonic s, counters µJ)."""

    def __init__(self, domains: list[RaplDomain]) -> None:
        self.domains = domains
        self.name = "rapl " + "+".join(d.name for d in domains)

    def read(self) -> tuple[float, tuple[int, ...]]:
        counters = tuple(d.read_uj() for d in self.domains)
        return time.monotonic(), counters

    def joules(self, start: tuple[int, ...], end: tuple[int, ...]) -> float:
        """Joules between two :meth:`read` counter tuples, summed over the packages."""
        deltas = (
            counter_delta_uj(a, b, d.max_energy_range_uj) for d, a, b in zip(self.domains, start, end, strict=True)
        )
        return sum(deltas) / 1e6


def open_rapl(root: Path = POWERCAP) -> RaplReader | str:
    """A reader of the package domains under ``root``, or the reason there is none (one line)."""
    if not root.is_dir():
        return f"{root} absent"
    domains: list[RaplDomain] = []
    for path in sorted(p for p in root.iterdir() if _PACKAGE_DIR.match(p.name)):
        try:
            name = (path / "name").read_text().strip()
            if not name.startswith("package"):
                continue
            domain = RaplDomain(path, name, int((path / "max_energy_range_uj").read_text().strip()))
            domain.read_uj()
        except PermissionError:
            return f"{path / 'energy_uj'} is readable by root only (Linux 5.10+): run as root or grant read access"
        except (OSError, ValueError) as exc:
            return f"{path} cannot be read: {exc}"
        domains.append(domain)
    if not domains:
        return f"no RAPL package domain under {root}"
    return RaplReader(domains)
