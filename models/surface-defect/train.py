#!/usr/bin/env python3
"""Regenerates the shipped surface-defect model and everything next to it.

    python3 -m venv .venv-train
    .venv-train/bin/pip install torch==2.13.0 numpy onnx onnxruntime onnxscript pillow
    .venv-train/bin/python models/surface-defect/train.py

Steps: generate the training split (seed 1) with edgeds.datasets.surface, train
a small MobileNet-style CNN on the CPU with PyTorch, export model.onnx (opset 17,
eval mode so BatchNorm is folded into the convolutions, dynamic batch), check
it with onnx.checker, measure FP32 top-1 on the validation split through
onnxruntime with exactly the model card's preprocessing, measure batch-1
latency, write samples/*.png and surface-defect.yaml (with the split
fingerprints), and print every value that goes into the model card / README.

Seeds: training 1, development (monitoring during training only) 2,
validation 20261101, calibration 20261102. They are disjoint, and every image
depends only on (seed, index).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_SEED = 1
DEV_SEED = 2
VAL_SEED = 20261101
VAL_COUNT = 1000
CALIB_SEED = 20261102
CALIB_COUNT = 256
SIZE = 160
SCALE = 1.0 / 255.0
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
OPSET = 17
SAMPLES_PER_CLASS = 8


def load_surface():
    """Import edgeds/datasets/surface.py by path (no edgeds package side effects)."""
    path = ROOT / "edgeds" / "datasets" / "surface.py"
    spec = importlib.util.spec_from_file_location("edgeds_datasets_surface", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


surface = load_surface()


# --------------------------------------------------------------------------- data


CELL = 8  # localisation targets: one cell per 8x8 pixels (the 20x20 feature map)
REGION_THRESHOLD = 0.3


def _render_range(args: tuple[int, int, int]):
    """Images, labels and per-cell defect maps (cell = label where the defect is, else 0)."""
    seed, start, stop = args
    g = SIZE // CELL
    imgs = np.empty((stop - start, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.empty((stop - start,), dtype=np.int64)
    cells = np.zeros((stop - start, g, g), dtype=np.uint8)
    for k, i in enumerate(range(start, stop)):
        imgs[k], labels[k], region = surface.render_with_region(seed, i, SIZE)
        hit = (region > REGION_THRESHOLD).reshape(g, CELL, g, CELL).any(axis=(1, 3))
        cells[k][hit] = labels[k]
    return imgs, labels, cells


def generate_parallel(seed: int, count: int, workers: int):
    """Same images/labels as surface.generate(seed, count), plus cell maps; split over processes."""
    chunk = 500
    jobs = [(seed, a, min(a + chunk, count)) for a in range(0, count, chunk)]
    if workers <= 1 or count < 2 * chunk:
        parts = [_render_range(j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_range, jobs)
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def preprocess(images: np.ndarray) -> np.ndarray:
    """The model card's preprocessing: uint8 NHWC RGB -> float32 NCHW."""
    x = images.astype(np.float32) * np.float32(SCALE)
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- model

# (out_channels, stride) of each depthwise-separable block after the stem
STEM = 60
BLOCKS = (
    (80, 2),                                   # 40x40
    (160, 1), (160, 1),
    (320, 2), (320, 1), (320, 1),              # 20x20
    (640, 2), (640, 1), (640, 1), (640, 1),    # 10x10
    (512, 2), (512, 1),                        # 5x5
)


def build_model(num_classes: int = 5):
    import torch
    import torch.nn as nn

    class StridedDepthwise(nn.Conv2d):
        """A stride-2 depthwise conv that always runs in float32.

        Under CPU bf16 autocast, PyTorch's backward pass for strided depthwise
        convolutions is ~25x slower than in float32 (26 ms vs 1 ms for 32 x 512
        x 10 x 10 on the project machine); every other layer is faster in bf16.
        Outside autocast (evaluation, ONNX export) this is a plain Conv2d.
        """

        def forward(self, x):
            if not torch.is_autocast_enabled("cpu"):
                return super().forward(x)
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())

    def cbr(cin, cout, k, stride, groups=1):
        conv = StridedDepthwise if groups > 1 and stride > 1 else nn.Conv2d
        return [
            conv(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        ]

    class SurfaceNet(nn.Module):
        """MobileNet-v1 style: 3x3 stem, depthwise-separable blocks, GAP, linear head.

        Training only: ``aux`` (a 1x1 conv on the stride-8 feature map) predicts a
        per-cell defect class map, a localisation loss that speeds up learning a lot.
        It is not part of forward(x) and so not of the exported model.
        """

        def __init__(self):
            super().__init__()
            stride = 2
            early = cbr(3, STEM, 3, 2)
            late = []
            c = STEM
            c_aux = None
            for cout, s in BLOCKS:
                stride *= s
                layers = late if stride > CELL else early
                layers += cbr(c, c, 3, s, groups=c)  # depthwise 3x3
                layers += cbr(c, cout, 1, 1)  # pointwise 1x1
                c = cout
                if stride == CELL:
                    c_aux = cout
            self.features = nn.Sequential(*early)  # down to stride 8 (20x20)
            self.features2 = nn.Sequential(*late)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.1)
            self.classifier = nn.Linear(c, num_classes)
            self.aux = nn.Conv2d(c_aux, num_classes, 1)

        def forward(self, x, with_aux: bool = False):
            f = self.features(x)
            y = self.classifier(self.dropout(self.pool(self.features2(f)).flatten(1)))
            if with_aux:
                return y, self.aux(f)
            return y

    return SurfaceNet()


