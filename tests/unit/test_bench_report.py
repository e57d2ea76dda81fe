"""The runtime benchmark's verdicts and Markdown report, from a report shaped like runtime_bench.json."""

from __future__ import annotations

from typing import Any

from edgeds.bench.runtime_report import interval, markdown, reference_summary, verdicts


def _run(samples_per_s: float, p99_ms: float) -> dict[str, Any]:
    return {
        "samples_per_s": samples_per_s,
        "p50_ms": 5.0,
        "p99_ms": p99_ms,
        "errors": 0,
        "mean_batch_size": 2.0,
        "resources": {"cpu_percent": 180.0, "rss_peak_mb": 90.0},
    }


def _entry(serve_ratios: list[float], in_process_ratios: list[float], rss_growth_mib: float) -> dict[str, Any]:
    windows = [
        {
            "floor": 1000.0,
            "in_process": 1000.0 * ip,
            "serve": 1000.0 * sv,
            "bare_socket": 800.0,
            "in_process_ratio": ip,
            "serve_ratio": sv,
            "bare_socket_ratio": 0.8,
            "serve_over_bare_socket": round(sv / 0.8, 3),
            "floor_per_cpu_s": 500.0,
            "in_process_per_cpu_s": 490.0,
            "serve_per_cpu_s": 450.0,
            "in_process_cpu_ratio": 0.98,
            "serve_cpu_ratio": 0.9,
        }
        for sv, ip in zip(serve_ratios, in_process_ratios, strict=True)
    ]
    batching = {"max_batch_size": 8, "preferred_batch_sizes": [4, 8], "max_queue_delay_us": 1000, "instances": 1}
    return {
        "batching": batching,
        "tuned_batching": {**batching, "max_batch_size": 2, "preferred_batch_sizes": [2], "instances": 2},
        "floor": [{"instances": 2, "best_samples_per_s": 1000.0, "per_batch": [{"batch": 2, "samples_per_s": 1000.0}]}],
        "floor_best_batch": 2,
        "in_process": {
            **_run(970.0, 9.0),
            "tracemalloc": {
                "requests": 2000,
                "peak_over_base_bytes": 4096,
                "retained_bytes": 0,
                "sample_bytes": 307200,
                "pool_slots_grown": 0,
                "no_per_request_tensor": True,
            },
        },
        "serve": {
            "binary": _run(900.0, 12.0),
            "json": _run(400.0, 30.0),
            "bad_request_status": 400,
            "still_serving_status": 200,
            "memory": {
                "requests": 20000,
                "warmup_requests": 5000,
                "rss_growth_mib": rss_growth_mib,
                "rss_before_mb": 100.0,
                "rss_after_mb": 100.0 + rss_growth_mib,
            },
        },
        "serve_bundle_batching": {"binary": _run(850.0, 14.0)},
        "peers": {
            "fastapi": {**_run(300.0, 40.0), "protocol": "binary OIP", "version": "0.115"},
            "bentoml": {"error": "pip"},
        },
        "paired": {
            "windows": windows,
            "window_s": 2.0,
            "batch": 2,
            "instances": 2,
            "serve_ratio_median": sorted(serve_ratios)[len(serve_ratios) // 2],
            "in_process_ratio_median": sorted(in_process_ratios)[len(in_process_ratios) // 2],
            "serve_ratio_interval": interval(serve_ratios),
            "in_process_ratio_interval": interval(in_process_ratios),
            "serve_python_loadgen_ratio_median": None,
            "bare_socket_ratio_median": 0.8,
            "serve_over_bare_socket_median": 1.1,
            "serve_cpu_ratio_median": 0.9,
            "in_process_cpu_ratio_median": 0.98,
            "serve_ratio_of_means": 0.88,
            "in_process_ratio_of_means": 0.97,
        },
    }


def test_verdicts_hold_the_ratios_to_their_targets_and_compare_the_peers_that_ran() -> None:
    good = verdicts(_entry([0.86, 0.9, 0.88], [0.96, 0.97, 0.99], rss_growth_mib=0.2))
    assert good["serve_ok"] and good["in_process_ok"] and good["rss_growth_ok"] and good["tracemalloc_ok"]
    assert good["serve_binary_over_floor_interval"] == [0.86, 0.9]
    assert good["vs_fastapi_throughput"] == 3.0 and good["vs_fastapi_lower_p99"] is True
    assert "vs_bentoml_throughput" not in good  # it did not run
    bad = verdicts(_entry([0.7, 0.8, 0.84], [0.9, 0.94, 0.93], rss_growth_mib=3.0))
    assert not (bad["serve_ok"] or bad["in_process_ok"] or bad["rss_growth_ok"])


def test_the_markdown_report_states_each_verdict_and_a_skipped_precision() -> None:
    entry = _entry([0.86, 0.9, 0.88], [0.9, 0.94, 0.93], rss_growth_mib=0.2)
    entry["verdicts"] = verdicts(entry)
    report = {
        "model": "models/surface-defect/model.onnx",
        "shipped_model": True,
        "threads": 2,
        "duration_s": 10.0,
        "environment": {"cpu": "Test CPU", "cores": 2},
        "placement": {"server_cpus": "all", "loadgen_cpus": "the servers' own"},
        "load_generator": {"kind": "native", "what": "bench/loadgen/closed_loop.c", "compiler": "cc 12"},
        "results": {"fp32": entry, "int8": {"error": "compile failed: CompileError: no"}},
    }
    text = markdown(report)
    assert text.startswith("# edgeds runtime benchmark\n")
    assert "- machine: Test CPU, 2 cores; intra-op threads 2" in text
    assert "load generator (edgeds and every peer alike): bench/loadgen/closed_loop.c, built with cc 12" in text
    assert "## ONNX Runtime FP32" in text and "## ONNX Runtime INT8\n\nskipped: compile failed" in text
    assert "= **0.88** (75 % interval of the median 0.86-0.9 over 3 windows" in text
    assert "target >= 0.85: PASS" in text and "target >= 0.95: FAIL" in text
    assert "| fastapi 0.115 | binary OIP | 300.0 | 0.3 |" in text
    assert "| bentoml | - | not run: pip |" in text
    assert "- vs fastapi: 3.0x throughput, lower p99: True" in text
    assert "reference build" not in text.lower()  # no --reference: no reference section


def _with_reference(entry: dict[str, Any], reference_sps: list[float], cpu_us: list[tuple[float, float]]) -> None:
    """Adds a reference build's figures to ``entry``'s paired windows, as ``paired`` records them."""
    rows = entry["paired"]["windows"]
    for row, sps, (serve_us, ref_us) in zip(rows, reference_sps, cpu_us, strict=True):
        row.update(
            {
                "reference": sps,
                "reference_ratio": round(sps / row["floor"], 3),
                "serve_over_reference": round(row["serve"] / sps, 3),
                "serve_cpu_us_per_request": serve_us,
                "reference_cpu_us_per_request": ref_us,
                "cpu_per_request_over_reference": round(serve_us / ref_us, 3),
            }
        )
    entry["paired"]["reference"] = reference_summary(rows)


def test_a_reference_build_is_summarized_held_to_the_floor_target_and_compared_with_serve() -> None:
    entry = _entry([0.86, 0.9, 0.88], [0.96, 0.97, 0.99], rss_growth_mib=0.2)
    _with_reference(entry, [800.0, 840.0, 900.0], [(8000.0, 8100.0), (8050.0, 8200.0), (7900.0, 7950.0)])
    summary = entry["paired"]["reference"]
    assert summary["reference_ratio_median"] == 0.84
    assert summary["serve_cpu_us_per_request_median"] == 8000.0
    assert summary["reference_cpu_us_per_request_median"] == 8100.0
    assert summary["cpu_us_per_request_difference_median"] == -100.0  # per window: -100, -150, -50
    assert summary["cpu_per_request_over_reference_interval"]["low"] == 0.982
    v = verdicts(entry)
    assert v["reference_over_floor"] == 0.84 and v["reference_ok"] is False
    assert v["serve_over_reference"] == 1.071  # per window: 860/800, 900/840, 880/900
    assert v["cpu_per_request_over_reference"] == 0.988
    assert v["cpu_per_request_over_reference_interval"] == [0.982, 0.994]
    assert v["serve_ok"]  # serve's own verdict does not depend on the reference


def test_the_markdown_report_names_the_reference_build_and_gives_both_servers_per_window() -> None:
    entry = _entry([0.86, 0.9, 0.88], [0.96, 0.97, 0.99], rss_growth_mib=0.2)
    _with_reference(entry, [900.0, 880.0, 870.0], [(8000.0, 8100.0), (8050.0, 8200.0), (7900.0, 7950.0)])
    entry["verdicts"] = verdicts(entry)
    reference: dict[str, Any] = {
        "tree": "/tmp/ref-tree",
        "commit": "363a84f",
        "edgeds_file": "/tmp/ref-tree/edgeds/__init__.py",
    }
    report: dict[str, Any] = {
        "model": "models/surface-defect/model.onnx",
        "shipped_model": True,
        "threads": 2,
        "duration_s": 10.0,
        "environment": {"cpu": "Test CPU", "cores": 2},
        "placement": {"server_cpus": "all", "loadgen_cpus": "the servers' own"},
        "load_generator": {"kind": "python", "what": "edgeds.bench.http_closed_loop"},
        "reference": reference,
        "results": {"int8": entry},
    }
    text = markdown(report)
    header = (
        "- reference build (`--reference`): `/tmp/ref-tree`, commit `363a84f`; "
        "its edgeds serve imports `/tmp/ref-tree/edgeds/__init__.py`\n"
    )
    assert header in text and text.index(header) < text.index("## ONNX Runtime INT8")
    assert "Reference build `363a84f` in the same windows" in text
    assert "| 1 | 860.0 | 900.0 | 0.86 | 0.9 | 0.956 | 8000.0 / 8100.0 | 0.988 |" in text
    assert "- reference build / floor = **0.88** (75 % interval of the median 0.87-0.9 over 3 windows" in text
    assert "target >= 0.85: PASS); serve / reference samples/s = **1.011**" in text
    assert (
        "- server CPU per request: serve **8000.0 µs**, reference **8100.0 µs**; serve / reference = **0.988**" in text
    )
    assert "median difference -100.0 µs per request" in text
    report["reference"] = {**reference, "commit": None}
    assert "- reference build (`--reference`): `/tmp/ref-tree`, not a git checkout;" in markdown(report)


def test_the_markdown_report_gives_energy_or_says_why_not() -> None:
    entry = _entry([0.86, 0.9, 0.88], [0.9, 0.94, 0.93], rss_growth_mib=0.2)
    entry["verdicts"] = verdicts(entry)
    entry["serve"]["binary"]["energy"] = {"joules": 12.0, "watts_avg": 1.2, "joules_per_inference": 0.0012}
    report: dict[str, Any] = {
        "model": "models/surface-defect/model.onnx",
        "shipped_model": True,
        "threads": 2,
        "duration_s": 10.0,
        "environment": {"cpu": "Test CPU", "cores": 2},
        "placement": {"server_cpus": "all", "loadgen_cpus": "the servers' own"},
        "load_generator": {"kind": "native", "what": "bench/loadgen/closed_loop.c", "compiler": "cc 12"},
        "power_source": None,
        "power_unavailable_reason": "no power source: /sys/class/powercap absent; tegrastats not found",
        "results": {"fp32": entry},
    }
    text = markdown(report)
    assert "- energy: n/a (no power source: /sys/class/powercap absent; tegrastats not found)" in text
    assert "| J/inf | W |" in text
    assert "| 0.0012 | 1.2 |" in text  # the one run that carries figures
    assert "| 180.0 | 90.0 | n/a | n/a |" in text  # the others: not measured, not made up
