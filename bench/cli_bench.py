#!/usr/bin/env python3
"""How long the ``edgeds`` command takes to start: ``--help``, ``doctor --help``, ``--version``.

Each case runs as a fresh ``python -m edgeds ...`` subprocess in this checkout (its ``edgeds``
first on the path), ``--runs`` times, interleaved round by round with a bare ``python -c pass``
baseline, so that all of them see the same machine state. Prints the median and p90 wall time
of each in ms, and the median over the baseline, and writes JSON (default
bench/results/cli_bench.json). ``--imports`` adds, per case, the 15 slowest imports that
``python -X importtime`` reports (cumulative µs).

    .venv/bin/python bench/cli_bench.py [--runs 20] [--imports]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CASES: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "edgeds --help": ["-m", "edgeds", "--help"],
    "edgeds doctor --help": ["-m", "edgeds", "doctor", "--help"],
    "edgeds --version": ["-m", "edgeds", "--version"],
}
BASELINE = "python -c pass"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("COLUMNS", "100")
    return env


def run_once(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one ``python ARGS`` subprocess; it must exit 0."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def slowest_imports(args: list[str], env: dict[str, str], top: int = 15) -> list[dict[str, Any]]:
    """The ``top`` imports with the largest cumulative time under ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    timed: list[tuple[int, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        timed.append((int(cumulative), name))
    timed.sort(reverse=True)
    return [{"module": name, "cumulative_us": us} for us, name in timed[:top]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="subprocesses per case (after one warm-up each)")
    ap.add_argument("--imports", action="store_true", help="also list each case's slowest imports")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli_bench.json")
    args = ap.parse_args(argv)

    env = _env()
    for case in CASES.values():  # warm-up: page cache, .pyc files
        run_once(case, env)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, case in CASES.items():
            times[name].append(run_once(case, env))

    base = statistics.median(times[BASELINE])
    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "runs": args.runs,
        },
        "cases": {},
    }
    print(f"{'case':<24} {'median ms':>10} {'p90 ms':>8} {'over baseline ms':>17}")
    for name, values in times.items():
        median = statistics.median(values)
        row: dict[str, Any] = {
            "median_ms": round(median * 1e3, 1),
            "p90_ms": round(percentile(values, 0.9) * 1e3, 1),
            "over_baseline_ms": round((median - base) * 1e3, 1),
            "runs_ms": [round(v * 1e3, 1) for v in values],
        }
        if args.imports and name != BASELINE:
            row["slowest_imports"] = slowest_imports(CASES[name], env)
        results["cases"][name] = row
        print(f"{name:<24} {row['median_ms']:>10} {row['p90_ms']:>8} {row['over_baseline_ms']:>17}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
