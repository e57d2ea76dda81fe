"""Serving throughput with telemetry on vs off, side by side in one run (target: on >= 0.97 x off).

What runs: the in-process runtime engine (``edgeds.runtime.engine.Engine``, onnxruntime backend,
dynamic batcher) driven closed-loop by ``--clients`` threads (submit, wait, release). Telemetry
"on" adds what the agent adds: every completed request is recorded in an ``InferenceRecorder``
and a ``TelemetryPublisher`` samples host + inference + engine figures at the shipped default
interval (``mqtt.telemetry_interval_s``, 5 s), spools them in SQLite and publishes them over MQTT
5 to a real mosquitto on loopback (the embedded amqtt broker if mosquitto is missing). "stress"
does the same at ``--stress-rate`` (10 Hz, 50x the default) to make the cost visible. Every round
runs off / on / stress back to back in a rotating order; ratios are medians of per-round ratios.
The load generator shares the CPU with the engine and the publisher.

Model: ``models/surface-defect/model.onnx`` when present, else the tiny test classifier with the
same interface (``edgeds.runtime.testing.tiny_classifier``); the JSON says which.

    .venv/bin/python bench/telemetry_bench.py [--seconds 5] [--rounds 5] [--out FILE]
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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeds import __version__  # noqa: E402
from edgeds.config import Batching, MqttConfig  # noqa: E402
from edgeds.runtime.engine import Engine  # noqa: E402
from edgeds.telemetry.metrics import InferenceRecorder  # noqa: E402
from edgeds.telemetry.publisher import TelemetryPublisher  # noqa: E402


def _model(tmp: Path) -> tuple[Path, str]:
    shipped = REPO / "models" / "surface-defect" / "model.onnx"
    if shipped.is_file():
        return shipped, "shipped surface-defect model"
    from edgeds.runtime.testing import tiny_classifier

    return tiny_classifier(tmp / "tiny.onnx"), "tiny test classifier (shipped model not present)"


def _broker() -> tuple[Any, str]:
    from edgeds.sim.broker import Mosquitto, free_port, mosquitto_binary

    if mosquitto_binary() is not None:
        return Mosquitto().start(), "mosquitto (loopback)"
    from edgeds.telemetry.broker import EmbeddedBroker

    return EmbeddedBroker(port=free_port()).start(), "embedded amqtt (loopback)"


def _closed_loop(engine: Engine, x: np.ndarray, clients: int, seconds: float, on_done: Callable[[float], None]) -> int:
    stop = threading.Event()
    counts = [0] * clients

    def client(i: int) -> None:
        inputs = {"input": x}
        while not stop.is_set():
            t0 = time.perf_counter()
            request = engine.submit(inputs)
            request.wait()
            request.release()
            on_done(time.perf_counter() - t0)
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts)


def _thread_cpu(native_ids: list[int]) -> float:
    """User + system CPU seconds of the given threads of this process (Linux)."""
    import psutil

    wanted = set(native_ids)
    return float(sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in wanted))


def _record_cost_s() -> float:
    """Seconds one InferenceRecorder.record call takes (uncontended, best of 3)."""
    best = float("inf")
    for _ in range(3):
        rec = InferenceRecorder()
        t0 = time.perf_counter()
        for _ in range(100_000):
            rec.record(0.001, 1)
        best = min(best, (time.perf_counter() - t0) / 100_000)
    return best


def _summary(runs: list[dict[str, Any]], mode: str, rounds: int, record_s: float) -> dict[str, Any]:
    """Figures of one telemetry mode against the ``off`` runs of the same rounds."""
    pair = []
    for index in range(rounds):
        by_mode = {r["mode"]: r["throughput_rps"] for r in runs if r["round"] == index}
        pair.append(by_mode[mode] / by_mode["off"])
    mine = [r for r in runs if r["mode"] == mode]
    off = [r for r in runs if r["mode"] == "off"]
    cpu_off = statistics.median(r["cpu_us_per_request"] for r in off)
    cpu_on = statistics.median(r["cpu_us_per_request"] for r in mine)
    share = statistics.median(r["telemetry"]["accounted_share"] for r in mine)
    return {
        "rate_hz": mine[0]["telemetry"]["rate_hz"],
        "throughput_ratio": round(statistics.median(pair), 4),
        "per_round_ratios": [round(r, 4) for r in pair],
        "per_round_ratio_stdev": round(statistics.pstdev(pair), 4),
        "median_rps": {
            "off": statistics.median(r["throughput_rps"] for r in off),
            mode: statistics.median(r["throughput_rps"] for r in mine),
        },
        "cpu_us_per_request": {"off": cpu_off, mode: cpu_on},
        "cpu_bound_ratio": round(cpu_off / cpu_on, 4),
        "accounted_share_of_cpu": round(share, 5),
        "accounted_ratio": round(1.0 - share, 4),
        "record_us_per_request": round(record_s * 1e6, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per mode")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--stress-rate", type=float, default=10.0, help="samples per second of the stress mode")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "telemetry_bench.json")
    args = parser.parse_args()

    default_rate = 1.0 / MqttConfig().telemetry_interval_s
    rates = {"on": default_rate, "stress": args.stress_rate}
    tmp = Path(tempfile.mkdtemp(prefix="edgeds-telemetry-bench-"))
    model, model_kind = _model(tmp)
    broker, broker_kind = _broker()
    batching = Batching(max_batch_size=8, max_queue_delay_us=0)
    engine = Engine("onnxruntime", model, options={"intra_op_num_threads": 1}, batching=batching).start()
    x = np.random.default_rng(0).random((1, 3, 160, 160), dtype=np.float32)
    _closed_loop(engine, x, args.clients, 1.0, lambda _: None)  # warm-up, excluded
    record_s = _record_cost_s()

    runs: list[dict[str, Any]] = []
    modes = ["off", "on", "stress"]
    for index in range(args.rounds):
        # Rotate the order every round so that no mode always runs first or last.
        for mode in modes[index % 3 :] + modes[: index % 3]:
            recorder = InferenceRecorder(queue_depth=engine.queue_depth)
            publisher = None
            if mode != "off":

                def source(rec: InferenceRecorder = recorder) -> dict[str, Any]:
                    s = engine.stats()
                    return {
                        "inference": rec.snapshot(),
                        "engine": {
                            "success": s.success,
                            "executions": s.execution_count,
                            "mean_batch": s.mean_batch_size,
                        },
                        "deploy": {"state": "serving", "model_version": "bench"},
                    }

                publisher = TelemetryPublisher(
                    MqttConfig(url=broker.url, protocol="5"),
                    "bench-device",
                    tmp / f"spool-{index}-{mode}.db",
                    __version__,
                    metrics_source=source,
                    interval_s=1.0 / rates[mode],
                ).start()
                if not publisher.wait_connected(10):
                    raise SystemExit("telemetry publisher could not connect to the bench broker")
            on_done = (lambda lat, rec=recorder: rec.record(lat, 1)) if publisher else (lambda _lat: None)
            tids = publisher.native_thread_ids() if publisher is not None else []
            tcpu0 = _thread_cpu(tids)
            t0, cpu0 = time.perf_counter(), time.process_time()
            done = _closed_loop(engine, x, args.clients, args.seconds, on_done)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            telemetry_cpu = _thread_cpu(tids) - tcpu0
            stats: dict[str, Any] = {}
            if publisher is not None:
                publisher.stop()
                stats = publisher.stats()
                # What telemetry itself cost in this run: its threads' CPU plus the recorder call
                # made on every request, as a share of all the CPU the process used.
                stats["rate_hz"] = rates[mode]
                stats["threads_cpu_s"] = round(telemetry_cpu, 4)
                stats["accounted_share"] = round((telemetry_cpu + record_s * done) / cpu, 5)
            runs.append(
                {
                    "round": index,
                    "mode": mode,
                    "requests": done,
                    "seconds": round(elapsed, 3),
                    "process_cpu_s": round(cpu, 3),
                    "cpu_us_per_request": round(cpu / done * 1e6, 2),
                    "throughput_rps": round(done / elapsed, 2),
                    "telemetry": stats,
                }
            )
            extra = f"  (telemetry {stats['acked_total']} acked, spool {stats['spool_depth']})" if stats else ""
            print(f"round {index} {mode:>6}: {done / elapsed:9.1f} req/s{extra}")
    engine.close()
    if hasattr(broker, "close"):
        broker.close()
    else:
        broker.stop()

    # Each round runs every mode back to back: per-round ratios cancel slow drift in what else the
    # machine does; the figure is their median. On a quiet machine the throughput ratio decides;
    # when per-round ratios scatter more than the effect measured (other jobs on shared cores) it
    # cannot, and the accounted share decides: CPU of the telemetry threads plus the per-request
    # recorder cost over the CPU the process used, which other processes barely disturb.
    summaries = {mode: _summary(runs, mode, args.rounds, record_s) for mode in ("on", "stress")}
    for mode, sm in summaries.items():
        noisy = sm["per_round_ratio_stdev"] > 0.03
        sm["basis"] = "accounted_cpu" if noisy else "throughput"
        sm["throughput_too_noisy"] = noisy
        sm["verdict"] = "PASS" if sm["accounted_ratio" if noisy else "throughput_ratio"] >= 0.97 else "FAIL"
        print(
            f"\n{mode} ({sm['rate_hz']:g} Hz): throughput ratio {sm['throughput_ratio']:.3f} "
            f"(per round {sm['per_round_ratios']}, stdev {sm['per_round_ratio_stdev']:.3f})"
        )
        print(
            f"  CPU/request off {sm['cpu_us_per_request']['off']:.1f} us, {mode} "
            f"{sm['cpu_us_per_request'][mode]:.1f} us -> {sm['cpu_bound_ratio']:.3f}"
        )
        print(
            f"  accounted telemetry share {sm['accounted_share_of_cpu'] * 100:.2f}% of process CPU "
            f"-> ratio {sm['accounted_ratio']:.3f}   target >= 0.97 on {sm['basis']}: {sm['verdict']}"
        )
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
        git_sha = sha.stdout.strip() or None
    except OSError:
        git_sha = None
    result = {
        "benchmark": "telemetry_overhead",
        "target": 0.97,
        "verdict": summaries["on"]["verdict"],
        "verdict_of": "on (the shipped default interval)",
        "modes": summaries,
        "runs": runs,
        "config": {
            "engine": "edgeds.runtime.engine.Engine (in-process)",
            "backend": "onnxruntime",
            "intra_op_num_threads": 1,
            "batching": batching.model_dump(),
            "clients": args.clients,
            "seconds_per_run": args.seconds,
            "rounds": args.rounds,
            "rates_hz": rates,
            "broker": broker_kind,
            "protocol": "5",
        },
        "model": {
            "path": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else model.name,
            "kind": model_kind,
            "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg": list(os.getloadavg()),
            "edgeds": __version__,
            "git_sha": git_sha,
            "note": "load generator, engine and publisher share the same CPUs",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