def count_macs(model, size: int = SIZE) -> int:
    import torch
    import torch.nn as nn

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out[0].numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total


# --------------------------------------------------------------------------- training


def to_input(batch_u8, mean_t, inv_std_t):
    """uint8 NHWC torch tensor -> normalised float NCHW (channels_last memory)."""
    x = batch_u8.permute(0, 3, 1, 2).float()
    return (x * SCALE - mean_t) * inv_std_t


def evaluate_torch(model, images_u8, labels, batch: int = 200) -> float:
    import torch

    mean_t = torch.tensor(MEAN).view(1, 3, 1, 1)
    inv_std_t = 1.0 / torch.tensor(STD).view(1, 3, 1, 1)
    model.eval()
    correct = 0
    with torch.no_grad():
        for a in range(0, len(labels), batch):
            x = to_input(images_u8[a:a + batch], mean_t, inv_std_t)
            correct += int((model(x).argmax(1) == labels[a:a + batch]).sum())
    model.train()
    return correct / len(labels)


def train(args, log) -> "object":
    import torch
    import torch.nn as nn

    torch.manual_seed(args.torch_seed)
    t0 = time.perf_counter()
    xtr, ytr, ctr = generate_parallel(args.train_seed, args.train_count, args.workers)
    xdev, ydev, _ = generate_parallel(DEV_SEED, args.dev_count, args.workers)
    gen_s = time.perf_counter() - t0
    log(f"generated {len(ytr)} training + {len(ydev)} dev images in {gen_s:.1f} s")

    torch.set_num_threads(args.threads)
    xtr_t = torch.from_numpy(xtr)
    ytr_t = torch.from_numpy(ytr)
    ctr_t = torch.from_numpy(ctr.astype(np.int64))
    cell_frac = float((ctr > 0).mean())
    log(f"defect cells: {cell_frac:.4f} of all cells")
    xdev_t = torch.from_numpy(xdev)
    ydev_t = torch.from_numpy(ydev)

    model = build_model(len(surface.LABELS))
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu"))
        log(f"initialised from {args.init}")
    model = model.to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99))
    steps_per_epoch = len(ytr) // args.batch
    total = steps_per_epoch * args.epochs
    warm = max(1, int(0.03 * total))

    # Schedule progress is max(step / total, elapsed / budget): on a fast machine all
    # steps run; on a slow or busy one training ends at the time budget with the
    # learning rate still annealed properly (linear warm-up, then cosine decay).
    def progress(step):
        p = step / total
        if args.time_budget:
            p = max(p, (time.perf_counter() - t_train) / args.time_budget)
        return min(p, 1.0)

    def lr_at(p):
        w = 0.03
        if p < w:
            return args.lr * max(p / w, 0.02)
        q = (p - w) / (1.0 - w)
        return args.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * q)))

    crit = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    crit_aux = nn.CrossEntropyLoss(weight=torch.tensor([1.0] + [args.aux_pos_weight] * 4))
    mean_t = torch.tensor(MEAN).view(1, 3, 1, 1)
    inv_std_t = 1.0 / torch.tensor(STD).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(args.torch_seed)

    t_train = time.perf_counter()
    step = 0
    done = False
    for epoch in range(args.epochs):
        perm = torch.randperm(len(ytr), generator=gen)
        run_loss, run_ok, seen = 0.0, 0, 0
        te = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            xb = xtr_t[idx]
            yb = ytr_t[idx]
            cb = ctr_t[idx]
            # dihedral augmentation (all five classes are invariant to it)
            r = int(torch.randint(0, 8, (1,), generator=gen))
            if r & 1:
                xb, cb = xb.flip(1), cb.flip(1)
            if r & 2:
                xb, cb = xb.flip(2), cb.flip(2)
            if r & 4:
                xb, cb = xb.transpose(1, 2), cb.transpose(1, 2)
            x = to_input(xb, mean_t, inv_std_t).contiguous(memory_format=torch.channels_last)
            p = progress(step)
            if p >= 1.0:
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(p)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                out, aux = model(x, with_aux=True)
            out, aux = out.float(), aux.float()
            loss = crit(out, yb)
            if args.aux_weight > 0:
                loss = loss + args.aux_weight * crit_aux(aux, cb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_loss += loss.item() * len(yb)
            run_ok += int((out.argmax(1) == yb).sum())
            seen += len(yb)
            if args.log_every and step % args.log_every == 0:
                log(f"  step {step}/{total} p {p:.3f} lr {lr_at(p):.2e} loss {run_loss / seen:.4f} acc {run_ok / seen:.4f} "
                    f"({(time.perf_counter() - te) / (b + 1) * 1000 / args.batch:.1f} ms/img)")
        dev = evaluate_torch(model, xdev_t, ydev_t)
        seen = max(seen, 1)
        log(f"epoch {epoch + 1}/{args.epochs} loss {run_loss / seen:.4f} train-acc {run_ok / seen:.4f} "
            f"dev-acc {dev:.4f} epoch {time.perf_counter() - te:.0f} s, total {time.perf_counter() - t_train:.0f} s")
        if done:
            break
    train_s = time.perf_counter() - t_train
    log(f"training time {train_s:.0f} s ({train_s / 60:.1f} min) on {args.threads} threads, "
        f"{step} of {total} steps ({step * args.batch} images seen)")
    model.eval()
    return model, {"train_seconds": train_s, "generate_seconds": gen_s, "dev_top1": dev,
                   "train_steps": step, "train_images_seen": step * args.batch}


# --------------------------------------------------------------------------- export / eval


def export_onnx(model, path: Path) -> None:
    import torch

    model = model.eval().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, 3, SIZE, SIZE)
    torch.onnx.export(
        model, (dummy,), str(path),
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET, do_constant_folding=True, dynamo=False,
    )
    import onnx

    m = onnx.load(str(path))
    # ReLU6 becomes Clip whose bounds come from Constant nodes: store those as
    # initializers instead (plainer graph for quantizers and graph tools).
    nodes = []
    for n in m.graph.node:
        if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]:
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            m.graph.initializer.append(t)
        else:
            nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    assert "BatchNormalization" not in ops, ops
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    m.producer_name = "edgeds models/surface-defect/train.py"
    m.doc_string = "edgeds surface-defect classifier (synthetic factory surface inspection)"
    onnx.save(m, str(path))


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_top1(sess, images: np.ndarray, labels: np.ndarray, batch: int = 50) -> tuple[float, np.ndarray]:
    preds = []
    for a in range(0, len(labels), batch):
        logits = sess.run(["logits"], {"input": preprocess(images[a:a + batch])})[0]
        preds.append(logits.argmax(1))
    preds = np.concatenate(preds)
    return float((preds == labels).mean()), preds


