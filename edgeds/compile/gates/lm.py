"""The causal-lm gate: a compressed language model against the FP32 checkpoint on held-out prompts.

Figures, all on the card's evaluation prompts with greedy decoding:

- **token agreement**: per prompt, the tokens the candidate generates before it first differs
  from the FP32 reference, summed over prompts and divided by the summed length of the longer
  of the two outputs (after the first difference greedy outputs share no context, so later
  positions are not compared);
- **task metric** of the reference and of the candidate (fractions; the card's scorer on the
  decoded answers) and its **drop** in percentage points;
- **perplexity** over the reference answers (exp of the mean per-answer NLL) and its ratio to
  the reference's; None where the runtime gives no logits (the report says so);
- **tokenizer agreement**: the share of prompts the runtime's tokenizer encodes to exactly the
  ids the checkpoint's ``tokenizer.json`` gives.

The profile's :class:`~edgeds.config.LLMQuality` decides; :attr:`LMGateResult.failures` holds one
line per violated bound, like the image gate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...config import LLMQuality, Profile
from ...errors import CompileError


@dataclass(frozen=True)
class LMGateResult:
    prompts: int
    token_agreement: float
    tokenizer_agreement: float
    reference_metric: float | None = None
    metric: float | None = None
    reference_perplexity: float | None = None
    perplexity: float | None = None
    passed: bool = True
    failures: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def metric_drop(self) -> float | None:
        """Percentage points, positive = worse."""
        if self.metric is None or self.reference_metric is None:
            return None
        return round((self.reference_metric - self.metric) * 100.0, 4)

    @property
    def perplexity_ratio(self) -> float | None:
        if self.perplexity is None or not self.reference_perplexity:
            return None
        return self.perplexity / self.reference_perplexity

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "token_agreement": self.token_agreement,
            "tokenizer_agreement": self.tokenizer_agreement,
            "reference_metric": self.reference_metric,
            "metric": self.metric,
            "metric_drop": self.metric_drop,
            "reference_perplexity": self.reference_perplexity,
            "perplexity": self.perplexity,
            "perplexity_ratio": self.perplexity_ratio,
            "passed": self.passed,
            "failures": list(self.failures),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LMGateResult:
        def opt(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            prompts=int(data["prompts"]),
            token_agreement=float(data["token_agreement"]),
            tokenizer_agreement=float(data["tokenizer_agreement"]),
            reference_metric=opt("reference_metric"),
            metric=opt("metric"),
            reference_perplexity=opt("reference_perplexity"),
            perplexity=opt("perplexity"),
            passed=bool(data.get("passed", True)),
            failures=tuple(str(f) for f in data.get("failures") or ()),
            notes=tuple(str(n) for n in data.get("notes") or ()),
        )


def token_agreement(reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]]) -> float:
    """Greedy agreement (see the module docstring): common-prefix tokens / longer-output tokens."""
    if len(reference) != len(candidate):
        raise CompileError(f"token agreement: {len(reference)} reference outputs, {len(candidate)} candidate outputs")
    matched = total = 0
    for ref, cand in zip(reference, candidate, strict=True):
        prefix = 0
        for a, b in zip(ref, cand, strict=False):
            if a != b:
                break
            prefix += 1
        matched += prefix
        total += max(len(ref), len(cand))
    return matched / total if total else 1.0


def perplexity(nll: Sequence[float]) -> float:
    """exp of the mean of per-answer mean negative log-likelihoods (nats per token)."""
    if not nll:
        raise CompileError("perplexity of no answers")
    return math.exp(sum(nll) / len(nll))


def tokenizer_agreement(reference: Sequence[Sequence[int]], runtime: Sequence[Sequence[int]]) -> float:
    """The share of prompts encoded to exactly the same ids."""
    if not reference:
        return 1.0
    same = sum(1 for a, b in zip(reference, runtime, strict=True) if list(a) == list(b))
    return same / len(reference)


def judge(result: LMGateResult, quality: LLMQuality) -> LMGateResult:
    """``result``'s figures judged against ``quality`` (cached figures are re-judged this way)."""
    failures = []
    if result.token_agreement < quality.min_token_agreement:
        failures.append(f"token agreement {result.token_agreement:.4f} < {quality.min_token_agreement}")
    drop = result.metric_drop
    if drop is not None and drop > quality.max_metric_drop:
        failures.append(f"task metric drop {drop:.2f} pts > {quality.max_metric_drop} pts")
    ratio = result.perplexity_ratio
    if ratio is not None and ratio > quality.max_perplexity_ratio:
        failures.append(f"perplexity ratio {ratio:.4f} > {quality.max_perplexity_ratio}")
    if result.tokenizer_agreement < quality.min_tokenizer_agreement:
        failures.append(f"tokenizer agreement {result.tokenizer_agreement:.4f} < {quality.min_tokenizer_agreement}")
    return dataclasses.replace(result, passed=not failures, failures=tuple(failures))


class LMGate:
    """The ``causal-lm`` gate for the registry."""

    task = "causal-lm"

    def budget(self, profile: Profile) -> LLMQuality:
        if profile.llm is None:
            raise CompileError(f"profile {profile.name!r} has no llm block: it cannot compile a causal-lm model")
        return profile.llm.quality

    def judge(self, figures: Mapping[str, Any], budget: LLMQuality) -> tuple[str, ...]:
        return judge(LMGateResult.from_dict(figures), budget).failures

    def cells(self, figures: Mapping[str, Any]) -> dict[str, str]:
        def pct(key: str) -> str:
            value = figures.get(key)
            return "" if value is None else f"{value * 100:.1f}%"

        drop, ratio = figures.get("metric_drop"), figures.get("perplexity_ratio")
        return {
            "task metric": pct("metric"),
            "drop pts": "" if drop is None else f"{drop:+.2f}",
            "tokens": "" if figures.get("token_agreement") is None else f"{figures['token_agreement']:.4f}",
            "ppl ratio": "n/a" if ratio is None else f"{ratio:.4f}",
            "tokenizer": pct("tokenizer_agreement"),
        }
