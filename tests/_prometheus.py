"""A strict reader of Prometheus' text exposition format, for the tests of /metrics."""

from __future__ import annotations

import re

# one sample line: name{labels} value
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse(text: str) -> dict[str, dict[str, float]]:
    """Family -> {sample line's name+labels: value}; every line must be a comment or a sample."""
    samples: dict[str, dict[str, float]] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name = match.group(1)
        family = next(f for f in sorted(types, key=len, reverse=True) if name.startswith(f))
        samples.setdefault(family, {})[name + (match.group(2) or "")] = float(match.group(3))
    return samples
