#!/usr/bin/env python3
"""FP32 vs INT8 (and FP16 for LiteRT) per available backend: accuracy and throughput, side by side.

For each backend: compile the model at each precision with ``compile_model`` (the accuracy gate
runs on the full validation split and gives the figures), open each artifact with the
backend's own runtime, then measure throughput at batch 1 and at every candidate batch size in
interleaved rounds (FP32, INT8, FP32, INT8, ...) so both see the same machine state; the median
round counts. "best batch" is the batch size with the highest images/s. Prints ratios and
writes JSON (default bench/results/compile.json).

The load runs on the same 2 cores as everything else here; warm-up is excluded.

    .venv/bin/python bench/compile_bench.py [--model models/surface-defect/model.onnx] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeds import __version__, backends  # noqa: E402
from edgeds.compile import compile_model  # noqa: E402
from edgeds.compile import data as data_mod  # noqa: E402
from edgeds.compile.toolchains import litert as litert_toolchain  # noqa: E402
from edgeds.errors import AccuracyGateFailed  # noqa: E402
from edgeds.modelcard import load_model_card  # noqa: E402

PROFILES = {
    "onnxruntime": ("x86-cpu", "  - name: onnxruntime\n    options: {intra_op_num_threads: 2}\n"),
    "openvino": ("x86-cpu", "  - name: openvino\n    options: {device: CPU, performance_hint: LATENCY}\n"),
    "litert": ("raspberry-pi-5", "  - name: litert\n    options: {delegate: xnnpack, num_threads: 2}\n"),
}
PRECISIONS = {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "int8"), "litert": ("fp32", "fp16", "int8")}
BATCHES = (1, 2, 4, 8, 16)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


def profile_file(directory: Path, backend: str) -> Path:
    base, entry = PROFILES[backend]
    path = directory / f"bench-{backend}.yaml"
    path.write_text(f"schema: 1\nname: bench-{backend}\nextends: {base}\ndescription: bench\nbackends:\n{entry}")
    return path


def measure(runner: Any, name: str, x: np.ndarray, seconds: float) -> float:
    """Images per second of ``runner`` on batch ``x`` for about ``seconds``."""
    feed = {name: x}
    runner.infer(feed)
    count, started = 0, time.perf_counter()
    while True:
        runner.infer(feed)
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count * len(x) / elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "surface-defect" / "model.onnx")
    ap.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compile.json")
    ap.add_argument("--backends", default="onnxruntime,openvino,litert")
    args = ap.parse_args(argv)

    card = load_model_card(args.model)
    sample = data_mod.load_images(card, "validation").images[: max(BATCHES)]
    results: dict[str, Any] = {
        "environment": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "edgeds": __version__,
            "git_sha": git_sha(),
            "note": "load generator shares the same 2 cores",
        },
        "model": str(args.model),
        "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
        "batches": list(BATCHES),
        "seconds_per_measurement": args.seconds,
        "rounds": args.rounds,
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="edgeds-bench-") as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            availability = backends.probe(name)
            if not availability.available or (name == "litert" and not litert_toolchain.installed()):
                reason = availability.reason or "toolchain not installed (edgeds toolchain install litert)"
                print(f"{name}: skipped ({reason})")
                results["backends"][name] = {"skipped": reason}
                continue
            results["backends"][name] = bench_backend(name, args, card, sample, work)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def bench_backend(name: str, args: argparse.Namespace, card: Any, sample: np.ndarray, work: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"versions": {}, "precisions": {}}
    runners: dict[str, tuple[Any, str, str]] = {}
    profile = profile_file(work, name)
    for precision in PRECISIONS[name]:
        out = work / f"{name}-{precision}"
        try:
            result = compile_model(args.model, profile, precision=precision, out=out)
        except AccuracyGateFailed as exc:
            report = exc.report  # type: ignore[attr-defined]
            entry["precisions"][precision] = {"gate": "failed", "attempts": [a.as_dict() for a in report.attempts]}
            continue
        first = result.report.attempts[0]
        manifest = json.loads((out / "manifest.json").read_text())
        entry["versions"] = manifest["tools"]
        entry["precisions"][precision] = {
            "shipped_precision": result.precision,
            "accuracy": first.accuracy,
            "gate": first.outcome,
            "gate_reason": first.reason,
            "size_bytes": first.size_bytes,
            "validation_samples": result.report.validation_samples,
        }
        if result.precision != precision:
            print(f"{name} {precision}: gate {first.outcome} ({first.reason}); not measured")
            continue
        primary = manifest["artifacts"][0]  # schema 2: the first artifact is what the bundle ships first
        runner = backends.create(name, primary["options"])
        spec = runner.open(out / primary["path"], buckets=BATCHES)
        runners[precision] = (runner, spec.inputs[0].name, manifest["layout"])
    inputs = {layout: data_mod.preprocess_all(card, sample, layout) for layout in ("NCHW", "NHWC")}
    rates: dict[str, dict[int, list[float]]] = {p: {b: [] for b in BATCHES} for p in runners}
    for _ in range(args.rounds):
        for batch in BATCHES:
            for precision, (runner, input_name, layout) in runners.items():
                x = np.ascontiguousarray(inputs[layout][:batch])
                rates[precision][batch].append(measure(runner, input_name, x, args.seconds))
    for runner, _, _ in runners.values():
        runner.close()
    for precision, per_batch in rates.items():
        medians = {b: statistics.median(v) for b, v in per_batch.items()}
        best = max(medians, key=lambda b: medians[b])
        entry["precisions"][precision]["throughput"] = {
            "images_per_s": {str(b): round(v, 1) for b, v in medians.items()},
            "batch1": round(medians[1], 1),
            "best_batch": best,
            "best": round(medians[best], 1),
        }
    base = entry["precisions"].get("fp32", {}).get("throughput")
    print(f"\n{name}")
    print(
        f"  {'precision':9} {'top-1':>7} {'drop pts':>8} {'agree':>7} {'b1 img/s':>9} {'x fp32':>7} "
        f"{'best img/s':>10} {'(batch)':>7} {'x fp32':>7}"
    )
    for precision, fig in entry["precisions"].items():
        acc = fig.get("accuracy") or {}
        thr = fig.get("throughput")
        if thr and base:
            thr["speedup_batch1"] = round(thr["batch1"] / base["batch1"], 3)
            thr["speedup_best"] = round(thr["best"] / base["best"], 3)
        print(
            f"  {precision:9} {acc.get('top1', 0) * 100:6.2f}% {acc.get('top1_drop', float('nan')):8.2f} "
            f"{acc.get('agreement', float('nan')):7.4f} "
            + (
                f"{thr['batch1']:9.1f} {thr.get('speedup_batch1', 1):6.2f}x {thr['best']:10.1f} "
                f"{'(' + str(thr['best_batch']) + ')':>7} {thr.get('speedup_best', 1):6.2f}x"
                if thr
                else "  not measured"
            )
        )
    return entry


if __name__ == "__main__":
    raise SystemExit(main())
