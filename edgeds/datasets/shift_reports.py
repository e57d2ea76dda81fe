"""Deterministic shift-report chat examples for the shipped language model.

The domain is the product's own inspection line: one station runs one shift of eight hours and
its inspection ledger counts every part by class (``ok``, ``scratch``, ``pit``, ``crack``,
``stain``), the parts rejected (every defect class) and the alarms raised. Code computes the
facts from a synthetic ledger and puts them in the prompt (a short system line and the user
turn with the facts and the request); the answer is the operator-facing text: a shift summary
that states every fact, or the answer to one operator question that states the facts asked for.

Every example ``i`` of ``generate(split, seed, count)`` is made from
``np.random.default_rng([seed, i])`` alone, so an example never depends on ``count`` or on
``split`` (the split only names the set). Only integer draws and Python integer arithmetic
shape the text, so the examples are the same on every machine and :func:`fingerprint` is a
stable record of a split.

The task metric is :func:`score`: an answer passes when every fact of the example appears in
it exactly (numbers as whole numbers, words as whole words) and it holds no number that is not
one of the example's facts.

This module depends on the standard library and numpy only (imported at runtime by edgeds and
by the model's ``train.py`` by file path).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CLASSES",
    "DEFECTS",
    "KINDS",
    "SYSTEM",
    "Example",
    "fingerprint",
    "generate",
    "numbers",
    "score",
]

CLASSES: tuple[str, ...] = ("ok", "scratch", "pit", "crack", "stain")
DEFECTS: tuple[str, ...] = CLASSES[1:]
KINDS: tuple[str, ...] = ("summary", "count", "rejects", "alarms", "worst_hour", "status")
# Share of each kind, in tenths: summaries are the hardest and get the most examples.
_KIND_WEIGHTS: tuple[int, ...] = (4, 2, 1, 1, 1, 1)

SYSTEM = "You are the inspection line assistant. State the facts exactly as given."

_STATIONS: tuple[str, ...] = (
    "Alder",
    "Birch",
    "Cedar",
    "Elm",
    "Hazel",
    "Larch",
    "Maple",
    "Oak",
    "Pine",
    "Rowan",
    "Spruce",
    "Willow",
)
# Shift name and its first hour (eight hours each).
_SHIFTS: tuple[tuple[str, int], ...] = (("early", 6), ("late", 14), ("night", 22))
_HOURS = 8

_NUMBER = re.compile(r"\d+(?::\d+)?")

_COUNT_QUESTIONS: tuple[str, ...] = (
    "How many {cls} parts were found?",
    "What was the {cls} count this shift?",
    "Give me the number of {cls} parts.",
)
_REJECT_QUESTIONS: tuple[str, ...] = (
    "How many parts were rejected?",
    "What was the reject count?",
    "How many rejects did we have?",
)
_ALARM_QUESTIONS: tuple[str, ...] = (
    "How many alarms were raised?",
    "Were there any alarms?",
    "What was the alarm count?",
)
_WORST_QUESTIONS: tuple[str, ...] = (
    "Which hour was the worst?",
    "When did we reject the most parts?",
    "What was the worst hour?",
)
_STATUS_QUESTIONS: tuple[str, ...] = (
    "What is the station status?",
    "Is the station running normally?",
    "What status should I report?",
)
_SUMMARY_REQUESTS: tuple[str, ...] = (
    "Write the shift summary.",
    "Summarize the shift for the handover.",
    "Give me the shift report.",
)


@dataclass(frozen=True)
class Example:
    """One chat example: the prompt ``messages``, the reference ``answer``, the ``facts``.

    ``messages`` are chat messages (``{"role": "system"|"user", "content": ...}``) ready for a
    chat template; ``facts`` are the exact strings the answer must state (numbers as digits,
    hours as ``HH:00``, the status as a word); ``kind`` is one of :data:`KINDS`.
    """

    messages: tuple[dict[str, str], ...]
    answer: str
    facts: tuple[str, ...]
    kind: str


@dataclass(frozen=True)
class _Ledger:
    station: str
    shift: str
    counts: dict[str, int]
    rejected: int
    inspected: int
    alarms: int
    worst_hour: str
    worst_rejects: int
    status: str


def _ledger(rng: np.random.Generator) -> _Ledger:
    station = _STATIONS[int(rng.integers(len(_STATIONS)))]
    shift, first_hour = _SHIFTS[int(rng.integers(len(_SHIFTS)))]
    # Per-class defect rate in parts per 10,000, one per shift; some shifts run badly.
    bad = int(rng.integers(4)) == 0
    rates = [int(rng.integers(2, 60 if bad else 25)) for _ in DEFECTS]
    counts = dict.fromkeys(CLASSES, 0)
    worst_hour, worst_rejects = first_hour, -1
    for h in range(_HOURS):
        parts = int(rng.integers(60, 180))
        hour_rejects = 0
        for cls, rate in zip(DEFECTS, rates, strict=True):
            n = int(rng.binomial(parts, rate / 10_000 * 4))
            counts[cls] += n
            hour_rejects += n
        hour_rejects = min(hour_rejects, parts)
        counts["ok"] += parts - hour_rejects
        if hour_rejects > worst_rejects:
            worst_hour, worst_rejects = (first_hour + h) % 24, hour_rejects
    rejected = sum(counts[c] for c in DEFECTS)
    inspected = counts["ok"] + rejected
    alarms = int(rng.integers(0, 4 if bad else 2)) + (1 if counts["crack"] >= 12 else 0)
    if alarms >= 3 or counts["crack"] >= 12:
        status = "stopped"
    elif alarms >= 1 or rejected * 100 >= inspected * 5:
        status = "watch"
    else:
        status = "normal"
    return _Ledger(
        station=station,
        shift=shift,
        counts=counts,
        rejected=rejected,
        inspected=inspected,
        alarms=alarms,
        worst_hour=f"{worst_hour:02d}:00",
        worst_rejects=worst_rejects,
        status=status,
    )


def _facts_line(ld: _Ledger) -> str:
    parts = [f"inspected {ld.inspected}"] + [f"{c} {ld.counts[c]}" for c in CLASSES]
    parts += [
        f"rejected {ld.rejected}",
        f"alarms {ld.alarms}",
        f"worst hour {ld.worst_hour} with {ld.worst_rejects} rejected",
        f"status {ld.status}",
    ]
    return "Facts: " + ", ".join(parts) + "."


def _task(rng: np.random.Generator, ld: _Ledger) -> tuple[str, str, tuple[str, ...], str]:
    """(request, answer, facts, kind) for one ledger."""
    kind = KINDS[int(rng.choice(len(KINDS), p=np.array(_KIND_WEIGHTS) / sum(_KIND_WEIGHTS)))]
    pick = int(rng.integers(3))
    head = f"Station {ld.station}, {ld.shift} shift"
    if kind == "summary":
        request = _SUMMARY_REQUESTS[pick]
        counts = ", ".join(f"{c} {ld.counts[c]}" for c in CLASSES)
        answer = (
            f"{head}: inspected {ld.inspected}, {counts}, rejected {ld.rejected}, "
            f"alarms {ld.alarms}, worst hour {ld.worst_hour} with {ld.worst_rejects} rejected. "
            f"Status {ld.status}."
        )
        facts = (
            str(ld.inspected),
            *(str(ld.counts[c]) for c in CLASSES),
            str(ld.rejected),
            str(ld.alarms),
            ld.worst_hour,
            str(ld.worst_rejects),
            ld.status,
        )
    elif kind == "count":
        cls = CLASSES[int(rng.integers(len(CLASSES)))]
        request = _COUNT_QUESTIONS[pick].format(cls=cls)
        answer = f"{head}: {cls} {ld.counts[cls]} of inspected {ld.inspected}."
        facts = (str(ld.counts[cls]), str(ld.inspected))
    elif kind == "rejects":
        request = _REJECT_QUESTIONS[pick]
        answer = f"{head}: rejected {ld.rejected} of inspected {ld.inspected}."
        facts = (str(ld.rejected), str(ld.inspected))
    elif kind == "alarms":
        request = _ALARM_QUESTIONS[pick]
        answer = f"{head}: alarms {ld.alarms}, status {ld.status}."
        facts = (str(ld.alarms), ld.status)
    elif kind == "worst_hour":
        request = _WORST_QUESTIONS[pick]
        answer = f"{head}: worst hour {ld.worst_hour} with {ld.worst_rejects} rejected."
        facts = (ld.worst_hour, str(ld.worst_rejects))
    else:
        request = _STATUS_QUESTIONS[pick]
        answer = f"{head}: status {ld.status}, alarms {ld.alarms}, rejected {ld.rejected} of inspected {ld.inspected}."
        facts = (ld.status, str(ld.alarms), str(ld.rejected), str(ld.inspected))
    return request, answer, facts, kind


def example(seed: int, index: int) -> Example:
    """Example ``index`` of the set made from ``seed`` (depends on nothing else)."""
    rng = np.random.default_rng([seed, index])
    ld = _ledger(rng)
    request, answer, facts, kind = _task(rng, ld)
    user = f"Station {ld.station}, {ld.shift} shift.\n{_facts_line(ld)}\n{request}"
    messages = ({"role": "system", "content": SYSTEM}, {"role": "user", "content": user})
    return Example(messages=messages, answer=answer, facts=facts, kind=kind)


def generate(split: str, seed: int, count: int) -> list[Example]:
    """``count`` examples of ``split`` made from ``seed``; example ``i`` depends on ``(seed, i)`` only.

    ``split`` names the set (``train``, ``evaluation``, ``calibration``, ...) for the caller's
    records; seeds keep the sets disjoint, so every split must use its own seed.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    del split  # the seed alone decides the content
    return [example(seed, i) for i in range(count)]


def fingerprint(examples: list[Example]) -> str:
    """``sha256:<hex>`` over each example's canonical JSON (messages, answer, facts, kind), in order."""
    digest = hashlib.sha256()
    for ex in examples:
        record = {"messages": list(ex.messages), "answer": ex.answer, "facts": list(ex.facts), "kind": ex.kind}
        digest.update(json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def numbers(text: str) -> list[str]:
    """The numbers in ``text`` as written: whole digit runs, ``HH:MM`` kept as one."""
    return _NUMBER.findall(text)


def score(answer: str, example: Example) -> bool:
    """The task metric for one answer: every fact stated exactly, and no number that is not a fact."""
    found = numbers(answer)
    allowed = {f for f in example.facts if _NUMBER.fullmatch(f)}
    if any(n not in allowed for n in found):
        return False
    for fact in example.facts:
        if _NUMBER.fullmatch(fact):
            if fact not in found:
                return False
        elif re.search(rf"(?<!\w){re.escape(fact)}(?!\w)", answer) is None:
            return False
    return True
