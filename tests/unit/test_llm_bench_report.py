"""The LLM benchmark's ratios, verdicts and Markdown report, from a hand-made report."""

from __future__ import annotations

from typing import Any

from edgeds.bench.llm_report import check, markdown, paired_ratios, precision_table, ratios, run_at, verdicts


def run(c: int, tok_s: float, p99: float, ok: int = 4) -> dict[str, Any]:
    return {
        "concurrency": c,
        "requests": ok,
        "ok": ok,
        "errors": 0,
        "total_tok_s": tok_s,
        "ttft_ms": {"p50": p99 / 2, "p90": p99, "p99": p99, "mean": p99 / 2},
        "itl_ms": {"p50": 30.0, "p90": 40.0, "p99": 50.0, "mean": 31.0},
        "decode_tok_s_per_stream": {"p50": 30.0, "p90": 31.0, "p99": 32.0, "mean": 30.0},
    }


def model(paired: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "roles": ["speed", "batching"],
        "systems": {
            "floor": {"sweep": [run(1, 30.0, 400.0), run(8, 60.0, 1000.0)]},
            "serve": {"sweep": [run(1, 29.0, 410.0), run(8, 57.0, 1100.0)], "description": "edgeds serve"},
            "llamacpp": {"sweep": [run(1, 50.0, 200.0), run(8, 51.0, 9000.0)]},
            "vllm": {"error": "pip install failed"},
        },
    }
    if paired:
        entry["paired"] = [
            {"floor": run(8, 60.0, 1000.0), "serve": run(8, 54.0, 1300.0)},
            {"floor": run(8, 60.0, 1000.0), "serve": run(8, 57.0, 1100.0)},
            {"floor": run(8, 60.0, 1000.0), "serve": run(8, 58.0, 1050.0)},
            {"floor": run(8, 60.0, 1000.0), "serve": {"ok": 0}},
        ]
    return entry


def test_run_at_skips_missing_and_failed() -> None:
    system = {"sweep": [run(1, 1.0, 1.0), {"concurrency": 8, "ok": 0}]}
    assert run_at(system, 1) is not None
    assert run_at(system, 8) is None and run_at({}, 1) is None


def test_ratios_from_sweeps_and_from_paired_runs() -> None:
    r = ratios(model(paired=False))
    assert r["from"] == "sweeps"
    assert r["serve_over_floor_tok_s"] == 0.95
    assert r["serve_over_floor_p99_ttft"] == 1.1
    assert r["batching_gain_floor"] == 2.0
    assert r["llamacpp_over_serve_tok_s"] == round(51.0 / 57.0, 3)
    assert r["vllm_over_serve_tok_s"] is None
    p = ratios(model(paired=True))
    assert p["pairs"] == 3 and p["from"].startswith("paired")
    assert p["serve_over_floor_tok_s"] == 0.95  # median of 0.9, 0.95, 0.967
    assert p["serve_over_floor_p99_ttft"] == 1.1
    assert paired_ratios([])["serve_over_floor_tok_s"] is None


def test_check_and_verdicts() -> None:
    assert check("batching_gain", 1.6)["pass"] is True
    assert check("serve_over_floor_p99_ttft", 1.3)["pass"] is False
    assert check("serve_over_floor_tok_s", None)["pass"] is None
    v = verdicts({"models": {"m": model(paired=True)}})
    assert v["serve_over_floor_tok_s"]["pass"] is True and v["serve_over_floor_tok_s"]["model"] == "m"
    assert v["serve_over_floor_p99_ttft"]["pass"] is True
    assert v["batching_gain"]["value"] == round(57.0 / 29.0, 3)


def test_markdown_has_every_system_and_the_precision_table() -> None:
    report = {
        "environment": {"cpu": "test cpu", "cores": 2, "git_sha": "abc"},
        "settings": {"threads": 2, "max_tokens": 32, "requests_per_level": {"1": 4, "8": 16}},
        "models": {"m": model(paired=True), "broken": {"error": "export failed"}},
        "precision": [
            {
                "model": "shift-assistant",
                "precision": "int4",
                "single_tok_s": 500.0,
                "total_tok_s_c8": 900.0,
                "speed_vs_fp32": 0.8,
                "metric": 0.9,
            },
            {
                "model": "shift-assistant",
                "precision": "fp32",
                "single_tok_s": 620.0,
                "total_tok_s_c8": 1200.0,
                "speed_vs_fp32": 1.0,
            },
        ],
    }
    text = markdown(report)
    for needle in (
        "bare runtime (in-process)",
        "edgeds serve",
        "llama.cpp server",
        "not measured: pip install failed",
        "Not measured: export failed",
        "## Precision",
        "| shift-assistant | int4 | 500.0 | 900.0 | 0.80 | 0.900 |",
        "| serve_over_floor_tok_s | m | 0.950 | >= 0.9 | pass |",
        "cpu: test cpu",
        "requests per concurrency level: 1: 4, 8: 16;",
    ):
        assert needle in text, needle


def test_the_precision_table_compares_each_model_with_its_own_fp32() -> None:
    def entry(precision: str, single: float, gate: dict[str, float] | None = None) -> dict[str, Any]:
        one = {**run(1, single, 100.0), "stream_tok_s": {"p50": single}}
        serve = {"sweep": [one, run(8, 4 * single, 200.0)]}
        return {"precision": precision, "weights_mb": 1.0, "systems": {"serve": serve}, "gate": gate or {}}

    models = {
        "shift-assistant int4": entry("int4", 40.0, {"metric": 0.99, "metric_drop": 0.1, "token_agreement": 0.998}),
        "shift-assistant fp32": entry("fp32", 50.0),
        "random qwen2.5-0.5b int4": entry("int4", 30.0),
        "random qwen2.5-0.5b fp32": entry("fp32", 10.0),
        "random qwen2.5-0.5b int8": {"error": "export failed"},
    }
    rows = {(r["model"], r["precision"]): r for r in precision_table(models)}
    assert set(rows) == {
        ("shift-assistant", "int4"),
        ("shift-assistant", "fp32"),
        ("random qwen2.5-0.5b", "int4"),
        ("random qwen2.5-0.5b", "fp32"),
    }
    assert rows["shift-assistant", "int4"]["speed_vs_fp32"] == 0.8
    assert rows["random qwen2.5-0.5b", "int4"]["speed_vs_fp32"] == 3.0
    assert rows["shift-assistant", "int4"]["token_agreement"] == 0.998
    assert rows["random qwen2.5-0.5b", "int4"]["token_agreement"] is None
