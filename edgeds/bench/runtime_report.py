"""The runtime benchmark's report: verdicts against its targets, and the report in Markdown.

``bench/runtime_bench.py`` measures; this module only reads what it measured (one entry per
precision: floor scans, paired windows, longer runs, peers, memory) and says it in words and tables.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from .energy import per_inference_text, unavailable_line, watts_text
from .stats import median_interval


def interval(ratios: list[float]) -> dict[str, float]:
    """The windows' median ratio with its distribution-free 95 % interval (:func:`.stats.median_interval`),
    rounded like the ratios: how far this host's noise leaves the median from a threshold."""
    return {key: round(value, 3) for key, value in median_interval(ratios).items()}


def reference_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference build's figures over the paired windows' ``rows`` (each with ``reference``,
    ``reference_ratio``, ``serve_over_reference`` and both servers' ``*_cpu_us_per_request``):
    medians, with intervals for the ratios, and the median per-window difference of CPU per request
    (this tree's minus the reference's, µs; the inference is the same, so this is the request path's)."""

    def mid(key: str, digits: int = 3) -> float:
        return round(float(median(r[key] for r in rows)), digits)

    return {
        "reference_ratio_median": mid("reference_ratio"),
        "reference_ratio_interval": interval([r["reference_ratio"] for r in rows]),
        "serve_over_reference_median": mid("serve_over_reference"),
        "serve_over_reference_interval": interval([r["serve_over_reference"] for r in rows]),
        "serve_cpu_us_per_request_median": mid("serve_cpu_us_per_request", 1),
        "reference_cpu_us_per_request_median": mid("reference_cpu_us_per_request", 1),
        "cpu_per_request_over_reference_median": mid("cpu_per_request_over_reference"),
        "cpu_per_request_over_reference_interval": interval([r["cpu_per_request_over_reference"] for r in rows]),
        "cpu_us_per_request_difference_median": round(
            float(median(r["serve_cpu_us_per_request"] - r["reference_cpu_us_per_request"] for r in rows)), 1
        ),
    }


def verdicts(entry: dict[str, Any]) -> dict[str, Any]:
    """One precision's verdicts: the ratios to the floor against their targets (serve >= 0.85,
    in-process >= 0.95), the peers compared with serve, RSS growth <= 1 MiB and tracemalloc; with a
    reference build, its ratio to the floor against the same target and serve compared with it
    (samples/s and server CPU per request, this tree's over the reference's)."""
    pair = entry["paired"]
    serve_bin = entry["serve"]["binary"]
    out: dict[str, Any] = {
        "best_batch": pair["batch"],
        "instances": pair["instances"],
        "batcher_max_batch": entry["tuned_batching"]["max_batch_size"],
        "serve_binary_over_floor": pair["serve_ratio_median"],
        "in_process_over_floor": pair["in_process_ratio_median"],
        "serve_binary_over_floor_interval": [pair["serve_ratio_interval"]["low"], pair["serve_ratio_interval"]["high"]],
        "in_process_over_floor_interval": [
            pair["in_process_ratio_interval"]["low"],
            pair["in_process_ratio_interval"]["high"],
        ],
    }
    out["serve_ok"] = out["serve_binary_over_floor"] >= 0.85
    out["in_process_ok"] = out["in_process_over_floor"] >= 0.95
    ref = pair.get("reference")  # absent without --reference
    if ref is not None:
        out["reference_over_floor"] = ref["reference_ratio_median"]
        out["reference_ok"] = out["reference_over_floor"] >= 0.85
        out["serve_over_reference"] = ref["serve_over_reference_median"]
        out["serve_cpu_us_per_request"] = ref["serve_cpu_us_per_request_median"]
        out["reference_cpu_us_per_request"] = ref["reference_cpu_us_per_request_median"]
        out["cpu_per_request_over_reference"] = ref["cpu_per_request_over_reference_median"]
        out["cpu_per_request_over_reference_interval"] = [
            ref["cpu_per_request_over_reference_interval"]["low"],
            ref["cpu_per_request_over_reference_interval"]["high"],
        ]
    for peer in ("bentoml", "mlserver", "fastapi"):
        p = entry.get("peers", {}).get(peer, {})
        if p.get("samples_per_s"):
            out[f"vs_{peer}_throughput"] = round(serve_bin["samples_per_s"] / p["samples_per_s"], 2)
            out[f"vs_{peer}_lower_p99"] = serve_bin["p99_ms"] < p["p99_ms"]
    mem = entry["serve"]["memory"]
    out["rss_growth_ok"] = mem["rss_growth_mib"] <= 1.0
    out["tracemalloc_ok"] = entry["in_process"]["tracemalloc"]["no_per_request_tensor"]
    return out


def bare_socket_summary(entry: dict[str, Any], threads: int) -> str:
    """What the bare-socket reference says for one precision (a ceiling only with its own layout)."""
    pair = entry["paired"]
    what = (
        "Bare socket (`bench/peers/bare_socket.py`) is a reference, not a peer: the thinnest Python server of the "
        "same binary requests, one single-thread session per thread (no validation, batching, statistics or error "
        f"handling); median **{pair['bare_socket_ratio_median']}** of the floor."
    )
    if pair["instances"] != threads:
        return what + (
            f" It is no ceiling here: the floor's best layout is {pair['instances']} instance(s) of "
            f"{threads} threads, which only batching fills."
        )
    return what + (
        " With the floor's own layout, that is what loopback TCP and the load generator leave on these cores, for "
        f"any server that does not batch. Serve reaches **{pair['serve_over_bare_socket_median']}** of it: edgeds' "
        f"request path, net of what its batching (batch {entry['tuned_batching']['max_batch_size']}) gains."
    )


def sizing_text(entry: dict[str, Any]) -> str:
    """The batcher sizing's medians per candidate, in words."""
    sizing = entry.get("batcher_sizing")  # absent when a single candidate needed no measuring
    if sizing is None:
        return "one candidate"
    return f"{sizing['samples_per_cpu_s']} samples per CPU-s, {sizing['samples_per_s']} samples/s"


def python_loadgen_text(pair: dict[str, Any]) -> str:
    """What the same windows gave serve under the Python load generator, when it ran beside the native one."""
    ratio = pair.get("serve_python_loadgen_ratio_median")
    if ratio is None:
        return ""
    return f"; the same windows with the Python load generator driving serve: {ratio}"


def interval_words(found: dict[str, float], windows: int) -> str:
    """A median's interval (:func:`interval`) over ``windows`` paired windows, in words."""
    return (
        f"{round(100 * found['coverage'])} % interval of the median {found['low']}-{found['high']} "
        f"over {windows} windows"
    )


def interval_text(pair: dict[str, Any], what: str) -> str:
    """``what``'s median interval over the paired windows, in words."""
    return interval_words(pair[f"{what}_ratio_interval"], len(pair["windows"]))


def placement_line(placement: dict[str, Any]) -> str:
    """Where the servers and the load generator ran (:meth:`.placement.Placement.describe`), in words."""
    if not isinstance(placement["loadgen_cpus"], list):
        where = "every CPU" if placement["server_cpus"] == "all" else f"CPUs {placement['server_cpus']}"
        return f"- the load generator runs on the same cores as the server under test ({where})"
    return (
        f"- the floor, the batcher and every server run on CPUs {placement['server_cpus']}; the load generator "
        f"on CPUs {placement['loadgen_cpus']}, apart"
    )


def loadgen_line(generator: dict[str, Any]) -> str:
    """Which load generator ran (:meth:`.loadgen.LoadGenerator.describe`), in words."""
    line = f"- load generator (edgeds and every peer alike): {generator['what']}"
    if generator["kind"] == "native":
        line += f", built with {generator['compiler']}"
    return line


def reference_line(reference: dict[str, Any] | None) -> list[str]:
    """The report header's line for the reference build (:meth:`.reference.Reference.describe`), if any."""
    if reference is None:
        return []
    commit = f"commit `{reference['commit']}`" if reference["commit"] else "not a git checkout"
    return [
        f"- reference build (`--reference`): `{reference['tree']}`, {commit}; "
        f"its edgeds serve imports `{reference['edgeds_file']}`"
    ]


def reference_section(entry: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """One precision's reference-build table (per paired window) and its summary, in Markdown."""
    pair, v = entry["paired"], entry["verdicts"]
    ref = pair["reference"]
    name = f"`{reference['commit']}`" if reference["commit"] else f"`{reference['tree']}`"
    return [
        f"Reference build {name} in the same windows (the same bundle, options, CPUs and load generator; "
        "server CPU per request = CPU-seconds of the server process / requests, µs):",
        "",
        "| window | serve samples/s | reference samples/s | serve / floor | reference / floor | serve / reference "
        "| server CPU µs per request: serve / reference | CPU per request, serve / reference |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {i + 1} | {r['serve']} | {r['reference']} | {r['serve_ratio']} | {r['reference_ratio']} "
            f"| {r['serve_over_reference']} | {r['serve_cpu_us_per_request']} / {r['reference_cpu_us_per_request']} "
            f"| {r['cpu_per_request_over_reference']} |"
            for i, r in enumerate(pair["windows"])
        ),
        "",
        f"- reference build / floor = **{v['reference_over_floor']}** "
        f"({interval_words(ref['reference_ratio_interval'], len(pair['windows']))}; target >= 0.85: "
        f"{'PASS' if v['reference_ok'] else 'FAIL'}); serve / reference samples/s = **{v['serve_over_reference']}**",
        f"- server CPU per request: serve **{v['serve_cpu_us_per_request']} µs**, reference "
        f"**{v['reference_cpu_us_per_request']} µs**; serve / reference = **{v['cpu_per_request_over_reference']}** "
        f"({interval_words(ref['cpu_per_request_over_reference_interval'], len(pair['windows']))}), "
        f"median difference {ref['cpu_us_per_request_difference_median']} µs per request",
        "",
    ]


def markdown(report: dict[str, Any]) -> str:
    """The whole report (as ``runtime_bench.json`` holds it) in Markdown."""
    lines = [
        "# edgeds runtime benchmark",
        "",
        f"- model: `{report['model']}` "
        f"({'shipped' if report['shipped_model'] else 'STAND-IN: MobileNet-shaped, random weights'})",
        f"- machine: {report['environment']['cpu']}, {report['environment']['cores']} cores; "
        f"intra-op threads {report['threads']}; duration {report['duration_s']} s per run; concurrency 8; loopback",
        placement_line(report["placement"]),
        loadgen_line(report["load_generator"]),
        *reference_line(report.get("reference")),
        f"- {unavailable_line(report) or 'energy: not recorded'} (J/inf: the run's measured joules over the "
        "samples inferred in it; W: its average)",
        "",
    ]
    for precision, entry in report["results"].items():
        if "error" in entry:
            lines += [f"## ONNX Runtime {precision.upper()}", "", f"skipped: {entry['error']}", ""]
            continue
        v = entry["verdicts"]
        scans = entry["floor"]
        lines += [
            f"## ONNX Runtime {precision.upper()}",
            "",
            f"Engine floor scans (bare ONNX Runtime + IOBinding, {report['threads']} threads split among the "
            "instances, which run at once; samples/s by batch size):",
            "",
            *(
                f"- {scan['instances']} instance(s): "
                + ", ".join(f"b{r['batch']}={r['samples_per_s']}" for r in scan["per_batch"])
                for scan in scans
            ),
            "",
            f"Paired windows ({entry['paired']['window_s']} s each: floor at batch {entry['paired']['batch']} "
            f"with {entry['paired']['instances']} instance(s), then in-process c=8 driven by completion "
            "callbacks, then serve and the bare socket, c=8, taking turns to go first):",
            "",
            "| window | floor samples/s | in-process samples/s | serve (binary OIP) samples/s | bare socket samples/s "
            "| in-process / floor | serve / floor | bare socket / floor | serve / bare socket "
            "| samples per CPU-s: floor / in-process / serve | CPU-normalized in-process, serve |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {i + 1} | {r['floor']} | {r['in_process']} | {r['serve']} | {r['bare_socket']} "
                f"| {r['in_process_ratio']} | {r['serve_ratio']} | {r['bare_socket_ratio']} "
                f"| {r['serve_over_bare_socket']} "
                f"| {r['floor_per_cpu_s']} / {r['in_process_per_cpu_s']} / {r['serve_per_cpu_s']} "
                f"| {r['in_process_cpu_ratio']}, {r['serve_cpu_ratio']} |"
                for i, r in enumerate(entry["paired"]["windows"])
            ),
            "",
            bare_socket_summary(entry, report["threads"]),
            "",
            *(reference_section(entry, report["reference"]) if "reference" in entry["paired"] else []),
            f"CPU-normalized (samples per CPU-second of the measured process; serve = the server process only, "
            f"not the load generator): in-process / floor median **{entry['paired']['in_process_cpu_ratio_median']}**, "
            f"serve / floor median **{entry['paired']['serve_cpu_ratio_median']}**.",
            "",
            f"Longer runs ({report['duration_s']} s, c=8) side by side; 'x floor' is relative to the best floor scan "
            f"({max(sc['best_samples_per_s'] for sc in scans)} samples/s):",
            "",
            "| system | protocol | samples/s | x floor | p50 ms | p99 ms | mean batch | errors | CPU % | RSS peak MB "
            "| J/inf | W |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        best = max(sc["best_samples_per_s"] for sc in scans)

        def row(name: str, proto: str, r: dict[str, Any], best: float = best) -> str:
            res = r.get("resources", {})
            return (
                f"| {name} | {proto} | {r.get('samples_per_s')} | {round(r.get('samples_per_s', 0) / best, 3)} | "
                f"{r.get('p50_ms')} | {r.get('p99_ms')} | {r.get('mean_batch_size', '-')} | {r.get('errors')} | "
                f"{res.get('cpu_percent', '-')} | {res.get('rss_peak_mb', '-')} | "
                f"{per_inference_text(r.get('energy'))} | {watts_text(r.get('energy'))} |"
            )

        lines.append(row("edgeds in-process batcher", "Engine.submit, callbacks", entry["in_process"]))
        if "client_threads" in entry["in_process"]:
            lines.append(
                row("edgeds in-process batcher", "Engine.submit, 8 threads", entry["in_process"]["client_threads"])
            )
        lines.append(row("edgeds serve", "binary OIP", entry["serve"]["binary"]))
        lines.append(row("edgeds serve", "OIP JSON", entry["serve"]["json"]))
        lines.append(row("edgeds serve, bundle batching", "binary OIP", entry["serve_bundle_batching"]["binary"]))
        for peer, r in entry.get("peers", {}).items():
            if "error" in r:
                lines.append(f"| {peer} | - | not run: {r['error']} | | | | | | | | | |")
            else:
                lines.append(row(f"{peer} {r.get('version', '')}", r["protocol"], r))
        mem = entry["serve"]["memory"]
        tm = entry["in_process"]["tracemalloc"]
        lines += [
            "",
            f"- batcher for the ratios: {entry['tuned_batching']['instances']} instance(s) (the floor's "
            f"best layout), max_batch_size = preferred = {entry['tuned_batching']['max_batch_size']} "
            "(of the buckets <= half the clients per instance, the one the in-process batcher served with the "
            "least CPU per sample, a larger one within 3 % winning: "
            f"{sizing_text(entry)}; "
            f"the floor's best bucket is {entry['floor_best_batch']}, which every ratio divides by), "
            f"max_queue_delay {entry['tuned_batching']['max_queue_delay_us']} us; "
            f"the bundle's own batching: {entry['batching']['max_batch_size']} / preferred "
            f"{entry['batching']['preferred_batch_sizes']} / {entry['batching']['max_queue_delay_us']} us",
            f"- serve (binary OIP, c=8) / floor at best batch, median of paired windows = "
            f"**{v['serve_binary_over_floor']}** ({interval_text(entry['paired'], 'serve')}; "
            f"ratio of means {entry['paired']['serve_ratio_of_means']}; target >= 0.85: "
            f"{'PASS' if v['serve_ok'] else 'FAIL'})" + python_loadgen_text(entry["paired"]),
            f"- in-process batcher (c=8) / floor, median of paired windows = **{v['in_process_over_floor']}** "
            f"({interval_text(entry['paired'], 'in_process')}; "
            f"ratio of means {entry['paired']['in_process_ratio_of_means']}; target >= 0.95: "
            f"{'PASS' if v['in_process_ok'] else 'FAIL'})",
        ]
        for peer in ("bentoml", "mlserver", "fastapi"):
            if f"vs_{peer}_throughput" in v:
                lines.append(
                    f"- vs {peer}: {v[f'vs_{peer}_throughput']}x throughput, lower p99: {v[f'vs_{peer}_lower_p99']}"
                )
        lines += [
            f"- RSS growth over {mem['requests']} requests after {mem['warmup_requests']} warm-up: "
            f"**{mem['rss_growth_mib']} MiB** ({mem['rss_before_mb']} -> {mem['rss_after_mb']} MB; target <= 1 MiB: "
            f"{'PASS' if v['rss_growth_ok'] else 'FAIL'})",
            f"- tracemalloc over {tm['requests']} in-process requests: peak {tm['peak_over_base_bytes']} B over base, "
            f"retained {tm['retained_bytes']} B, one sample = {tm['sample_bytes']} B, pool slots grown "
            f"{tm['pool_slots_grown']} -> no per-request tensor: {'PASS' if tm['no_per_request_tensor'] else 'FAIL'}",
            f"- bad request answered {entry['serve']['bad_request_status']}, "
            f"next valid one {entry['serve']['still_serving_status']}",
            "",
        ]
    return "\n".join(lines) + "\n"


__all__ = [
    "interval",
    "interval_text",
    "interval_words",
    "markdown",
    "reference_line",
    "reference_section",
    "reference_summary",
    "verdicts",
]
