"""The gate registry and the causal-lm gate's figures and bounds (no model needed)."""

from __future__ import annotations

import math

import pytest

from edgeds.compile.gates import gate_for, tasks
from edgeds.compile.gates.image import GateResult, ImageGate
from edgeds.compile.gates.lm import LMGate, LMGateResult, judge, perplexity, token_agreement, tokenizer_agreement
from edgeds.compile.report import Attempt, CompileReport
from edgeds.config import AccuracyBudget, LLMQuality, load_profile
from edgeds.errors import CompileError


def test_every_task_has_a_gate_and_unknown_tasks_are_one_line() -> None:
    assert set(tasks()) >= {"image-classification", "causal-lm"}
    assert isinstance(gate_for("image-classification"), ImageGate)
    assert isinstance(gate_for("causal-lm"), LMGate)
    with pytest.raises(CompileError, match=r"^no quality gate for task 'detection' \(gated tasks: "):
        gate_for("detection")


def test_the_image_gate_behind_the_registry_judges_as_before() -> None:
    figures = GateResult(0.9, 0.88, 2.0, 0.97, {"logits": 0.995}, 0.3, True).as_dict()
    failures = gate_for("image-classification").judge(figures, AccuracyBudget())
    assert failures == ("top-1 drop 2.00 pts > 0.5 pts", "top-1 agreement 0.9700 < 0.98")
    assert gate_for("image-classification").budget(load_profile("x86-cpu")) == load_profile("x86-cpu").accuracy


def test_token_agreement_counts_the_common_prefix() -> None:
    assert token_agreement([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == 1.0
    assert token_agreement([[1, 2, 3, 4]], [[1, 2, 9, 4]]) == 0.5  # nothing after the first difference counts
    assert token_agreement([[1, 2], [5, 6, 7, 8]], [[1, 2, 3, 4], [5, 6, 7, 8]]) == 6 / 8
    with pytest.raises(CompileError):
        token_agreement([[1]], [])


def test_perplexity_and_tokenizer_agreement() -> None:
    assert perplexity([0.0, 0.0]) == 1.0
    assert math.isclose(perplexity([0.1, 0.3]), math.exp(0.2))
    assert tokenizer_agreement([[1, 2], [3]], [[1, 2], [3, 4]]) == 0.5


def test_each_violated_bound_is_one_line() -> None:
    result = LMGateResult(
        prompts=10,
        token_agreement=0.7,
        tokenizer_agreement=0.9,
        reference_metric=0.93,
        metric=0.85,
        reference_perplexity=1.08,
        perplexity=1.30,
    )
    judged = judge(result, LLMQuality())
    assert not judged.passed
    assert judged.failures == (
        "token agreement 0.7000 < 0.85",
        "task metric drop 8.00 pts > 3.0 pts",
        "perplexity ratio 1.2037 > 1.1",
        "tokenizer agreement 0.9000 < 1.0",
    )
    good = judge(LMGateResult(10, 0.95, 1.0, 0.93, 0.92, 1.08, None), LLMQuality())
    assert good.passed and good.perplexity_ratio is None  # a runtime without logits: not judged on perplexity
    again = LMGateResult.from_dict(judged.as_dict())
    assert gate_for("causal-lm").judge(again.as_dict(), LLMQuality()) == judged.failures
    assert (
        gate_for("causal-lm").judge(
            again.as_dict(),
            LLMQuality(
                max_metric_drop=10, min_token_agreement=0.5, max_perplexity_ratio=2, min_tokenizer_agreement=0.9
            ),
        )
        == ()
    )


def test_a_profile_without_an_llm_block_cannot_gate_a_causal_lm() -> None:
    profile = load_profile("x86-cpu").model_copy(update={"llm": None})
    with pytest.raises(CompileError, match="profile 'x86-cpu' has no llm block"):
        gate_for("causal-lm").budget(profile)


def test_the_report_shows_the_lm_figures() -> None:
    report = CompileReport("ckpt", "0" * 64, "x86-cpu", 10, 0, task="causal-lm")
    figures = judge(LMGateResult(10, 0.9, 1.0, 0.93, 0.92, 1.08, 1.09), LLMQuality()).as_dict()
    report.attempts.append(Attempt("openvino-genai", "int4", "int4", "passed", accuracy=figures, device="CPU"))
    report.selected = 0
    assert report.columns()[3:8] == ["task metric %", "drop pts", "tokens", "ppl ratio", "tokenizer %"]
    row = report.rows()[0]
    assert row[:8] == ["openvino-genai (CPU)", "int4", "passed ✔", "92.0", "+1.00", "0.9000", "1.0093", "100.0"]
