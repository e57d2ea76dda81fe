"""Inspection fps vs the engine's own throughput, same engine, side by side (target: >= 0.8 x).

What runs, on ONE started engine (``edgeds.runtime.engine.Engine``: ONNX Runtime FP32 on the
model, or ``--bundle``'s backend; batching from the profile, default ``x86-cpu``: max batch 8,
preferred 4/8, 1 ms queue delay):

* **engine-bN**: the engine's own throughput at batch size N — closed loop, preprocessed
  requests of N rows, two in flight (so the engine never idles), for N = the max batch size and
  N = the smallest preferred size (what the inspection's micro-batches mostly are). The ratio
  is taken against the *best* of them: no decoding, no preprocessing, no decisions.
* **inspection**: ``edgeds.inspection.inspect_source`` on a video of the frames (MJPG ``.avi``,
  like a camera stream; ``--lossless`` for HuffYUV): decode -> preprocess into pooled rows ->
  requests of what is queued (up to the smallest preferred batch size) micro-batched by the
  same engine -> decisions -> JSONL ledger (fsync every
  second, rejects at once, on the ledger's syncer thread) -> rejected frames saved (JPEG, a
  nice +10 writer thread that skips and counts images when it cannot keep up). fps = frames
  decided / time from start to the last decision (decoder start-up included).
* **inspection-no-images**: the same without saving rejected frames (their JPEG encoding takes
  CPU from the engine on small machines; shown so the cost is visible).

Rounds alternate engine / inspection / inspection-no-images so drift on the shared machine hits
all alike; ratios are of medians. The decoder, the pipeline threads and the engine share the CPU
(2 cores here) — say so when quoting the figure.

    .venv/bin/python bench/inspect_bench.py [--frames 600] [--rounds 5] [--bundle B] [--out FILE]
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeds import __version__  # noqa: E402
from edgeds.config import load_profile  # noqa: E402
from edgeds.inspection import inspect_source, open_engine, write_video  # noqa: E402
from edgeds.inspection.prep import FramePreprocessor  # noqa: E402
from edgeds.modelcard import ModelCard  # noqa: E402
from edgeds.runtime.engine import Engine, InferRequest  # noqa: E402
from edgeds.runtime.testing import write_tiny_card  # noqa: E402

SHIPPED = REPO / "models" / "surface-defect" / "model.onnx"


def _standin(path: Path) -> Path:
    """A random-weight ONNX net with the shipped model's architecture and cost (train.py's blocks)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes: list[Any] = []
    inits: list[Any] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, groups: int = 1) -> str:
        name = f"c{len(nodes)}"
        w = rng.normal(0, (2 / (k * k * cin / groups)) ** 0.5, (cout, cin // groups, k, k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name + "_w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), name + "_b"))
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, name + "_w", name + "_b"], [name], strides=[stride] * 2, pads=[pad] * 4, group=groups
            )
        )
        nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
        return name + "_r"

    x, c = conv("input", 3, 32, 3, 2), 32
    for cout, stride in ((64, 2), (128, 1), (128, 2), (256, 1), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                         (768, 2), (768, 1)):  # fmt: skip
        x = conv(conv(x, c, c, 3, stride, groups=c), c, cout, 1, 1)
        c = cout
    inits.append(numpy_helper.from_array(rng.normal(0, 0.05, (5, c)).astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(5, np.float32), "fc_b"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 160, 160])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _model(tmp: Path) -> tuple[Path, str]:
    if SHIPPED.is_file() and list(SHIPPED.parent.glob("*.yaml")):
        return SHIPPED, "models/surface-defect/model.onnx"
    directory = tmp / "standin"
    directory.mkdir()
    _standin(directory / "model.onnx")
    write_tiny_card(directory, "standin")
    return directory / "model.onnx", "random-weight stand-in with the shipped architecture (shipped model absent)"


def _frames(card: ModelCard, count: int) -> np.ndarray:
    if card.data is not None:
        from edgeds.datasets import load_split

        return load_split(card, "validation")[0][:count]
    from edgeds.datasets.surface import generate

    return generate(7, count, card.input.height)[0]


