"""Stop strings: cut generated text before the first stop string, across token boundaries.

"First" is the first one the stream completes (the smallest end; at equal ends the earlier
start), so the result does not depend on how the text is split into deltas.

:class:`StopMatcher` is fed the text deltas of one sequence and returns what may be emitted:
text that cannot be the start of a stop string is emitted at once, a tail that could still grow
into one is held back until the next delta shows it does not. The emitted text never contains a
stop string; once one is found the sequence is over (the engine cancels it in the runtime).
"""

from __future__ import annotations


class StopMatcher:
    """One sequence's stop-string state. ``stops`` are non-empty strings."""

    __slots__ = ("_held", "_longest", "_stops", "stopped")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``held + text`` that may be emitted now; sets :attr:`stopped` at a stop string."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        cut, end = -1, -1  # the stop string completed first (smallest end), as a stream meets it
        for stop in self._stops:
            at = buffer.find(stop)
            if at >= 0 and (end < 0 or (at + len(stop), at) < (end, cut)):
                cut, end = at, at + len(stop)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = 0
        for size in range(min(self._longest - 1, len(buffer)), 0, -1):
            tail = buffer[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                keep = size
                break
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back tail at the end of the sequence (it turned out not to be a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
