"""One gating run of a rig: run its suites in a scratch directory, then write the report.

What ``edgeds hil run`` does: :func:`gate` calls :func:`~edgeds.hil.runner.run_rig` with a new
temporary work directory (removed afterwards, whatever happens) and writes the report with
:func:`~edgeds.hil.report.write_report`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .report import write_report
from .rig import Rig
from .runner import DEFAULT_SUITES, Progress, RunResult, run_rig


def _no_progress(message: str) -> None:
    """The default ``progress`` callback: ignore the messages."""


def gate(
    rig: Rig,
    suites: list[str] | tuple[str, ...] = DEFAULT_SUITES,
    *,
    bundle: Path | None = None,
    report_dir: Path | None = None,
    perf_seconds: float = 1.5,
    progress: Progress = _no_progress,
) -> tuple[RunResult, dict[str, Path]]:
    """Run ``suites`` on ``rig`` and write the report; ``(result, report files by kind)``.

    ``report_dir`` defaults to a new temporary directory named after the rig (kept: it holds the
    report). The report is written only when the run completes; the run's errors
    (:class:`~edgeds.errors.HilError`, deploy and telemetry errors) propagate.
    """
    out = report_dir or Path(tempfile.mkdtemp(prefix=f"edgeds-hil-{rig.name}-"))
    work = Path(tempfile.mkdtemp(prefix="edgeds-hil-work-"))
    try:
        result = run_rig(rig, suites, bundle=bundle, work=work, perf_seconds=perf_seconds, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result, write_report(result, out)
