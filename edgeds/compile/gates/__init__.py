"""Quality gates, one per task: a compiled candidate judged against the FP32 reference.

A gate is a small object registered for a task (:func:`gate_for`): it names the profile's
budget for its task, judges a candidate's figures against that budget (one failure line per
violated bound; cached figures are re-judged this way, so a changed budget takes effect
without recompiling) and renders its figures for the compile report. Gates:

- :mod:`.image`: ``image-classification`` (top-1 drop and agreement, cosine, max abs error);
- :mod:`.lm`: ``causal-lm`` (greedy token agreement, task-metric drop, perplexity ratio,
  tokenizer agreement).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ...config import Profile
from ...errors import CompileError


class TaskGate(Protocol):
    """The gate of one task."""

    task: str

    def budget(self, profile: Profile) -> Any:
        """The profile's budget for this task; :class:`CompileError` when the profile has none."""
        ...

    def judge(self, figures: Mapping[str, Any], budget: Any) -> tuple[str, ...]:
        """One line per bound ``figures`` violate (empty: the candidate passes)."""
        ...

    def cells(self, figures: Mapping[str, Any]) -> dict[str, str]:
        """The figures as report cells, by column name."""
        ...


_GATES: dict[str, TaskGate] = {}


def register(gate: TaskGate) -> None:
    """Make ``gate`` the gate of its task (a later registration replaces an earlier one)."""
    _GATES[gate.task] = gate


def _builtin() -> None:
    if not _GATES:
        from . import image, lm

        register(image.ImageGate())
        register(lm.LMGate())


def tasks() -> tuple[str, ...]:
    """Tasks that have a gate."""
    _builtin()
    return tuple(_GATES)


def gate_for(task: str) -> TaskGate:
    """The gate of ``task``; :class:`CompileError` (one line) for a task without one."""
    _builtin()
    try:
        return _GATES[task]
    except KeyError:
        raise CompileError(f"no quality gate for task {task!r} (gated tasks: {', '.join(_GATES)})") from None
