"""Rollout to 8 simulated devices in parallel vs one device: wall time and ratio (goal <= 2.5x).

Each device is a real sshd on its own loopback address with its own agent (edgeds.sim). One
extra device takes the single-device deploys, so every measured deploy does the same work:
plan, upload the missing objects, verify + stage on the device, flip, reload the agent, health
check (golden + N requests for p99), commit. Rounds use new versions (same weights), like a
routine model update. The 2 CPU cores are shared by the controller, 9 sshd and 9 agents: say so.

    .venv/bin/python bench/rollout_bench.py [--rounds 3] [--devices 8] [--requests 50] [--out FILE]
"""

from __future__ import annotations

import argparse
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

from edgeds.bundle import Bundle, generate_keypair
from edgeds.config import RolloutPolicy
from edgeds.deploy.device import protocol as dev
from edgeds.deploy.options import DeployOptions
from edgeds.deploy.rollout import rollout
from edgeds.deploy.setup import setup_host
from edgeds.deploy.targets import host_plans, resolve_target
from edgeds.sim.bundles import make_bundle
from edgeds.sim.devices import SimFleet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=50, help="health-check requests per deploy")
    parser.add_argument("--out", type=Path, default=Path("bench/results/rollout_bench.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeds-rollout-bench-"))
    private, public = generate_keypair(work / "keys")
    rows: list[dict[str, Any]] = []
    with SimFleet(args.devices + 1) as fleet:
        target, path = resolve_target(str(fleet.target_path))
        plans = host_plans(target, path)
        python = str(fleet.device_python())
        for plan in plans:
            result = setup_host(target, plan, wheel=None, public_key=public.read_bytes(), python=python)
            if not result.ok:
                raise SystemExit(f"setup failed on {plan.host.name}: {result.message}")
        single, fleet_plans = plans[:1], plans[1:]
        policy = RolloutPolicy(canary=0, batch="100%", max_failures="0", parallelism=args.devices, host_timeout_s=300)
        options = DeployOptions(health_requests=args.requests)
        for round_no in range(args.rounds + 1):  # round 0 is a warm-up (first install), not reported
            bundle = Bundle.open(make_bundle(work / f"b{round_no}", 100 + round_no, private, seed=1), verify=False)
            with bundle:
                started = time.perf_counter()
                one = rollout(single, bundle, policy, options=options)
                t1 = time.perf_counter() - started
                started = time.perf_counter()
                many = rollout(fleet_plans, bundle, policy, options=options)
                tn = time.perf_counter() - started
            ok = one.succeeded and many.succeeded
            if not ok:
                raise SystemExit(f"round {round_no} failed: {one.hosts} {many.hosts}")
            row = {
                "round": round_no,
                "single_s": round(t1, 3),
                "parallel_s": round(tn, 3),
                "ratio": round(tn / t1, 3),
                "per_host_s": [h.seconds for h in many.hosts],
                "statuses": sorted({h.status for h in many.hosts}),
            }
            label = "warm-up" if round_no == 0 else f"round {round_no}"
            print(f"{label:>8}: 1 device {t1:6.2f} s | {args.devices} devices {tn:6.2f} s | ratio {tn / t1:4.2f}x")
            if round_no:
                rows.append(row)
    single_median = statistics.median(float(r["single_s"]) for r in rows)
    parallel_median = statistics.median(float(r["parallel_s"]) for r in rows)
    median = parallel_median / single_median  # ratio of the median wall times
    median_of_ratios = statistics.median(float(r["ratio"]) for r in rows)
    verdict = "PASS" if median <= 2.5 else "FAIL"
    print(
        f"median wall time: 1 device {single_median:.2f} s, {args.devices} devices {parallel_median:.2f} s -> "
        f"ratio {median:.2f}x (goal <= 2.5x) {verdict}; median of per-round ratios {median_of_ratios:.2f}x"
    )
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        sha = ""
    report = {
        "bench": "rollout_bench",
        "devices": args.devices,
        "health_requests": args.requests,
        "rounds": rows,
        "median_single_s": single_median,
        "median_parallel_s": parallel_median,
        "median_ratio": round(median, 3),
        "median_of_round_ratios": median_of_ratios,
        "goal_ratio": 2.5,
        "verdict": verdict,
        "environment": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git": sha,
            "note": "controller, sshd and agents share the same CPU cores",
        },
        "statuses": sorted({s for r in rows for s in r["statuses"]}),
        "succeeded": all(r["statuses"] == [dev.SUCCEEDED] for r in rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