def ort_latency(sess, image: np.ndarray, runs: int = 300) -> dict:
    x = preprocess(image[None])
    for _ in range(30):
        sess.run(["logits"], {"input": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(["logits"], {"input": x})
        ts.append(time.perf_counter() - t)
    ts = np.array(ts) * 1000
    return {"median_ms": float(np.median(ts)), "p90_ms": float(np.percentile(ts, 90)),
            "min_ms": float(ts.min())}


def write_samples(out: Path, images: np.ndarray, labels: np.ndarray) -> list[str]:
    from PIL import Image

    d = out / "samples"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.png"):
        old.unlink()
    written = []
    for c, name in enumerate(surface.LABELS):
        idx = np.flatnonzero(labels == c)[:SAMPLES_PER_CLASS]
        for n, i in enumerate(idx):
            p = d / f"{name}_{n:02d}.png"
            Image.fromarray(images[i]).save(p, optimize=True)
            written.append(f"{p.name} <- validation[{i}]")
    return written


def write_card(out: Path, val_fp: str, calib_fp: str, top1: float) -> Path:
    labels = ", ".join(surface.LABELS)
    fmt = lambda v: "[" + ", ".join(repr(float(x)) for x in v) + "]"  # noqa: E731
    text = f"""schema: 1
name: surface-defect
version: 1.0.0
task: image-classification
description: Factory surface inspection - classifies a 160x160 RGB close-up of a metal or plastic part as ok or as one of four defect types.
model: model.onnx
input:
  name: input
  layout: NCHW
  height: {SIZE}
  width: {SIZE}
  color_order: RGB
  dtype: float32
  scale: {SCALE!r}
  mean: {fmt(MEAN)}
  std: {fmt(STD)}
  resize: stretch
output:
  name: logits
  kind: logits
labels: [{labels}]
data:
  generator: edgeds.datasets.surface:generate
  validation:
    seed: {VAL_SEED}
    count: {VAL_COUNT}
    fingerprint: "{val_fp}"
  calibration:
    seed: {CALIB_SEED}
    count: {CALIB_COUNT}
    fingerprint: "{calib_fp}"
samples: samples
reference:
  fp32_top1: {top1:.4f}
"""
    p = out / "surface-defect.yaml"
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="output directory (default: next to this file)")
    ap.add_argument("--train-seed", type=int, default=TRAIN_SEED,
                    help="must differ from the validation / calibration seeds")
    ap.add_argument("--train-count", type=int, default=20000)
    ap.add_argument("--dev-count", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--time-budget", type=float, default=1500.0,
                    help="seconds of training; the schedule ends early if needed (0 = no limit)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.02)
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the per-cell localisation loss")
    ap.add_argument("--aux-pos-weight", type=float, default=5.0, help="class weight of defect cells in it")
    ap.add_argument("--amp", choices=("bf16", "off"), default="bf16",
                    help="bfloat16 autocast for training (weights stay float32; export is float32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="processes generating the data")
    ap.add_argument("--torch-seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--checkpoint", type=Path, default=Path("/tmp/surface-defect.pt"),
                    help="save the trained state_dict here / with --skip-train load it from here")
    ap.add_argument("--skip-train", action="store_true", help="export and evaluate --checkpoint only")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this state_dict (continue training with a fresh schedule)")
    args = ap.parse_args(argv)
    if args.train_seed in (VAL_SEED, CALIB_SEED, DEV_SEED):
        ap.error("--train-seed must not be a validation, calibration or dev seed")

    import torch

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    torch.set_num_threads(args.threads)

    info = {}
    if args.skip_train:
        model = build_model(len(surface.LABELS))
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
        model.eval()
    else:
        model, info = train(args, log)
        if args.checkpoint:
            torch.save(model.state_dict(), args.checkpoint)

    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux."))
    macs = count_macs(model)
    onnx_path = out / "model.onnx"
    export_onnx(model, onnx_path)
    size_mb = onnx_path.stat().st_size / 1e6

    t = time.perf_counter()
    xval, yval = surface.generate(VAL_SEED, VAL_COUNT, SIZE)
    gen_ms = (time.perf_counter() - t) / VAL_COUNT * 1000
    xcal, ycal = surface.generate(CALIB_SEED, CALIB_COUNT, SIZE)
    val_fp = surface.fingerprint(xval, yval)
    calib_fp = surface.fingerprint(xcal, ycal)

    sess = ort_session(onnx_path, args.threads)
    top1, preds = ort_top1(sess, xval, yval)
    confusion = np.zeros((5, 5), dtype=int)
    for t_, p_ in zip(yval, preds):
        confusion[t_, p_] += 1
    calib_top1, _ = ort_top1(sess, xcal, ycal)
    lat = ort_latency(sess, xval[0])
    samples = write_samples(out, xval, yval)
    card = write_card(out, val_fp, calib_fp, top1)

    summary = {
        "params": params,
        "mmacs": round(macs / 1e6, 1),
        "mflops": round(2 * macs / 1e6, 1),
        "onnx_mb": round(size_mb, 3),
        "opset": OPSET,
        "fp32_top1_val_ort": top1,
        "fp32_top1_calib_ort": calib_top1,
        "ort_latency_b1_threads": args.threads,
        **{f"ort_latency_{k}": round(v, 3) for k, v in lat.items()},
        "generator_ms_per_image": round(gen_ms, 3),
        "validation_fingerprint": val_fp,
        "calibration_fingerprint": calib_fp,
        **{k: round(v, 4) for k, v in info.items()},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    log("confusion (rows = truth, cols = prediction, order " + ",".join(surface.LABELS) + "):")
    log(str(confusion))
    log(f"wrote {card}, {onnx_path} ({size_mb:.2f} MB), {len(samples)} samples")
    log(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
