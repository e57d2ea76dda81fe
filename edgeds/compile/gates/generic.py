"""The generic gate: a compiled candidate's raw output tensors against the FP32 reference.

Figures, per output of the card: cosine similarity (per sample, flattened; mean over samples),
max abs error, and for an output the card marks ``kind: logits`` whose last dimension is above
1 the argmax agreement over that last dimension (share of positions where the candidate's
argmax is the reference's). The profile's :class:`~edgeds.config.AccuracyBudget` bounds them:
``min_cosine`` (the lowest output's), ``min_top1_agreement`` (the lowest agreement, where there
is one) and ``max_abs_error`` (when set). No labels are involved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import AccuracyBudget, Profile
from ...errors import CompileError
from .image import Outputs, cosine_rows

if TYPE_CHECKING:
    from ...modelcard import ModelCard
    from ..data import ImageSet


@dataclass(frozen=True)
class GenericResult:
    """Per-output cosine, max abs error and (logits outputs) argmax agreement, judged."""

    cosine: dict[str, float]
    max_abs_error: dict[str, float]
    agreement: dict[str, float]
    passed: bool = True
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def min_cosine(self) -> float:
        return min(self.cosine.values()) if self.cosine else 1.0

    @property
    def min_agreement(self) -> float | None:
        return min(self.agreement.values()) if self.agreement else None

    @property
    def worst_abs_error(self) -> float:
        return max(self.max_abs_error.values(), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failures"] = list(self.failures)
        data["min_cosine"] = self.min_cosine
        data["min_agreement"] = self.min_agreement
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenericResult:
        def floats(key: str) -> dict[str, float]:
            return {str(k): float(v) for k, v in (data.get(key) or {}).items()}

        return cls(
            floats("cosine"),
            floats("max_abs_error"),
            floats("agreement"),
            bool(data.get("passed", True)),
            tuple(str(f) for f in data.get("failures") or ()),
        )

    def manifest_accuracy(self) -> dict[str, Any]:
        """The manifest's ``accuracy`` block."""
        block: dict[str, Any] = {"cosine": self.min_cosine, "max_abs_error": self.worst_abs_error}
        if self.min_agreement is not None:
            block["agreement"] = self.min_agreement
        return block


def judge(result: GenericResult, budget: AccuracyBudget) -> GenericResult:
    """``result`` judged against ``budget`` (one failure line per violated bound and output)."""
    failures = []
    for name, cos in result.cosine.items():
        if cos < budget.min_cosine:
            failures.append(f"{name}: cosine {cos:.4f} < {budget.min_cosine}")
    for name, agree in result.agreement.items():
        if agree < budget.min_top1_agreement:
            failures.append(f"{name}: argmax agreement {agree:.4f} < {budget.min_top1_agreement}")
    if budget.max_abs_error is not None:
        for name, err in result.max_abs_error.items():
            if err > budget.max_abs_error:
                failures.append(f"{name}: max abs error {err:.4g} > {budget.max_abs_error}")
    return dataclasses.replace(result, passed=not failures, failures=tuple(failures))


def evaluate(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    logits: frozenset[str],
    budget: AccuracyBudget,
    names: tuple[str, ...],
) -> GenericResult:
    """The candidate's figures on the outputs ``names`` (rows aligned with the reference)."""
    cosine: dict[str, float] = {}
    errors: dict[str, float] = {}
    agreement: dict[str, float] = {}
    for name in names:
        if name not in candidate:
            raise CompileError(f"the compiled model has no output {name!r} (it has {sorted(candidate)})")
        ref = np.asarray(reference[name], dtype=np.float64)
        cand = np.asarray(candidate[name], dtype=np.float64).reshape(ref.shape)
        cosine[name] = float(cosine_rows(ref, cand).mean()) if len(ref) else 1.0
        errors[name] = float(np.abs(ref - cand).max(initial=0.0))
        if name in logits and ref.ndim >= 2 and ref.shape[-1] > 1:
            agreement[name] = float((ref.argmax(axis=-1) == cand.argmax(axis=-1)).mean())
    return judge(GenericResult(cosine, errors, agreement), budget)


class GenericGate:
    """The ``generic`` gate for the registry (:func:`evaluate` / :func:`judge`)."""

    task = "generic"

    def budget(self, profile: Profile) -> AccuracyBudget:
        return profile.accuracy

    def judge(self, figures: Mapping[str, Any], budget: AccuracyBudget) -> tuple[str, ...]:
        return judge(GenericResult.from_dict(figures), budget).failures

    def cells(self, figures: Mapping[str, Any]) -> dict[str, str]:
        cos, agree = figures.get("min_cosine"), figures.get("min_agreement")
        errors = (figures.get("max_abs_error") or {}).values()
        return {
            "agreement": f"{agree:.4f}" if isinstance(agree, (int, float)) else "",
            "cosine": f"{cos:.4f}" if isinstance(cos, (int, float)) else "",
            "max abs err": f"{max(errors):.4g}" if errors else "",
        }

    def evaluate(
        self, reference: Outputs, candidate: Outputs, validation: ImageSet, card: ModelCard, profile: Profile
    ) -> GenericResult:
        outputs = getattr(card, "outputs", ())
        logits = frozenset(o.name for o in outputs if o.kind == "logits")
        return evaluate(reference, candidate, logits, profile.accuracy, tuple(o.name for o in outputs))

    def restore(self, figures: Mapping[str, Any], profile: Profile) -> GenericResult:
        return judge(GenericResult.from_dict(figures), profile.accuracy)
