"""What a compile did: every backend and precision tried, the outcome, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["passed", "failed", "skipped", "error", "deferred"]


@dataclass
class Attempt:
    """One backend (or LM runtime) at one precision: ``variant`` is ``int8``, ``int8-mixed``, ``fp16``,
    ``fp32``, or for language models ``int4``, ``int4-r0.8`` (INT4 with 20 % of the layers in INT8), ..."""

    backend: str
    precision: str
    variant: str
    outcome: Outcome
    reason: str | None = None
    accuracy: dict[str, Any] | None = None
    size_bytes: int | None = None
    seconds: float = 0.0
    cached: bool = False
    excluded_nodes: list[str] = field(default_factory=list)
    device: str | None = None  # where the gate ran, when it is not plainly the CPU (``OpenVINO CPU``)
    entry: int = 0  # the profile backend entry (0-based) this attempt is for
    resolved_on_device: str | None = None  # what the device decides at load (``OpenVINO device HETERO:GPU,CPU``)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompileReport:
    model: str
    model_sha256: str
    profile: str
    validation_samples: int
    calibration_samples: int
    reference_top1: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    selected: int | None = None  # index into attempts: the bundle's first artifact
    shipped: list[int] = field(default_factory=list)  # indices into attempts: every artifact of the bundle, in order
    first_choice: str | None = None  # one line when the first artifact is not the profile's first choice, and why
    seconds: float = 0.0
    task: str = "image-classification"
    reference: dict[str, Any] | None = None  # the task's reference figures (causal-lm: FP32 metric, perplexity)
    notes: list[str] = field(default_factory=list)  # lines shown under the table (e.g. a fixed batch)
    card: str | None = None  # the model card file used

    @property
    def winner(self) -> Attempt | None:
        return self.attempts[self.selected] if self.selected is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_sha256": self.model_sha256,
            "profile": self.profile,
            "validation_samples": self.validation_samples,
            "calibration_samples": self.calibration_samples,
            "reference_top1": self.reference_top1,
            "attempts": [a.as_dict() for a in self.attempts],
            "selected": self.winner.as_dict() if self.winner else None,
            "shipped": [self.attempts[i].as_dict() for i in self.shipped],
            "first_choice": self.first_choice,
            "seconds": round(self.seconds, 3),
            "task": self.task,
            "reference": self.reference,
            "notes": list(self.notes),
            "card": self.card,
        }

    def shipped_lines(self) -> list[str]:
        """One line per artifact of the bundle, in the order the device tries them: what it is, where
        it was gated and what the device resolves (``2. openvino int8: gated here on OpenVINO CPU;
        OpenVINO device HETERO:GPU,CPU resolved on the device``)."""
        lines = []
        for n, index in enumerate(self.shipped, start=1):
            a = self.attempts[index]
            where = "not gated here: built and checked on the device" if a.outcome == "deferred" else "gated here"
            if a.outcome != "deferred" and a.device:
                where += f" on {a.device}"
            resolved = f"; {a.resolved_on_device} resolved on the device" if a.resolved_on_device else ""
            lines.append(f"{n}. {a.backend} {a.precision}: {where}{resolved}")
        return lines

    def columns(self) -> list[str]:
        """The report table's header for this report's task, each quantity with its unit."""
        return [header(column) for column in self._keys()]

    def _keys(self) -> list[str]:
        return list(TASK_COLUMNS[self.task])

    def rows(self) -> list[list[str]]:
        """Table rows under :meth:`columns`: backend, precision, outcome, the task gate's figures,
        size (MB), time (s, or ``cached``), note. A figure's unit is in its header, not its cell."""
        from .gates import gate_for

        gate = gate_for(self.task)
        figure_columns = self._keys()[3:-3]
        rows = []
        for index, a in enumerate(self.attempts):
            cells = gate.cells(a.accuracy) if a.accuracy else {}
            mark = " ✔" if index == self.selected or index in self.shipped else ""
            rows.append(
                [
                    a.backend + (f" ({a.device})" if a.device else ""),
                    a.variant,
                    a.outcome + mark,
                    *(bare(cells.get(column, ""), column) for column in figure_columns),
                    f"{a.size_bytes / 1e6:.2f}" if a.size_bytes else "",
                    ("cached" if a.cached else f"{a.seconds:.1f}"),
                    "; ".join(x for x in (a.reason, _resolved(a)) if x),
                ]
            )
        return rows


def _resolved(attempt: Attempt) -> str:
    return f"{attempt.resolved_on_device} resolved on the device" if attempt.resolved_on_device else ""


@dataclass
class CompileResult:
    """The outcome of :func:`edgeds.compile.compile_model`: the bundle written and the report."""

    bundle: Path
    report: CompileReport
    backend: str
    precision: str
    signed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle),
            "backend": self.backend,
            "precision": self.precision,
            "signed": self.signed,
            "report": self.report.as_dict(),
        }


UNITS = {"top-1": "%", "mAP": "%", "mAP50": "%", "task metric": "%", "tokenizer": "%", "size": "MB", "time": "s"}
"""The unit of each report column that holds a quantity; a gate's cells may end in it (``92.0%``)."""


def header(column: str) -> str:
    """``column`` as the report table shows it: with its unit, if it has one (``size MB``)."""
    unit = UNITS.get(column)
    return f"{column} {unit}" if unit else column


def bare(cell: str, column: str) -> str:
    """A gate's ``cell`` without the unit that the header of ``column`` already shows."""
    unit = UNITS.get(column)
    return cell.removesuffix(unit) if unit else cell


COLUMNS = ["backend", "precision", "outcome", "top-1", "drop pts", "agreement", "cosine", "size", "time", "why"]
LM_COLUMNS = [
    "runtime",
    "precision",
    "outcome",
    "task metric",
    "drop pts",
    "tokens",
    "ppl ratio",
    "tokenizer",
    "size",
    "time",
    "why",
]
DETECTION_COLUMNS = [
    "backend",
    "precision",
    "outcome",
    "mAP",
    "mAP50",
    "drop pts",
    "agreement",
    "size",
    "time",
    "why",
]
GENERIC_COLUMNS = ["backend", "precision", "outcome", "agreement", "cosine", "max abs err", "size", "time", "why"]
TASK_COLUMNS = {
    "image-classification": COLUMNS,
    "object-detection": DETECTION_COLUMNS,
    "generic": GENERIC_COLUMNS,
    "causal-lm": LM_COLUMNS,
}
