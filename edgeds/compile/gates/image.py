"""The image-classification gate: a compiled candidate against the FP32 reference on the validation split.

Figures: top-1 of the reference and of the candidate against the labels (fractions), the
top-1 drop in percentage points, top-1 agreement between the two, per-output cosine similarity
(mean over samples, the lowest output reported) and max abs error (over every output). The
profile's :class:`~edgeds.config.AccuracyBudget` decides; :attr:`GateResult.failures` says why
a candidate failed, one line per violated bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...backends.base import Backend
from ...config import AccuracyBudget, Profile
from ...errors import InferenceError

if TYPE_CHECKING:
    from ...modelcard import ModelCard
    from ..data import ImageSet

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class GateResult:
    reference_top1: float
    top1: float
    top1_drop: float  # percentage points, positive = worse
    agreement: float
    cosine: dict[str, float]
    max_abs_error: float
    passed: bool
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def min_cosine(self) -> float:
        return min(self.cosine.values()) if self.cosine else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference_top1": self.reference_top1,
            "top1": self.top1,
            "top1_drop": self.top1_drop,
            "agreement": self.agreement,
            "cosine": dict(self.cosine),
            "min_cosine": self.min_cosine,
            "max_abs_error": self.max_abs_error,
            "passed": self.passed,
            "failures": list(self.failures),
        }

    def manifest_accuracy(self) -> dict[str, Any]:
        """The manifest's ``accuracy`` block."""
        return {
            "reference_top1": self.reference_top1,
            "top1": self.top1,
            "top1_drop": self.top1_drop,
            "agreement": self.agreement,
            "cosine": self.min_cosine,
            "max_abs_error": self.max_abs_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> GateResult:
        return cls(
            reference_top1=float(data["reference_top1"]),  # type: ignore[arg-type]
            top1=float(data["top1"]),  # type: ignore[arg-type]
            top1_drop=float(data["top1_drop"]),  # type: ignore[arg-type]
            agreement=float(data["agreement"]),  # type: ignore[arg-type]
            cosine={str(k): float(v) for k, v in data["cosine"].items()},  # type: ignore[attr-defined]
            max_abs_error=float(data["max_abs_error"]),  # type: ignore[arg-type]
            passed=bool(data["passed"]),
            failures=tuple(str(f) for f in data.get("failures") or ()),  # type: ignore[attr-defined]
        )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample (row) of ``a`` and ``b`` (flattened per sample)."""
    x = a.reshape(len(a), -1).astype(np.float64)
    y = b.reshape(len(b), -1).astype(np.float64)
    num = (x * y).sum(axis=1)
    den = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(np.allclose(x, y), 1.0, 0.0))
    return np.asarray(cos)


def evaluate(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    labels: np.ndarray,
    budget: AccuracyBudget,
    logits_output: str,
) -> GateResult:
    """Compare ``candidate`` outputs with ``reference`` outputs (same samples, same order)."""
    ref_pred = reference[logits_output].reshape(len(labels), -1).argmax(axis=1)
    cand_pred = candidate[logits_output].reshape(len(labels), -1).argmax(axis=1)
    ref_top1 = float((ref_pred == labels).mean())
    top1 = float((cand_pred == labels).mean())
    drop = round((ref_top1 - top1) * 100.0, 4)
    agreement = float((ref_pred == cand_pred).mean())
    cosine: dict[str, float] = {}
    max_abs = 0.0
    for name, ref in reference.items():
        cand = candidate[name].astype(np.float64)
        cosine[name] = float(cosine_rows(ref, cand).mean())
        max_abs = max(max_abs, float(np.abs(ref.astype(np.float64) - cand).max(initial=0.0)))
    return judge(GateResult(ref_top1, top1, drop, agreement, cosine, max_abs, True), budget)


def judge(result: GateResult, budget: AccuracyBudget) -> GateResult:
    """``result``'s figures judged against ``budget`` (cached figures are re-judged this way)."""
    failures = []
    if result.top1_drop > budget.max_top1_drop:
        failures.append(f"top-1 drop {result.top1_drop:.2f} pts > {budget.max_top1_drop} pts")
    if result.agreement < budget.min_top1_agreement:
        failures.append(f"top-1 agreement {result.agreement:.4f} < {budget.min_top1_agreement}")
    if result.min_cosine < budget.min_cosine:
        failures.append(f"cosine {result.min_cosine:.4f} < {budget.min_cosine}")
    if budget.max_abs_error is not None and result.max_abs_error > budget.max_abs_error:
        failures.append(f"max abs error {result.max_abs_error:.4g} > {budget.max_abs_error}")
    return dataclasses.replace(result, passed=not failures, failures=tuple(failures))


class ImageGate:
    """The ``image-classification`` gate (:func:`evaluate` / :func:`judge`) for the registry."""

    task = "image-classification"

    def budget(self, profile: Profile) -> AccuracyBudget:
        return profile.accuracy

    def judge(self, figures: Mapping[str, Any], budget: AccuracyBudget) -> tuple[str, ...]:
        return judge(GateResult.from_dict(figures), budget).failures

    def cells(self, figures: Mapping[str, Any]) -> dict[str, str]:
        acc = figures
        return {
            "top-1": f"{acc['top1'] * 100:.2f}%" if "top1" in acc else "",
            "drop pts": f"{acc['top1_drop']:+.2f}" if "top1_drop" in acc else "",
            "agreement": f"{acc['agreement']:.4f}" if "agreement" in acc else "",
            "cosine": f"{acc['min_cosine']:.4f}" if "min_cosine" in acc else "",
        }

    def evaluate(
        self, reference: Outputs, candidate: Outputs, validation: ImageSet, card: ModelCard, profile: Profile
    ) -> GateResult:
        return evaluate(reference, candidate, validation.labels, profile.accuracy, card.output.name)

    def restore(self, figures: Mapping[str, Any], profile: Profile) -> GateResult:
        return judge(GateResult.from_dict(figures), profile.accuracy)


def run_batches(
    backend: Backend,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    input_name: str,
    batch: int,
    on_batch: Callable[[int], None] | None = None,
) -> Outputs:
    """Every output of an opened ``backend`` for ``inputs`` (preprocessed, [N, ...]): one array
    fed as ``input_name``, or every input by name (rows aligned).

    Feeds whole batches of size ``batch`` (the last padded with zeros) so backends that
    allocate per bucket work; returns caller-owned arrays with the padding cut off.
    """
    feeds = {input_name: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
    bufs = {name: np.zeros((batch, *x.shape[1:]), dtype=x.dtype) for name, x in feeds.items()}
    count = len(next(iter(feeds.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, count, batch):
        rows = min(batch, count - start)
        for name, x in feeds.items():
            bufs[name][:rows] = x[start : start + rows]
            bufs[name][rows:] = 0
        try:
            outputs = backend.infer(bufs)
        except InferenceError:
            raise
        for name, value in outputs.items():
            parts.setdefault(name, []).append(np.array(value[:rows], dtype=np.float32, copy=True))
        if on_batch is not None:
            on_batch(rows)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
