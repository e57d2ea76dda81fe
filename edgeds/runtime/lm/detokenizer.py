"""Incremental detokenization: token ids arrive one step at a time, text goes out as deltas.

Decoding each new token alone is wrong for byte-level and SentencePiece vocabularies (a
character may span tokens, a leading space depends on the previous token); decoding the whole
sequence each step costs O(n) per token. :class:`Detokenizer` decodes a short window instead, as
vLLM does: the text of ``ids[prefix:read]`` (already emitted) and of ``ids[prefix:]``; the
difference is the delta. It emits nothing while the text ends in an incomplete UTF-8 sequence
(U+FFFD), so no delta ever splits a character; :meth:`flush` emits what is left at the end.
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
        self._prefix_text = decode(self._ids) if self._ids else ""

    def push(self, ids: Sequence[int]) -> str:
        """Text completed by ``ids`` (may be empty while a character is incomplete)."""
        self._ids.extend(ids)
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(self._prefix_text) or text.endswith(REPLACEMENT):
            return ""
        delta = text[len(self._prefix_text) :]
        self._prefix = self._read
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids[self._prefix :]) if self._prefix < self._read else ""
        return delta

    def flush(self) -> str:
        """What remains undecoded at the end of the sequence (an incomplete character as U+FFFD)."""
        if self._read >= len(self._ids):
            return ""
        text = self._decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        return text[len(self._prefix_text) :]
