"""The LLM benchmark's fixed prompts and the run schedule every system gets."""

from __future__ import annotations

from edgeds.bench.llm_prompts import Schedule, make_prompts


def test_prompts_are_deterministic_distinct_and_sized() -> None:
    a = make_prompts(5, 40)
    assert a == make_prompts(5, 40)
    assert make_prompts(3, 40, offset=2) == a[2:5]
    assert len(set(a)) == 5
    assert len({p.split(".")[0] for p in a}) == 5  # distinct from the first words: no shared KV prefix
    for p in a:
        assert 40 <= len(p.split()) <= 40 + 30
        assert p.endswith("Write the shift summary for the operator.")


def test_schedule_runs_and_fresh_prompts() -> None:
    s = Schedule(levels=(1, 2, 8), per_client=2, min_requests=3, pairs=2, words=20, warmup=1)
    assert [(r.name, r.concurrency, len(r.prompts)) for r in s.runs] == [
        ("warmup", 1, 1),
        ("sweep-1", 1, 3),
        ("sweep-2", 2, 4),
        ("sweep-8", 8, 16),
        ("pair-0", 8, 16),
        ("pair-1", 8, 16),
    ]
    prompts = s.prompts()
    assert len(prompts) == len(set(prompts)) == 56
    assert s.runs[0].warmup and s.runs[-1].paired and not s.runs[1].paired
    assert Schedule(levels=(1,), words=20).runs == Schedule(levels=(1,), words=20).runs
