"""The distribution-free interval of a median that the runtime benchmark reports beside its ratios."""

from __future__ import annotations

import random

import pytest

from edgeds.bench import median_interval
from edgeds.bench.runtime_report import interval, interval_text
from edgeds.errors import BenchError


def test_twelve_windows_give_the_third_and_tenth_values_at_96_percent() -> None:
    values = [0.80 + 0.01 * i for i in range(12)]
    random.Random(3).shuffle(values)  # order statistics: the input order does not matter
    got = median_interval(values)
    assert got["low"] == pytest.approx(0.82) and got["high"] == pytest.approx(0.89)
    assert got["median"] == pytest.approx(0.855)
    assert got["coverage"] == pytest.approx(1 - 2 * (1 + 12 + 66) / 4096, abs=1e-4)  # 0.9614


def test_sixteen_windows_narrow_it_to_the_fourth_and_thirteenth() -> None:
    got = median_interval(list(range(1, 17)))
    assert (got["low"], got["high"]) == (4.0, 13.0)
    assert got["coverage"] >= 0.95


def test_eight_windows_cannot_reach_95_percent_short_of_the_range() -> None:
    # (2nd, 7th) covers only 93 %: the interval is the whole range, which covers 99.2 %
    got = median_interval([5.0, 1.0, 7.0, 3.0, 2.0, 8.0, 4.0, 6.0])
    assert (got["low"], got["high"]) == (1.0, 8.0)
    assert got["coverage"] == pytest.approx(1 - 2 / 256, abs=1e-4)
    lower = median_interval([5.0, 1.0, 7.0, 3.0, 2.0, 8.0, 4.0, 6.0], confidence=0.9)
    assert (lower["low"], lower["high"]) == (2.0, 7.0)


def test_too_few_values_give_the_range_and_say_what_it_covers() -> None:
    got = median_interval([3.0, 1.0, 2.0])
    assert (got["low"], got["high"], got["median"]) == (1.0, 3.0, 2.0)
    assert got["coverage"] == pytest.approx(0.75)  # below the 95 % asked for, and reported as such


def test_no_values_or_a_confidence_outside_zero_to_one_are_refused() -> None:
    with pytest.raises(BenchError, match="at least one"):
        median_interval([])
    with pytest.raises(BenchError, match="confidence"):
        median_interval([1.0, 2.0], confidence=1.0)


def test_the_report_states_the_interval_beside_the_median() -> None:
    windows = [{"serve_ratio": 0.80 + 0.01 * i} for i in range(12)]
    pair = {"windows": windows, "serve_ratio_interval": interval([w["serve_ratio"] for w in windows])}
    assert interval_text(pair, "serve") == "96 % interval of the median 0.82-0.89 over 12 windows"
