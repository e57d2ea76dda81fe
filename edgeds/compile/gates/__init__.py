"""Quality gates, one per task: a compiled candidate judged against the FP32 reference.

A gate is a small object registered for a task (:func:`gate_for`): it names the profile's
budget for its task, judges a candidate's figures against that budget (one failure line per
violated bound; cached figures are re-judged this way, so a changed budget takes effect
without recompiling) and renders its figures for the compile report. Gates:

- :mod:`.image`: ``image-classification`` (top-1 drop and agreement, cosine, max abs error);
- :mod:`.detection`: ``object-detection`` (COCO mAP drop on labelled data, else box agreement
  with the FP32 model);
- :mod:`.generic`: ``generic`` (per-output cosine, max abs error, argmax agreement of logits
  outputs);
- :mod:`.lm`: ``causal-lm`` (greedy token agreement, task-metric drop, perplexity ratio,
  tokenizer agreement).

The gates of tasks whose model is an ONNX graph with an image input (compiled by
:mod:`edgeds.compile.pipeline`) are also :class:`TensorGate` s (:func:`tensor_gate_for`): they
compute the figures from the reference's and the candidate's outputs on the validation set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ...config import Profile
from ...errors import CompileError

if TYPE_CHECKING:
    from ...modelcard import ModelCard
    from ..data import ImageSet


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


class Figures(Protocol):
    """A candidate's gate figures, judged: what the pipeline records in the report and the manifest."""

    @property
    def passed(self) -> bool: ...

    @property
    def failures(self) -> tuple[str, ...]: ...

    def as_dict(self) -> dict[str, Any]:
        """Every figure (the cache, the report and the manifest's ``gated.figures`` keep this)."""
        ...

    def manifest_accuracy(self) -> dict[str, Any]:
        """The manifest's ``accuracy`` block."""
        ...


class TensorGate(TaskGate, Protocol):
    """The gate of a task whose candidates are judged on their output tensors."""

    def evaluate(
        self,
        reference: Mapping[str, np.ndarray],
        candidate: Mapping[str, np.ndarray],
        validation: ImageSet,
        card: ModelCard,
        profile: Profile,
    ) -> Figures:
        """The candidate's figures on ``validation`` (rows aligned with both outputs), judged."""
        ...

    def restore(self, figures: Mapping[str, Any], profile: Profile) -> Figures:
        """Cached figures (``as_dict``), judged again against ``profile``'s budget."""
        ...


_GATES: dict[str, TaskGate] = {}


def register(gate: TaskGate) -> None:
    """Make ``gate`` the gate of its task (a later registration replaces an earlier one)."""
    _GATES[gate.task] = gate


def _builtin() -> None:
    if not _GATES:
        from . import detection, generic, image, lm

        register(image.ImageGate())
        register(detection.DetectionGate())
        register(generic.GenericGate())
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


def tensor_gate_for(task: str) -> TensorGate:
    """The gate of ``task`` where it judges output tensors; :class:`CompileError` otherwise."""
    gate = gate_for(task)
    if not hasattr(gate, "evaluate") or not hasattr(gate, "restore"):
        raise CompileError(f"the gate of task {task!r} does not judge tensor outputs")
    return gate  # type: ignore[return-value]
