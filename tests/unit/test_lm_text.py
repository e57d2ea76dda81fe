"""Property tests of the LM engine's text path: incremental detokenizer and stop strings."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from edgeds.runtime.lm.detokenizer import REPLACEMENT, Detokenizer
from edgeds.runtime.lm.stops import StopMatcher


def _byte_tokens(text: str, cuts: list[int]) -> tuple[list[bytes], list[int]]:
    """Split ``text``'s UTF-8 bytes at arbitrary byte positions: a byte-level vocabulary."""
    data = text.encode("utf-8")
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    vocab = [data[a:b] for a, b in itertools.pairwise(points) if b > a]
    return vocab, list(range(len(vocab)))


@given(st.text(max_size=40), st.lists(st.integers(0, 400), max_size=30), st.integers(1, 3))
def test_deltas_add_up_and_never_split_a_character(text: str, cuts: list[int], chunk: int) -> None:
    vocab, ids = _byte_tokens(text, cuts)

    def decode(seq: Sequence[int]) -> str:
        return b"".join(vocab[i] for i in seq).decode("utf-8", errors="replace")

    detok = Detokenizer(decode)
    deltas = [detok.push(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    deltas.append(detok.flush())
    assert "".join(deltas) == text
    if REPLACEMENT not in text:
        assert all(REPLACEMENT not in d for d in deltas)


def test_an_incomplete_character_is_held_until_complete() -> None:
    vocab = [b"ok ", "é".encode()[:1], "é".encode()[1:], b"!"]

    def decode(seq: Sequence[int]) -> str:
        return b"".join(vocab[i] for i in seq).decode("utf-8", errors="replace")

    detok = Detokenizer(decode, context=[0])
    assert [detok.push([0]), detok.push([1]), detok.push([2]), detok.push([3])] == ["ok ", "", "é", "!"]
    assert detok.flush() == ""
    cut = Detokenizer(decode)
    assert cut.push([1]) == "" and cut.flush() == REPLACEMENT


@given(
    st.text(alphabet="abc", max_size=30),
    st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=3),
    st.lists(st.integers(1, 5), min_size=1, max_size=30),
)
def test_text_is_cut_before_the_first_stop_string(text: str, stops: list[str], sizes: list[int]) -> None:
    matcher = StopMatcher(tuple(stops))
    out: list[str] = []
    pos = 0
    i = 0
    while pos < len(text) and not matcher.stopped:
        size = sizes[i % len(sizes)]
        out.append(matcher.feed(text[pos : pos + size]))
        pos += size
        i += 1
    out.append(matcher.flush())
    found = [(at + len(s), at) for s, at in ((s, text.find(s)) for s in stops) if at >= 0]
    expected = text[: min(found)[1]] if found else text
    assert "".join(out) == expected
    assert matcher.stopped == bool(found)


def test_no_stops_passes_text_through() -> None:
    matcher = StopMatcher(("",))
    assert matcher.feed("abc") == "abc" and matcher.flush() == "" and not matcher.stopped
