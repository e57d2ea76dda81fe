"""Inspection decisions: per-class thresholds, accept / reject / uncertain, the line alarm."""

from __future__ import annotations

import numpy as np
import pytest

from edgeds.errors import ConfigError
from edgeds.evaluate import softmax
from edgeds.inspection.decisions import DecisionPolicy

LABELS = ("ok", "scratch", "pit", "crack", "stain")


def probs(**values: float) -> np.ndarray:
    """A probability row; unnamed classes share what is left."""
    row = np.zeros(len(LABELS), dtype=np.float32)
    for name, value in values.items():
        row[LABELS.index(name)] = value
    rest = [i for i, name in enumerate(LABELS) if name not in values]
    row[rest] = (1.0 - sum(values.values())) / len(rest)
    return row


def policy(**kwargs: object) -> DecisionPolicy:
    return DecisionPolicy(LABELS, outputs_are_logits=False, **kwargs)  # type: ignore[arg-type]


def test_accept_reject_uncertain_by_default_threshold() -> None:
    p = policy()
    assert p.decide(probs(ok=0.9)).verdict == "accept"
    rejected = p.decide(probs(crack=0.8))
    assert (rejected.verdict, rejected.defect, rejected.label) == ("reject", "crack", "crack")
    unsure = p.decide(probs(ok=0.4, pit=0.3))
    assert unsure.verdict == "uncertain"
    assert unsure.label == "ok" and unsure.score == pytest.approx(0.4)


def test_per_class_threshold_rejects_a_defect_that_is_not_the_top_class() -> None:
    p = policy(thresholds={"crack": 0.3, "stain": 0.9})
    d = p.decide(probs(ok=0.55, crack=0.35))
    assert d.verdict == "reject" and d.defect == "crack"
    assert d.label == "ok"  # the reported class is still the arg-max (what top-1 accuracy scores)
    # stain is the top class but under its own (strict) threshold: not rejected, and not an accept
    assert p.decide(probs(stain=0.8)).verdict == "uncertain"


def test_accept_threshold_of_the_good_class() -> None:
    p = policy(thresholds={"ok": 0.95})
    assert p.decide(probs(ok=0.9)).verdict == "uncertain"
    assert p.decide(probs(ok=0.97)).verdict == "accept"


def test_several_defects_over_threshold_report_the_most_probable() -> None:
    p = policy(thresholds={"scratch": 0.2, "pit": 0.2})
    assert p.decide(probs(scratch=0.3, pit=0.45)).defect == "pit"


def test_line_alarm_after_n_consecutive_rejects_once_until_an_accept() -> None:
    p = policy(alarm_consecutive_rejects=3)
    reject, accept, unsure = probs(pit=0.9), probs(ok=0.9), probs(ok=0.3)
    alarms = [p.decide(reject).alarm for _ in range(2)]
    assert alarms == [False, False]
    assert p.decide(unsure).alarm is False  # uncertain neither counts nor resets
    third = p.decide(reject)
    assert third.alarm and third.consecutive_rejects == 3
    assert [p.decide(reject).alarm for _ in range(3)] == [False, False, False]  # raised once per run
    assert p.decide(accept).consecutive_rejects == 0
    assert [p.decide(reject).alarm for _ in range(3)] == [False, False, True]  # re-armed by the accept


def test_no_alarm_configured_never_alarms() -> None:
    p = policy()
    assert not any(p.decide(probs(pit=0.9)).alarm for _ in range(50))


def test_logits_go_through_softmax() -> None:
    logits = np.array([[0.1, 2.5, -1.0, 0.3, 0.0]], dtype=np.float32)
    p = DecisionPolicy(LABELS)
    d = p.decide(logits[0])
    expected = softmax(logits.astype(np.float64))[0]
    assert d.predicted == 1
    assert d.score == pytest.approx(float(expected[1]), rel=1e-5)
    assert p.probabilities(logits[0]).sum() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"thresholds": {"dent": 0.5}},
        {"accept_classes": ("good",)},
        {"thresholds": {"pit": 1.5}},
        {"accept_classes": ()},
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DecisionPolicy(LABELS, **kwargs)  # type: ignore[arg-type]
