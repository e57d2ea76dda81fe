"""The LLM benchmark's requests: fixed prompt texts and the schedule every system runs.

:func:`make_prompts` writes deterministic prompts (an inspection ledger's lines, as the shipped
LM's task has them); each starts with its own number, so no request shares a KV prefix with
another and prefix caching gives no system an edge. :class:`Schedule` hands out fresh prompts to
each run (a warm-up, one run per concurrency level, extra paired runs), the same texts in the same
order for every system measured with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

CLASSES = ("scratch", "pit", "crack", "stain", "dent", "burr")


def make_prompts(count: int, words: int, offset: int = 0) -> list[str]:
    """Prompts number ``offset`` .. ``offset + count - 1``, about ``words`` words each (at least
    the header and the closing line). The same arguments give the same texts."""
    prompts = []
    for i in range(offset, offset + count):
        h = hashlib.sha256(str(i).encode()).digest()
        parts = [f"Request {i}. Station S{h[0] % 9 + 1}, shift {'ABC'[h[1] % 3]}, ledger follows."]
        j, n = 0, len(parts[0].split())
        while n < words:
            b = h[(2 + j) % len(h)]
            line = (
                f"Hour {6 + j % 12}: inspected {100 + b}, rejected {b % 17}, {CLASSES[b % 6]} {b % 7}, "
                f"{CLASSES[(b + 1) % 6]} {b % 5}, alarms {b % 3}."
            )
            parts.append(line)
            n += len(line.split())
            j += 1
        parts.append("Write the shift summary for the operator.")
        prompts.append(" ".join(parts))
    return prompts


@dataclass(frozen=True)
class Run:
    """One measured (or warm-up) run: its name, concurrency and prompts."""

    name: str
    concurrency: int
    prompts: tuple[str, ...]

    @property
    def warmup(self) -> bool:
        return self.name == "warmup"

    @property
    def paired(self) -> bool:
        return self.name.startswith("pair-")


@dataclass
class Schedule:
    """Every run of a benchmark, in order: a warm-up of ``warmup`` requests at concurrency 1, one
    run per level of ``levels`` and ``pairs`` runs at ``paired_concurrency``. A run at concurrency
    ``c`` has ``max(per_client * c, min_requests)`` requests; no prompt is used twice."""

    levels: tuple[int, ...]
    per_client: int = 2
    min_requests: int = 4
    pairs: int = 0
    words: int = 60
    warmup: int = 2
    paired_concurrency: int = 8
    runs: list[Run] = field(init=False)

    def __post_init__(self) -> None:
        offset = 0
        runs: list[Run] = []

        def add(name: str, c: int, n: int) -> None:
            nonlocal offset
            runs.append(Run(name, c, tuple(make_prompts(n, self.words, offset))))
            offset += n

        if self.warmup:
            add("warmup", 1, self.warmup)
        for c in self.levels:
            add(f"sweep-{c}", c, self.requests(c))
        for k in range(self.pairs):
            add(f"pair-{k}", self.paired_concurrency, self.requests(self.paired_concurrency))
        self.runs = runs

    def requests(self, concurrency: int) -> int:
        return max(self.per_client * concurrency, self.min_requests)

    def prompts(self) -> list[str]:
        """Every prompt of every run, in order."""
        return [p for run in self.runs for p in run.prompts]


__all__ = ["CLASSES", "Run", "Schedule", "make_prompts"]
