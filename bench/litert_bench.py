#!/usr/bin/env python3
"""LiteRT FP32 vs full-integer INT8 on XNNPACK: top-1 and images/s at batch 1 and 8, side by side.

Both ``.tflite`` files come from the cached onnx2tf conversion of the model (the one
``edgeds compile`` makes; a first run converts once, ~2 minutes, outside the timed part). Each
runs through :class:`~edgeds.backends.litert.LiteRtBackend` exactly as served: float32 in and out,
the INT8 model's int8 inputs/outputs quantized and dequantized by the backend. Top-1 is over the
full validation split; "agreement" is INT8's top-1 agreement with FP32. Throughput is measured in
interleaved rounds (FP32 b1, INT8 b1, FP32 b8, INT8 b8, ...) so both see the same machine state;
the median round counts. Warm-up is excluded. Writes JSON (default bench/results/litert_bench.json).

    .venv/bin/python bench/litert_bench.py [--threads 2] [--seconds 1.0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeds._version import __version__  # noqa: E402
from edgeds.backends.litert import LiteRtBackend  # noqa: E402
from edgeds.compile import data as data_mod  # noqa: E402
from edgeds.compile.toolchains import litert as litert_toolchain  # noqa: E402
from edgeds.modelcard import load_model_card  # noqa: E402

FILES = {"fp32": "model_float32.tflite", "int8": "model_full_integer_quant.tflite"}
BATCHES = (1, 8)


def _outputs(backend: LiteRtBackend, name: str, out: str, x: np.ndarray) -> np.ndarray:
    """Outputs over all of ``x`` (batches of 8, the rest one by one)."""
    rows = []
    whole = len(x) - len(x) % 8
    for start in range(0, whole, 8):
        rows.append(np.array(backend.infer({name: x[start : start + 8]})[out]))
    for start in range(whole, len(x)):
        rows.append(np.array(backend.infer({name: x[start : start + 1]})[out]))
    return np.concatenate(rows)


def _rate(backend: LiteRtBackend, name: str, x: np.ndarray, batch: int, seconds: float) -> float:
    """Images/s running batches of ``batch`` for about ``seconds``."""
    count, started = 0, time.perf_counter()
    while True:
        start = (count * batch) % (len(x) - batch)
        backend.infer({name: x[start : start + batch]})
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count * batch / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "surface-defect" / "model.onnx")
    ap.add_argument("--threads", type=int, default=2, help="XNNPACK threads (num_threads)")
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "litert_bench.json")
    args = ap.parse_args()

    card = load_model_card(args.model)
    calib = [dict(b) for b in data_mod.batches(card, data_mod.load_images(card, "calibration").images, layout="NCHW")]
    converted = litert_toolchain._conversion(args.model, card, calib)
    validation = data_mod.load_images(card, "validation")
    x = data_mod.preprocess_all(card, validation.images, "NHWC")
    labels = np.asarray(validation.labels)

    opened: dict[str, tuple[LiteRtBackend, str]] = {}
    outputs: dict[str, np.ndarray] = {}
    for precision, file in FILES.items():
        backend = LiteRtBackend({"num_threads": args.threads})
        spec = backend.open(converted / file, buckets=BATCHES)
        name, out = spec.inputs[0].name, spec.outputs[0].name
        opened[precision] = (backend, name)
        outputs[precision] = _outputs(backend, name, out, x)
        for batch in BATCHES:  # warm-up
            backend.infer({name: x[:batch]})

    rates: dict[str, dict[int, list[float]]] = {p: {b: [] for b in BATCHES} for p in FILES}
    for _ in range(args.rounds):
        for batch in BATCHES:
            for precision, (backend, name) in opened.items():
                rates[precision][batch].append(_rate(backend, name, x, batch, args.seconds))
    for backend, _name in opened.values():
        backend.close()

    result: dict[str, Any] = {
        "edgeds": __version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": args.threads,
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "validation_samples": len(labels),
        "precisions": {},
    }
    ref = outputs["fp32"].argmax(1)
    for precision, logits in outputs.items():
        top = logits.argmax(1)
        result["precisions"][precision] = {
            "file": FILES[precision],
            "top1": float((top == labels).mean()),
            "agreement_with_fp32": float((top == ref).mean()),
            "images_per_s": {f"batch{b}": round(statistics.median(rates[precision][b]), 1) for b in BATCHES},
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':6} {'top-1':>7} {'agree':>6} " + " ".join(f"{'b' + str(b) + ' img/s':>10}" for b in BATCHES))
    for precision, figures in result["precisions"].items():
        speeds = " ".join(f"{figures['images_per_s'][f'batch{b}']:>10}" for b in BATCHES)
        print(f"{precision:6} {figures['top1']:>7.3f} {figures['agreement_with_fp32']:>6.3f} {speeds}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
