"""Tables that never cut a value: a grid when it fits, wrapped cells when not, one block per row last.

:class:`FitTable` decides at render time, against the width the console offers (a terminal's
columns, ``$COLUMNS``, or a live display's area):

1. every cell on one line fits: the usual table;
2. every column as wide as its longest word fits: the table with its columns narrowed (each
   keeps at least its longest word; the room left goes to the columns that want more), cells
   wrapped at spaces;
3. otherwise the vertical layout: per row, one ``column: value`` line per column, values wrapped
   under themselves (a word wider than the screen folds onto the next line, never cut with an
   ellipsis).

Cells are rich markup, as in :class:`rich.table.Table`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

_UNBOUNDED = 1 << 16
"""The width cells are measured at: wide enough that nothing clamps their natural widths."""


def cell(value: Any) -> str:
    """A table cell: ``None`` as empty, anything else as its ``str``."""
    return "" if value is None else str(value)


class FitTable:
    """A table of ``columns`` and ``rows`` (markup strings) laid out to the width it is given."""

    def __init__(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows = [[cell(v) for v in row] for row in rows]

    def grid(self, widths: Sequence[int] | None = None) -> Table:
        """The horizontal table, its columns ``widths`` wide (text, without padding) or as wide as they need.

        Cells wrap at spaces; a word longer than its column folds onto the next line, whole.
        """
        out = Table()
        for index, column in enumerate(self.columns):
            width = None if widths is None else widths[index]
            out.add_column(column, overflow="fold", no_wrap=False, width=width)
        for row in self.rows:
            out.add_row(*row)
        return out

    def vertical(self) -> Group:
        """One block per row: ``column: value`` lines, a blank line between rows."""
        parts: list[Any] = []
        for index, row in enumerate(self.rows):
            if index or self.title:
                parts.append(Text(""))
            block = Table.grid(padding=(0, 1))
            block.add_column(style="bold", overflow="fold")
            block.add_column(overflow="fold")
            for column, value in zip(self.columns, row, strict=False):
                block.add_row(Text(f"{column}:"), value)
            parts.append(block)
        return Group(*parts)

    def measure_columns(self, console: Console, options: ConsoleOptions) -> list[Measurement]:
        """Per column, the width of its longest word and of its longest line (header included)."""
        wide = options.update_width(_UNBOUNDED)
        out = []
        for index, column in enumerate(self.columns):
            texts = [column, *(row[index] for row in self.rows if index < len(row))]
            sizes = [Measurement.get(console, wide, console.render_str(text)) for text in texts]
            out.append(Measurement(max(m.minimum for m in sizes), max(m.maximum for m in sizes)))
        return out

    def layout(self, console: Console, options: ConsoleOptions) -> Group:
        """The title over: the table as wide as it needs when that fits ``options.max_width``; else
        with its columns narrowed (never below their longest word) when that fits; else the
        vertical layout."""
        measured = self.measure_columns(console, options)
        room = options.max_width - _frame(len(self.columns))
        body: Table | Group
        if sum(m.maximum for m in measured) <= room:
            body = self.grid()
        elif sum(m.minimum for m in measured) <= room:
            body = self.grid(share(room, measured))
        else:
            body = self.vertical()
        if not self.title:
            return Group(body)
        return Group(Text.from_markup(self.title, style="table.title", justify="left"), body)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        options = options.update(no_wrap=False, overflow="fold")  # a soft-wrapping print would crop the title
        for line in console.render_lines(self.layout(console, options), options, pad=False):
            yield from _rstrip(line)  # no trailing blanks: a piped table diffs and greps cleanly
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.layout(console, options))


def _rstrip(line: list[Segment]) -> list[Segment]:
    """``line`` without the spaces that pad its end."""
    out = list(line)
    while out:
        last = out[-1]
        text = last.text.rstrip(" ")
        if text or last.control:
            out[-1] = Segment(text, last.style, last.control)
            break
        out.pop()
    return out


def _frame(columns: int) -> int:
    """Columns of a rich table's frame: the two edges, the separators, one space each side of a cell."""
    return 2 + (columns - 1) + 2 * columns


def share(room: int, measured: Sequence[Measurement]) -> list[int]:
    """Column widths summing to at most ``room``: each column its minimum, the rest shared in
    proportion to how much more each would take, no column above its maximum."""
    widths = [m.minimum for m in measured]
    wants = [m.maximum - m.minimum for m in measured]
    spare = room - sum(widths)
    total = sum(wants)
    if spare <= 0 or total == 0:
        return widths
    gains = [min(want, spare * want // total) for want in wants]
    widths = [w + g for w, g in zip(widths, gains, strict=True)]
    left = spare - sum(gains)
    for index in sorted(range(len(widths)), key=lambda i: gains[i] - wants[i]):  # the most still wanted first
        if left <= 0:
            break
        if widths[index] < measured[index].maximum:
            widths[index] += 1
            left -= 1
    return widths
