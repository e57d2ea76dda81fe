"""``edgeds serve BUNDLE``: serve a bundle over the Open Inference Protocol (KServe v2) on HTTP."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ._output import JSON_OPTION, console, console_err, emit


class Execution(str, Enum):
    """Who runs a served engine's batches (``--execution``)."""

    auto = "auto"
    inline = "inline"
    workers = "workers"


def batching_overrides(
    base: Any,
    max_batch: int | None,
    delay_us: int | None,
    queue: int | None,
    preferred: str | None,
    instances: int | None = None,
) -> Any:
    """``base`` (a Batching) with the CLI's overrides applied (re-validated)."""
    from ..config import Batching

    data = base.model_dump()
    if max_batch is not None:
        data["max_batch_size"] = max_batch
        data["buckets"] = tuple(b for b in data.get("buckets", ()) if b <= max_batch)
        data["preferred_batch_sizes"] = tuple(b for b in data.get("preferred_batch_sizes", ()) if b <= max_batch)
    if delay_us is not None:
        data["max_queue_delay_us"] = delay_us
    if queue is not None:
        data["max_queue_size"] = queue
    if preferred is not None:
        data["preferred_batch_sizes"] = tuple(int(p) for p in preferred.split(",") if p.strip())
    if instances is not None:
        data["instances"] = instances
    return Batching.model_validate(data)


def load_engine(
    bundle_path: Path,
    key: Path | None,
    verify: bool,
    threads: int | None,
    max_batch: int | None = None,
    delay_us: int | None = None,
    queue: int | None = None,
    preferred: str | None = None,
    instances: int | None = None,
    execution: Execution = Execution.workers,
) -> Any:
    """Load (and verify) a bundle and return a started engine for it.

    ``execution``: workers (the batcher's threads run the batches), inline (the server's event
    loops do, one per instance; see ``Engine.start``) or auto (inline unless the bundle asks for
    ``preserve_ordering``, which needs the workers)."""
    from ..bundle import load_bundle
    from ..config import Batching
    from ..runtime.engine import Engine, thread_options

    with load_bundle(bundle_path, key, verify=verify and key is not None) as bundle:
        raw = {k: v for k, v in dict(bundle.manifest.batching or {}).items() if k in Batching.model_fields}
        batching = batching_overrides(Batching.model_validate(raw), max_batch, delay_us, queue, preferred, instances)
        engine = Engine.from_bundle(bundle, batching=batching, options=thread_options(bundle.manifest.backend, threads))
        if execution is Execution.auto:
            execution = Execution.workers if batching.preserve_ordering else Execution.inline
        return engine.start(inline=execution is Execution.inline)


def serve(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).")] = 8000,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="ed25519 public key: verify the bundle first.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the backend (default: its own).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Override max_batch_size.")] = None,
    delay_us: Annotated[int | None, typer.Option(help="Override max_queue_delay_us.")] = None,
    queue: Annotated[int | None, typer.Option(help="Override max_queue_size (503 beyond).")] = None,
    preferred: Annotated[str | None, typer.Option(help="Override preferred batch sizes, e.g. 4,8.")] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Concurrent executions (Triton's instance_group count); --threads is split among them. "
            "On a small CPU, one instance per core avoids intra-op stalls.",
        ),
    ] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (MiB); larger gets 400.")] = 64.0,
    execution: Annotated[
        Execution,
        typer.Option(
            help="Who runs the batches: 'inline' = one event loop per instance receives, batches, runs and "
            "answers its connections' requests on one thread; 'workers' = loop threads hand requests to "
            "the batcher's worker threads (needed for preserve_ordering); 'auto' = inline unless the "
            "bundle asks for preserve_ordering.",
        ),
    ] = Execution.auto,
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve BUNDLE: health, metadata, config, stats, infer (JSON and binary tensors) and /metrics.

    Runs until SIGINT/SIGTERM. Without --key the bundle is not verified (use it on devices).
    """
    from ..runtime.server import InferenceServer

    with console_err.status("loading the bundle and warming every batch bucket..."):
        engine = load_engine(
            bundle, key, key is not None, threads, max_batch, delay_us, queue, preferred, instances, execution
        )
    server = InferenceServer(engine, host=host, port=port, max_body_bytes=int(max_body_mb * 2**20)).start()
    info = {
        "url": server.url,
        "model": engine.name,
        "version": engine.version,
        "backend": engine.backend.name,
        "buckets": list(engine.batching.bucket_sizes()),
        "instances": engine.batching.instances,
        "execution": "inline" if engine.inline else "workers",
        "first_inference_s": round(engine.first_inference_s or 0.0, 3),
    }
    emit(
        info,
        as_json,
        lambda: console.print(
            f"serving [bold]{engine.name}[/] v{engine.version} ({engine.backend.name}) at {server.url}/v2 "
            f"- buckets {info['buckets']} - {info['instances']} instance(s), {info['execution']} - Ctrl-C to stop"
        ),
    )
    import sys

    sys.stdout.flush()
    try:
        server.serve_forever(close_engines=True)  # drained while the event loops still run
    finally:
        server.stop(close_engines=True)  # when serve_forever did not get that far


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
