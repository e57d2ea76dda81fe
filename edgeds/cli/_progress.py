"""A rich progress display (always on stderr) behind the ``progress(task, done, total)`` callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ._output import console_err


@contextmanager
def progress_callback(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None]]:
    """Yield a ``(task, done, total) -> None`` callable drawing one bar per task name on stderr."""
    if not enabled:
        yield lambda task, done, total: None
        return
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console_err,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(task: str, done: int, total: int | None) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total)
        bars.update(tasks[task], completed=done, total=total)

    with bars:
        yield update
