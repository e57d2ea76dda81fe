"""Shared by the tests that run ``edgeds serve`` as a process."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def json_banner(stdout: Iterable[str]) -> dict[str, Any]:
    """The ``--json`` banner ``edgeds serve`` prints once it serves (one JSON document, read up to its
    closing brace; the lines after it are not read)."""
    lines = []
    for line in stdout:
        lines.append(line)
        if line.startswith("}"):
            break
    return dict(json.loads("".join(lines)))
