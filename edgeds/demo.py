"""``make demo``: the main job end to end on the local target with the shipped model.

Stages: doctor -> resolve the ``local`` target's profile -> classify the shipped sample images
through ONNX Runtime (predictions against labels) -> top-1 accuracy on the held-out validation
set. Exits non-zero when the accuracy is below the model card's reference minus 0.5 points.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import backends, config
from .cli._output import table
from .datasets import load_split
from .doctor import diagnose
from .evaluate import load_samples, predict, softmax, top1_accuracy

SHIPPED_MODEL = config.REPO_ROOT / "models" / "surface-defect" / "model.onnx"


def run(model: Path = SHIPPED_MODEL, console: Console | None = None) -> float:
    """Run the demo; returns the validation top-1 accuracy (0..1)."""
    console = console or Console(highlight=False)
    console.rule("[bold]edgeds demo[/]")

    report = diagnose()
    console.print(
        table(
            f"edgeds doctor · Python {report.python} · {report.machine} · {report.cpu_count} CPUs",
            ["backend", "available", "version", "devices"],
            [
                [b.name, "yes" if b.available else "no", b.version or "-", ", ".join(b.devices) or "-"]
                for b in report.backends
            ],
        )
    )

    target = config.load_target("local")
    profile = config.resolve_target_profile(target)
    chain = " → ".join(f"{name}:{precision}" for name, precision, _ in profile.chain())
    console.print(f"target [bold]local[/] resolves to profile [bold]{profile.name}[/]: {chain}")

    card = config.load_model_card(model)
    console.print(f"model [bold]{card.name} {card.version}[/] ({card.model_path}), labels: {', '.join(card.labels)}")

    batch_size = 8
    runtime = backends.create("onnxruntime", {"intra_op_num_threads": report.cpu_count})
    with runtime:
        runtime.open(card.model_path, buckets=(batch_size,))

        samples = load_samples(card)
        if samples:
            import numpy as np

            logits = predict(runtime, card, np.stack([image for _, _, image in samples]), batch_size)
            probs = softmax(logits)
            rows = []
            for (path, label, _), p in zip(samples, probs, strict=True):
                guess = card.labels[int(p.argmax())]
                rows.append([path.name, label, guess, f"{p.max():.3f}", "✓" if guess == label else "✗"])
            correct = sum(row[-1] == "✓" for row in rows)
            console.print(
                table(
                    f"Sample images ({correct}/{len(rows)} correct)", ["file", "label", "predicted", "score", ""], rows
                )
            )

        console.print("validation set: generating / loading from cache ...")
        images, labels = load_split(card, "validation")
        start = time.perf_counter()
        with Progress(
            TextColumn("classifying validation set"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("validate", total=len(images))
            logits = predict(runtime, card, images, batch_size, on_batch=lambda n: progress.advance(task, n))
        elapsed = time.perf_counter() - start

    accuracy = top1_accuracy(logits, labels)
    console.print(
        f"[bold]validation top-1: {accuracy * 100:.2f}%[/] on {len(labels)} held-out images "
        f"(ONNX Runtime FP32, {len(labels) / elapsed:.0f} images/s)"
    )
    return accuracy


def main() -> None:
    accuracy = run()
    card = config.load_model_card(SHIPPED_MODEL)
    floor = (card.reference.fp32_top1 if card.reference else 0.97) - 0.005
    if accuracy < floor:
        print(f"validation accuracy {accuracy:.4f} is below the expected {floor:.4f}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
