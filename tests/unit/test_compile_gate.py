"""The accuracy gate's figures and verdicts, on hand-made outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeds.compile.gates.image import GateResult, cosine_rows, evaluate, judge
from edgeds.config import AccuracyBudget

LABELS = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])


def _logits(pred: np.ndarray) -> np.ndarray:
    out = np.zeros((len(pred), 4), np.float32)
    out[np.arange(len(pred)), pred] = 5.0
    return out


def test_identical_outputs_pass() -> None:
    ref = {"logits": _logits(LABELS)}
    result = evaluate(ref, ref, LABELS, AccuracyBudget(), "logits")
    assert result.passed and result.failures == ()
    assert result.reference_top1 == result.top1 == 1.0
    assert result.top1_drop == 0.0 and result.agreement == 1.0
    assert result.cosine["logits"] == pytest.approx(1.0) and result.max_abs_error == 0.0


def test_drop_agreement_cosine_and_abs_error_are_measured() -> None:
    ref = {"logits": _logits(LABELS)}
    wrong = LABELS.copy()
    wrong[:2] = (wrong[:2] + 1) % 4  # two of ten predictions change, both were right
    cand = {"logits": _logits(wrong)}
    result = evaluate(ref, cand, LABELS, AccuracyBudget(max_abs_error=1.0), "logits")
    assert result.top1 == pytest.approx(0.8)
    assert result.top1_drop == pytest.approx(20.0)  # percentage points
    assert result.agreement == pytest.approx(0.8)
    assert result.cosine["logits"] == pytest.approx(0.8)  # 8 identical rows, 2 orthogonal
    assert result.max_abs_error == pytest.approx(5.0)
    assert not result.passed
    text = " ".join(result.failures)
    for word in ("top-1 drop", "agreement", "cosine", "max abs error"):
        assert word in text


def test_every_output_is_compared() -> None:
    ref = {"logits": _logits(LABELS), "features": np.ones((10, 3), np.float32)}
    cand = {"logits": _logits(LABELS), "features": -np.ones((10, 3), np.float32)}
    result = evaluate(ref, cand, LABELS, AccuracyBudget(), "logits")
    assert result.cosine["features"] == pytest.approx(-1.0)
    assert result.min_cosine == pytest.approx(-1.0)
    assert not result.passed and result.agreement == 1.0


def test_judge_reapplies_a_budget() -> None:
    figures = GateResult(0.9, 0.893, 0.7, 0.99, {"logits": 0.999}, 0.1, True)
    assert not judge(figures, AccuracyBudget(max_top1_drop=0.5)).passed
    assert judge(figures, AccuracyBudget(max_top1_drop=1.0)).passed
    assert GateResult.from_dict(figures.as_dict()) == figures


def test_cosine_of_zero_rows() -> None:
    zeros = np.zeros((2, 3))
    assert cosine_rows(zeros, zeros).tolist() == [1.0, 1.0]
    assert cosine_rows(zeros, np.ones((2, 3))).tolist() == [0.0, 0.0]
