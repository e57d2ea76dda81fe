"""Incremental detokenization: token ids arrive one step at a time, text goes out as deltas.

Decoding each new token alone is wrong for byte-level and SentencePiece vocabularies (a
character may span tokens, a leading space depends on the previous token); decoding the whole
sequence each step costs O(n) per token. :class:`Detokenizer` decodes a short window instead, as
vLLM does: the text of ``ids[prefix:read]`` (already emitted) and of ``ids[prefix:]``; the
difference is the delta. It emits nothing while the text ends in an incomplete UTF-8 sequence
(U+FFFD), so no delta ever splits a character; :meth:`Detokenizer.flush` emits what is left.

Two phases, so that a step's sequences are decoded in one batched call (a runtime's decode has
a fixed cost per call: OpenVINO GenAI's ~0.3 ms, about the same for 1 or 16 windows):
:meth:`Detokenizer.windows` adds the new ids and names the windows to decode,
:meth:`Detokenizer.accept` takes their texts and returns the delta. :meth:`Detokenizer.push`
does both with one decode function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class Detokenizer:
    """One sequence's detokenizer. ``decode`` maps ids to text (special tokens skipped).

    ``context`` are the last prompt ids (a few), decoded as the window's start so that the first
    generated token gets its leading space right; they are never emitted.
    """

    __slots__ = ("_decode", "_ids", "_prefix", "_prefix_text", "_read")

    def __init__(self, decode: Callable[[Sequence[int]], str], context: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = list(context)
        self._prefix = 0
        self._read = len(self._ids)
        self._prefix_text: str | None = None if self._ids else ""

    def windows(self, ids: Sequence[int]) -> list[list[int]]:
        """Add ``ids``; the windows to decode for :meth:`accept`: the full window, then the
        emitted window when its text is not known yet."""
        self._ids.extend(ids)
        full = self._ids[self._prefix :]
        if self._prefix_text is None:
            return [full, self._ids[self._prefix : self._read]]
        return [full]

    def accept(self, texts: Sequence[str]) -> str:
        """The delta, given the texts of the windows :meth:`windows` named (in that order)."""
        text = texts[0]
        prefix_text = self._prefix_text if self._prefix_text is not None else texts[1]
        if len(text) <= len(prefix_text) or text.endswith(REPLACEMENT):
            self._prefix_text = prefix_text
            return ""
        self._prefix = self._read
        self._read = len(self._ids)
        self._prefix_text = None  # the emitted window moved: decoded with the next step's windows
        return text[len(prefix_text) :]

    def push(self, ids: Sequence[int]) -> str:
        """Text completed by ``ids`` (may be empty while a character is incomplete)."""
        return self.accept([self._decode(window) for window in self.windows(ids)])

    def flush(self) -> str:
        """What remains undecoded at the end of the sequence (an incomplete character as U+FFFD)."""
        if self._read >= len(self._ids):
            return ""
        prefix_text = self._prefix_text
        if prefix_text is None:
            prefix_text = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        return text[len(prefix_text) :]
