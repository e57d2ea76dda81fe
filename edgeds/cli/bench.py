"""``edgeds bench``: LoadGen-style scenarios against a bundle in-process or a server over HTTP; for a
language model, a single stream and a concurrency sweep of streamed generations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._output import JSON_OPTION, console, console_err, emit, table


def bench(
    bundle: Annotated[Path | None, typer.Argument(help="Bundle to benchmark in-process (omit with --url).")] = None,
    url: Annotated[
        str | None, typer.Option(help="Benchmark a running server instead, e.g. http://127.0.0.1:8000")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name on the server (default: the only one).")] = None,
    scenarios: Annotated[
        str,
        typer.Option(
            help="Comma list of: floor, single, multi, server, offline, sweep.",
            show_default="floor, single, multi, server, offline, sweep",
        ),
    ] = "floor,single,multi,server,offline,sweep",
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds per measured run (warm-up excluded).")] = 3.0,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels of the sweep.")] = "1,2,4,8,16",
    p99_ms: Annotated[float, typer.Option(help="p99 bound of the Server scenario (ms).")] = 50.0,
    threads: Annotated[int | None, typer.Option(help="Backend CPU threads (in-process).")] = None,
    instances: Annotated[
        int | None,
        typer.Option(min=1, help="Engine instances in-process (threads split among them); the floor runs as many."),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option(min=1, help="Language models: tokens generated per request (ignore_eos).")
    ] = 64,
    runtime: Annotated[
        str | None, typer.Option(help="Language models: the LM runtime (default: the bundle's first that works).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Engine floor (batch 1..N), SingleStream, MultiStream, Server (Poisson), Offline and a concurrency sweep.

    Raw per-request timestamps give p50..p99.9/max; warm-up is excluded; the report carries the
    environment (CPU, versions, git sha, threads, model hash), batch-size histograms, CPU% and RSS,
    and joules per inference and average watts where this machine measures power (RAPL, tegrastats;
    "n/a" and the reason where not). The load generator shares the machine's cores with what it
    measures.

    A language model (a causal-lm bundle, an LM runtime's model directory, or a server with the
    OpenAI API) gets instead: the same fixed prompts at each --concurrency level, --max-tokens
    tokens each, single-stream TTFT, inter-token latency and decode tok/s, total tok/s per level and
    continuous batching's gain (total tok/s at 8 over 1), on the engine in-process or over HTTP.
    """
    from ..bench import SCENARIOS, llm_commands
    from ..bench import commands as bench_run
    from ..errors import ConfigError
    from ..runtime.lm.loading import is_language_model

    wanted = [s.strip() for s in scenarios.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SCENARIOS))
    if unknown:
        raise ConfigError.single(None, None, "--scenarios", f"unknown scenario(s) {unknown}")
    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise typer.BadParameter(f"{concurrency!r}: give positive integers, e.g. 1,2,4,8", param_hint="--concurrency")

    def progress(name: str) -> None:
        console_err.print(f"[dim]running {name}...[/]")

    lm_models = llm_commands.served_lm_models(url) if url is not None else None
    if url is not None and lm_models:
        if model is None:
            if len(lm_models) != 1:
                raise ConfigError.single(None, None, "--model", f"the server serves {lm_models}: pick one")
            model = lm_models[0]
        report = llm_commands.bench_lm_url(url, model, concurrency=levels, max_tokens=max_tokens, progress=progress)
    elif url is None and bundle is not None and (runtime is not None or is_language_model(bundle)):
        report = llm_commands.bench_lm_path(
            bundle, runtime=runtime, threads=threads, concurrency=levels, max_tokens=max_tokens, progress=progress
        )
    elif url is not None:
        url = url.rstrip("/")
        if model is None:
            served = bench_run.served_models(url)
            if len(served) != 1:
                raise ConfigError.single(None, None, "--model", f"the server serves {served}: pick one")
            model = served[0]
        report = bench_run.bench_url(
            url,
            model,
            scenarios=wanted,
            duration_s=duration,
            concurrency=levels,
            p99_bound_ms=p99_ms,
            progress=progress,
        )
    else:
        if bundle is None:
            raise typer.BadParameter("give a BUNDLE or --url")
        report = bench_run.bench_bundle(
            bundle,
            scenarios=wanted,
            duration_s=duration,
            concurrency=levels,
            p99_bound_ms=p99_ms,
            threads=threads,
            instances=instances,
            progress=progress,
        )
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n")
    emit(report, as_json, lambda: _human_lm(report) if "sweep" in report else _human(report))


def _human_lm(report: dict[str, Any]) -> None:
    rows = []
    for run in report["sweep"]:
        ttft, itl, dec = run.get("ttft_ms", {}), run.get("itl_ms", {}), run.get("decode_tok_s_per_stream", {})
        rows.append(
            [
                run["concurrency"],
                run.get("total_tok_s"),
                ttft.get("p50"),
                ttft.get("p99"),
                itl.get("p50"),
                itl.get("p99"),
                dec.get("p50"),
                run.get("errors"),
            ]
        )
    title = f"{report['model']} ({report['transport']}, {report['settings']['max_tokens']} tokens per request)"
    header = ["concurrency", "total tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms"]
    console.print(table(title, [*header, "decode tok/s per stream", "errors"], rows))
    if report.get("batching_gain") is not None:
        console.print(f"continuous batching: total tok/s at 8 = {report['batching_gain']}x single stream")


def _human(report: dict[str, Any]) -> None:
    from ..bench.energy import per_inference_text, unavailable_line, watts_text

    scen = report["scenarios"]
    if "floor" in scen:
        floor = scen["floor"]
        console.print(
            table(
                f"Engine floor (bare backend, {floor.get('instances', 1)} instance(s) at once)",
                ["batch", "samples/s", "p50 ms", "p99 ms"],
                [[r["batch"], r["samples_per_s"], r["p50_ms"], r["p99_ms"]] for r in floor["per_batch"]],
            )
        )
    rows = []
    for name in ("single", "multi", "offline"):
        if name in scen:
            s = scen[name]
            rows.append(
                [
                    name,
                    s.get("qps"),
                    s.get("samples_per_s"),
                    s.get("p50_ms"),
                    s.get("p90_ms"),
                    s.get("p99_ms"),
                    s.get("mean_batch_size"),
                    s.get("errors"),
                    per_inference_text(s.get("energy")),
                    watts_text(s.get("energy")),
                ]
            )
    for s in scen.get("sweep", {}).get("runs", []):
        rows.append(
            [
                f"c={s['concurrency']}",
                s.get("qps"),
                s.get("samples_per_s"),
                s.get("p50_ms"),
                s.get("p90_ms"),
                s.get("p99_ms"),
                "",
                s.get("errors"),
                "",
                "",
            ]
        )
    if "sweep" in scen:  # the sweep's energy is over all its levels
        sweep = scen["sweep"].get("energy")
        rows.append(["sweep (all)", "", "", "", "", "", "", "", per_inference_text(sweep), watts_text(sweep)])
    if rows:
        header = ["scenario", "queries/s", "samples/s", "p50 ms", "p90 ms", "p99 ms", "mean batch", "errors"]
        console.print(table(f"Scenarios ({report['transport']})", [*header, "J/inf", "W"], rows))
    if "server" in scen:
        s = scen["server"]
        energy = s.get("energy")
        console.print(
            f"Server scenario: {s['max_qps_under_bound']} QPS with p99 <= {s['p99_bound_ms']} ms (Poisson); "
            f"{per_inference_text(energy)} J/inf, {watts_text(energy)} W over its runs"
        )
    line = unavailable_line(report)
    if line is not None:
        console.print(line)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