def engine_throughput(
    engine: Engine, card: ModelCard, layout: str, images: np.ndarray, seconds: float, batch: int
) -> float:
    """Samples/s of the engine alone: ``batch``-row requests, two in flight, for ``seconds``."""
    prep = FramePreprocessor(card.input, layout)
    inputs = [prep.buffer(batch) for _ in range(2)]
    for buf in inputs:
        for row in range(batch):
            prep.into(images[row % len(images)], buf[row])
    name = card.input.name
    inflight: list[InferRequest] = [engine.submit({name: inputs[0]})]
    done = 0
    turn = 1
    start = time.perf_counter()
    while True:
        inflight.append(engine.submit({name: inputs[turn]}))
        turn ^= 1
        request = inflight.pop(0)
        request.wait()
        request.release()
        done += batch
        if time.perf_counter() - start >= seconds:
            break
    for request in inflight:
        request.wait()
        request.release()
    return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600, help="frames in the video")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", default="x86-cpu")
    parser.add_argument("--bundle", type=Path, default=None, help="bench a bundle instead of model.onnx FP32")
    parser.add_argument("--lossless", action="store_true", help="HuffYUV video instead of MJPG")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "inspect_bench.json")
    args = parser.parse_args()

    profile = load_profile(args.profile)
    with tempfile.TemporaryDirectory(prefix="edgeds-inspect-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.bundle is not None:
            loaded = open_engine(bundle=args.bundle, profile=profile)
            model_desc = loaded.description
        else:
            model, model_desc = _model(tmp)
            loaded = open_engine(model=model, profile=profile)
        with loaded:
            card, engine = loaded.card, loaded.engine
            images = _frames(card, args.frames)
            video = tmp / ("frames.avi")
            write_video(images, video, fps=30, lossless=args.lossless)
            max_batch = engine.batching.max_batch_size
            # the inspection's own batch size: what its micro-batches mostly are (a preferred size)
            insp_batch = min(engine.batching.preferred_batch_sizes or (max_batch,))
            kinds = [f"engine-b{max_batch}", f"engine-b{insp_batch}", "inspection", "inspection-no-images"]
            runs: dict[str, list[float]] = {kind: [] for kind in dict.fromkeys(kinds)}
            batches: dict[str, list[float]] = {"inspection": [], "inspection-no-images": []}
            latency: dict[str, list[dict[str, float]]] = {"inspection": [], "inspection-no-images": []}
            evidence: dict[str, list[dict[str, int]]] = {"inspection": [], "inspection-no-images": []}
            for round_ in range(args.rounds):
                for kind in runs:
                    if kind.startswith("engine"):
                        seconds = max(1.0, args.frames / max(1.0, runs["inspection"][-1])) if round_ else 2.0
                        fps = engine_throughput(engine, card, loaded.layout, images, seconds, int(kind[8:]))
                    else:
                        from edgeds.config import InspectionStation

                        station = InspectionStation(name="bench", source=str(video), save_rejects=kind == "inspection")
                        summary = inspect_source(
                            str(video),
                            engine,
                            card,
                            layout=loaded.layout,
                            station=station,
                            state_dir=tmp / f"state-{kind}-{round_}",
                        )
                        if summary.processed != len(images):
                            print(f"warning: {summary.processed}/{len(images)} frames decided", file=sys.stderr)
                        fps = summary.fps
                        batches[kind].append(summary.engine["mean_batch_size"])
                        latency[kind].append(summary.latency_ms)
                        evidence[kind].append({"saved": summary.rejects_saved, "skipped": summary.rejects_skipped})
                    runs[kind].append(fps)
                    print(f"round {round_ + 1}/{args.rounds} {kind:22s} {fps:8.1f} fps", flush=True)

    med = {kind: statistics.median(values) for kind, values in runs.items()}
    engine_best = max(v for k, v in med.items() if k.startswith("engine"))
    ratio = med["inspection"] / engine_best
    ratio_no_images = med["inspection-no-images"] / engine_best
    print()
    print(f"{'':24s}{'median fps':>12s}{'x engine':>10s}{'mean batch':>12s}")
    for kind, value in med.items():
        mean_batch = f"{statistics.median(batches[kind]):12.2f}" if kind in batches else ""
        print(f"{kind:24s}{value:12.1f}{value / engine_best:10.2f}{mean_batch}")
    print(
        f"\ninspection / engine (best of its batch sizes) = {ratio:.2f} (target >= 0.80): "
        f"{'PASS' if ratio >= 0.8 else 'FAIL'}"
    )

    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    import cv2
    import onnxruntime

    result: dict[str, Any] = {
        "bench": "inspect",
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "edgeds": __version__,
            "git_sha": sha.stdout.strip() or None,
            "onnxruntime": onnxruntime.__version__,
            "opencv": cv2.__version__,
            "note": "decoder, pipeline threads and engine share the same CPU cores",
        },
        "config": {
            "model": model_desc,
            "profile": profile.name,
            "batching": profile.batching.model_dump(),
            "frames": len(images),
            "video": "HuffYUV (lossless)" if args.lossless else "MJPG",
            "rounds": args.rounds,
            "engine_method": "closed loop, requests of the batch size, 2 in flight; ratio vs the best",
        },
        "fps": runs,
        "median_fps": med,
        "mean_batch_size": batches,
        "latency_ms": latency,
        "rejected_images": evidence,
        "engine_best_fps": engine_best,
        "ratio": ratio,
        "ratio_no_images": ratio_no_images,
        "target": 0.8,
        "pass": ratio >= 0.8,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
