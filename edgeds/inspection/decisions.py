"""Per-frame decisions: accept / reject / uncertain from class probabilities, plus the line alarm.

Rule, for probabilities ``p`` over the card's labels (one frame):

1. **reject** when some defect class ``d`` (a class not in ``accept_classes``) has
   ``p[d] >= thresholds.get(d, uncertain_below)``; the defect reported is the most probable of
   those over their threshold.
2. else **accept** when the most probable class is an accept class and its probability is
   ``>= thresholds.get(that class, uncertain_below)``.
3. else **uncertain** (nothing is confident enough either way: send the part to a person).

``predicted``/``score`` are always the arg-max class and its probability (what offline top-1
accuracy scores), independent of the decision.

Line alarm (optional): after ``alarm_consecutive_rejects`` rejects in a row the alarm is raised
once (``Decision.alarm`` is True on that frame); an accept resets the run, an uncertain frame
neither counts nor resets it. The alarm re-arms after the run is reset.

:class:`DecisionPolicy` is built once per station and holds preallocated scratch for the
softmax, so deciding allocates only the returned :class:`Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..evaluate import softmax

Verdict = Literal["accept", "reject", "uncertain"]
VERDICTS: tuple[Verdict, ...] = ("accept", "reject", "uncertain")


@dataclass(frozen=True)
class Decision:
    """The outcome for one frame. ``defect`` is the rejecting class (None unless rejected)."""

    verdict: Verdict
    predicted: int
    label: str
    score: float
    defect: str | None = None
    alarm: bool = False
    consecutive_rejects: int = 0


class DecisionPolicy:
    """Thresholds of one station. Not thread-safe: one policy per station thread."""

    def __init__(
        self,
        labels: Sequence[str],
        thresholds: Mapping[str, float] | None = None,
        uncertain_below: float = 0.5,
        accept_classes: Sequence[str] = ("ok",),
        alarm_consecutive_rejects: int | None = None,
        outputs_are_logits: bool = True,
    ) -> None:
        self.labels = tuple(labels)
        thresholds = dict(thresholds or {})
        unknown = sorted(set(thresholds) - set(self.labels)) + sorted(set(accept_classes) - set(self.labels))
        if unknown:
            raise ConfigError.single(
                None, None, "inspection", f"unknown class(es) {unknown}; the model's labels are {list(self.labels)}"
            )
        if not accept_classes:
            raise ConfigError.single(None, None, "inspection.accept_classes", "needs at least one class")
        for name, value in thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError.single(None, None, f"inspection.thresholds.{name}", f"must be in 0..1, got {value}")
        if alarm_consecutive_rejects is not None and alarm_consecutive_rejects < 1:
            raise ConfigError.single(None, None, "inspection.alarm_consecutive_rejects", "must be >= 1")
        self.uncertain_below = float(uncertain_below)
        self.accept_classes = tuple(accept_classes)
        self.alarm_after = alarm_consecutive_rejects
        self.outputs_are_logits = outputs_are_logits
        n = len(self.labels)
        self._threshold = np.array([thresholds.get(lbl, self.uncertain_below) for lbl in self.labels], np.float32)
        self._is_accept = np.array([lbl in self.accept_classes for lbl in self.labels], dtype=bool)
        self._defect_idx = np.flatnonzero(~self._is_accept)
        self._probs = np.empty(n, dtype=np.float32)
        self._run = 0
        self._alarm_active = False

    @property
    def consecutive_rejects(self) -> int:
        return self._run

    def probabilities(self, row: np.ndarray) -> np.ndarray:
        """Softmax of one logits row (or a copy of probabilities) into the policy's scratch."""
        probs = self._probs
        if self.outputs_are_logits:
            softmax(row, out=probs)
        else:
            probs[...] = row
        return probs

    def decide(self, row: np.ndarray) -> Decision:
        """Decide one frame from its output row and advance the alarm state."""
        probs = self.probabilities(row)
        top = int(probs.argmax())
        score = float(probs[top])
        defect: str | None = None
        over = self._defect_idx[probs[self._defect_idx] >= self._threshold[self._defect_idx]]
        if over.size:
            worst = int(over[int(probs[over].argmax())])
            verdict: Verdict = "reject"
            defect = self.labels[worst]
        elif self._is_accept[top] and score >= self._threshold[top]:
            verdict = "accept"
        else:
            verdict = "uncertain"
        alarm = self._advance(verdict)
        return Decision(verdict, top, self.labels[top], score, defect, alarm, self._run)

    def _advance(self, verdict: Verdict) -> bool:
        if verdict == "accept":
            self._run = 0
            self._alarm_active = False
            return False
        if verdict == "uncertain":
            return False
        self._run += 1
        if self.alarm_after is not None and self._run >= self.alarm_after and not self._alarm_active:
            self._alarm_active = True
            return True
        return False
