"""``make demo``: the whole trip on this machine with the shipped model.

1. doctor, and the ``local`` target's profile;
2. the shipped model through ONNX Runtime: sample images against their labels, and top-1 on the
   held-out validation set;
3. compile for the local profile (accuracy gate, signed bundle);
4. an embedded MQTT broker and a simulated device (a real sshd on 127.0.10.N) with the agent
   installed, telemetry going to the broker;
5. deploy the bundle to the device over SSH (verified, atomic, health-checked);
6. inspection on a video made from the validation images: confusion matrix, fps, drops;
7. what ``edgeds monitor --once`` sees on the broker;
8. the shipped language model (:mod:`edgeds.demo_lm`): compiled behind its quality gate, served
   with the OpenAI API, asked about shifts it has not seen.

It ends by itself and stops and removes everything it started. Exit status 1 when the
validation accuracy, the deploy, the inspection accuracy or the language model's answers are
not what they should be.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from . import backends, config, modelcard
from ._version import __version__
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

    card = modelcard.load_model_card(model)
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def trip(model: Path, work: Path, console: Console) -> bool:
    """Stages 3-7 (compile -> deploy -> agent -> inspection -> monitor); True when all went well."""
    import subprocess

    from .bundle import generate_keypair
    from .cli._progress import progress_callback
    from .compile import compile_model
    from .deploy.api import deploy_bundle
    from .deploy.setup import setup_host
    from .deploy.targets import host_plans, resolve_target
    from .inspection import labelled_video, run_inspection
    from .sim.devices import SimFleet
    from .telemetry.broker import EmbeddedBroker
    from .telemetry.publisher import TelemetryPublisher

    ok = True
    target = config.load_target("local")
    profile = config.resolve_target_profile(target)
    private_key, public_key = generate_keypair(work / "keys")

    console.rule(f"compile for {profile.name}")
    with progress_callback() as on_progress:
        result = compile_model(model, profile, out=work / "bundle", key=private_key, progress=on_progress)
    rows = [[escape(c) for c in row] for row in result.report.rows()]
    console.print(table(f"Compile report ({result.report.seconds:.1f} s)", result.report.columns(), rows))
    console.print(f"bundle: [bold]{result.bundle}[/] ({result.backend} {result.precision}, signed: {result.signed})")

    console.rule("embedded broker + simulated device")
    with EmbeddedBroker("127.0.0.1", _free_port()) as broker:
        console.print(f"embedded MQTT broker (amqtt, MQTT 3.1.1) on {broker.url}")
        with SimFleet(1, target_name="demo", profile=profile.name, mqtt_url=broker.url) as fleet:
            target_path = fleet.write_target(mqtt={"url": broker.url, "protocol": "3.1.1", "telemetry_interval_s": 1.0})
            device = fleet[0]
            console.print(f"device [bold]{device.name}[/]: sshd on {device.address}:{device.port}, host key pinned")
            sim_target, path = resolve_target(str(target_path))
            plans = host_plans(sim_target, path)
            setup = setup_host(
                sim_target,
                plans[0],
                wheel=None,
                public_key=public_key.read_bytes(),
                python=str(fleet.device_python()),
            )
            if not setup.ok:
                console.print(f"[red]device setup failed:[/] {setup.message}")
                return False
            console.print(f"agent installed and running ({setup.installed_seconds:.1f} s)")

            console.rule("deploy over SSH")
            rollout = deploy_bundle(result.bundle, target_path)
            console.print(
                table(
                    "Deploy",
                    ["host", "status", "release", "message"],
                    [[h.host, h.status, h.release, escape(h.message)] for h in rollout.hosts],
                )
            )
            ok &= all(h.status == "SUCCEEDED" for h in rollout.hosts)

            console.rule("inspection")
            card = modelcard.load_model_card(model)
            video = work / "validation.avi"
            truth = labelled_video(card, video, "validation")
            console.print(f"video of the {len(truth)} validation images: {video}")
            publisher = TelemetryPublisher(
                config.MqttConfig(url=broker.url, protocol="3.1.1", telemetry_interval_s=1.0),
                "demo-station",
                work / "station-spool.db",
                __version__,
            ).start()
            try:
                summary = run_inspection(
                    str(video),
                    bundle=result.bundle,
                    public_key=public_key,
                    truth=truth,
                    state_dir=work / "inspection",
                    publisher=publisher,
                )
            finally:
                publisher.stop()
            summary.render(console)
            winner = result.report.winner
            offline = (winner.accuracy or {}).get("top1") if winner else None
            if offline is not None and summary.accuracy is not None:
                console.print(
                    f"inspection accuracy {summary.accuracy * 100:.2f}% vs the bundle's offline top-1 "
                    f"{offline * 100:.2f}% ({(summary.accuracy - offline) * 100:+.2f} points)"
                )
            ok &= summary.accuracy is not None and summary.accuracy >= 0.95

            console.rule("edgeds monitor --once")
            monitor = subprocess.run(
                [sys.executable, "-m", "edgeds", "monitor", "--target", str(target_path), "--once", "--wait", "3"],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "COLUMNS": str(console.width)},  # its table fits this console
            )
            console.print(Text(monitor.stdout.rstrip() or monitor.stderr.rstrip()))
            ok &= monitor.returncode == 0
    console.rule("cleaned up: device, agent and broker stopped")
    from .demo_lm import lm_trip

    lm_ok = lm_trip(work, private_key, public_key, console)
    if not lm_ok:
        console.print("[red]the language model stated the facts of too few shifts[/]")
    return ok and lm_ok


def main() -> None:
    import tempfile

    console = Console(highlight=False)
    accuracy = run(console=console)
    card = modelcard.load_model_card(SHIPPED_MODEL)
    floor = (card.reference.fp32_top1 if card.reference else 0.97) - 0.005
    if accuracy < floor:
        print(f"validation accuracy {accuracy:.4f} is below the expected {floor:.4f}", file=sys.stderr)
        sys.exit(1)
    with tempfile.TemporaryDirectory(prefix="edgeds-demo-") as work:
        if not trip(SHIPPED_MODEL, Path(work), console):
            sys.exit(1)
    console.print(f"[bold green]demo complete[/]: validation top-1 {accuracy * 100:.2f}%; the shift assistant answered")


if __name__ == "__main__":
    main()
