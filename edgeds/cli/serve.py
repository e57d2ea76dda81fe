"""``edgeds serve BUNDLE``: serve a bundle on HTTP, the protocol picked by its task: an image model
over the Open Inference Protocol (KServe v2), a language model over the OpenAI API and the KServe
generate extension."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from ._output import JSON_OPTION, console, console_err, emit

if TYPE_CHECKING:
    import ssl

    from ..runtime.auth import ApiKeys


def serve(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0 = any free port).")] = 8000,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="ed25519 public key: verify the bundle first.")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the backend (default: its own).")] = None,
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
    max_body_mb: Annotated[
        float | None, typer.Option(help="Largest request body (MiB; default the profile's, 64); larger gets 413.")
    ] = None,
    max_json_mb: Annotated[
        float | None, typer.Option(help="Largest JSON body or binary request's JSON header (MiB; default 8).")
    ] = None,
    header_timeout: Annotated[
        float | None, typer.Option(help="Seconds a request head may take from its first byte (default 10).")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Seconds an idle keep-alive connection stays open (default 60).")
    ] = None,
    body_timeout: Annotated[
        float | None, typer.Option(help="Seconds of grace for a body, then it must keep --body-min-rate (default 30).")
    ] = None,
    body_min_rate: Annotated[
        float | None, typer.Option(help="Slowest body upload allowed, KiB/s (default 256).")
    ] = None,
    max_connections: Annotated[
        int | None, typer.Option(help="Open connections served (default 256; fewer under a low fd limit).")
    ] = None,
    reserve_connections: Annotated[
        int | None, typer.Option(help="Connections past the cap kept for health and metrics (default 4).")
    ] = None,
    execution: Annotated[
        Literal["auto", "inline", "workers"],
        typer.Option(
            help="Who runs the batches: 'inline' = one event loop per instance receives, batches, runs and "
            "answers its connections' requests on one thread; 'workers' = loop threads hand requests to "
            "the batcher's worker threads (needed for preserve_ordering); 'auto' = inline unless the "
            "bundle asks for preserve_ordering.",
        ),
    ] = "auto",
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="Callers must send 'Authorization: Bearer KEY' (repeatable: several keys, for rotation). "
            "Also from --api-key-file and $EDGEDS_API_KEY (comma-separated). Health stays open.",
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option("--api-key-file", help="File of API keys, one a line ('#' comments).")
    ] = None,
    metrics_public: Annotated[
        bool, typer.Option("--metrics-public", help="Serve /metrics without a key (keyed by default).")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (chain): serve HTTPS only.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="Language models: serve only this LM runtime's artifact (openvino-genai, onnxruntime-genai; "
            "default: the bundle's first artifact that opens here)."
        ),
    ] = None,
    budget_mb: Annotated[
        float | None,
        typer.Option(
            "--budget-mb",
            min=1,
            help="Language models: memory for weights + KV cache + overhead, MiB (default: the bundle's profile).",
        ),
    ] = None,
    max_num_seqs: Annotated[
        int | None,
        typer.Option(
            "--max-num-seqs", min=1, help="Language models: sequences at once, a cap (default: the bundle's profile)."
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Language models: answer length when a request names no max_tokens "
            "(default: max_new_tokens in the card's generation block).",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve BUNDLE: an image model gets health, metadata, config, stats, infer (JSON and binary
    tensors) and /metrics; a language model gets the OpenAI API (/v1/chat/completions,
    /v1/completions, /v1/models), the generate extension (/v2/models/M/generate, generate_stream),
    health, metadata and /metrics under vLLM's names, with the settings its bundle records
    (the LM flags override them). A runtime's bare model directory is served too (a developer
    path: 1024 MiB, 8 sequences, 256-token answers unless the flags say otherwise).

    Runs until SIGINT/SIGTERM. Without --key the bundle is not verified (use it on devices).
    """
    from ..errors import EdgedsError
    from ..runtime.auth import load_api_keys, server_tls_context
    from ..runtime.loading import Execution, load_served
    from ..runtime.server import InferenceServer

    if (tls_cert is None) != (tls_key is None):
        raise EdgedsError("--tls-cert and --tls-key go together")
    keys = load_api_keys(api_key or (), api_key_file)
    tls = server_tls_context(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None

    limits = {
        "max_body_mb": max_body_mb,
        "max_json_mb": max_json_mb,
        "header_timeout_s": header_timeout,
        "idle_timeout_s": idle_timeout,
        "body_timeout_s": body_timeout,
        "body_min_rate_kib_s": body_min_rate,
        "max_connections": max_connections,
        "reserve_connections": reserve_connections,
    }
    from ..runtime.lm.loading import is_language_model

    if is_language_model(bundle):
        lm = {
            "public_key": key,
            "runtime": runtime,
            "threads": threads,
            "max_queue": queue,
            "budget_mb": budget_mb,
            "max_num_seqs": max_num_seqs,
        }
        _serve_lm(bundle, host, port, lm, max_tokens, limits, keys, metrics_public, tls, as_json)
        return
    if runtime is not None or budget_mb is not None or max_num_seqs is not None or max_tokens is not None:
        raise EdgedsError(
            f"{bundle} is not a language model: --runtime, --budget-mb, --max-num-seqs and "
            "--max-tokens are for language models"
        )
    sizes = None if preferred is None else tuple(int(p) for p in preferred.split(",") if p.strip())
    with console_err.status("loading the bundle and warming every batch bucket..."):
        served = load_served(
            bundle,
            key,
            key is not None,
            threads,
            max_batch,
            delay_us,
            queue,
            sizes,
            instances,
            Execution(execution),
            limits,
        )
    engine = served.engine
    server = InferenceServer(
        engine,
        host=host,
        port=port,
        limits=served.limits,
        api_keys=keys,
        metrics_public=metrics_public,
        tls=tls,
    ).start()
    info = {
        "url": server.url,
        "model": engine.name,
        "version": engine.version,
        "backend": engine.backend.name,
        "buckets": list(engine.batching.bucket_sizes()),
        "instances": engine.batching.instances,
        "execution": "inline" if engine.inline else "workers",
        "first_inference_s": round(engine.first_inference_s or 0.0, 3),
        "api_keys": len(keys),
        "tls": tls is not None,
    }
    emit(
        info,
        as_json,
        lambda: console.print(
            f"serving [bold]{engine.name}[/] v{engine.version} ({engine.backend.name}) at {server.url}/v2 "
            f"- buckets {info['buckets']} - {info['instances']} instance(s), {info['execution']} - "
            f"{f'{len(keys)} API key(s)' if keys else 'no API key'} - Ctrl-C to stop"
        ),
    )
    sys.stdout.flush()
    try:
        server.serve_forever(close_engines=True)  # drained while the event loops still run
    finally:
        server.stop(close_engines=True)  # when serve_forever did not get that far


def _serve_lm(
    bundle: Path,
    host: str,
    port: int,
    lm: dict[str, Any],
    max_tokens: int | None,
    limits: dict[str, Any],
    keys: ApiKeys,
    metrics_public: bool,
    tls: ssl.SSLContext | None,
    as_json: bool,
) -> None:
    from ..config import ServerLimits
    from ..runtime.lm.loading import open_engine
    from ..runtime.lm.server import LMServer

    with console_err.status("opening the language model..."):
        engine = open_engine(bundle, **lm)
    try:
        server = LMServer(
            engine,
            host=host,
            port=port,
            limits=ServerLimits.from_profile(None, **limits),
            api_keys=keys,
            metrics_public=metrics_public,
            tls=tls,
            default_max_tokens=max_tokens,
        ).start()
    except BaseException:
        engine.close()
        raise
    info = {
        "url": server.url,
        "model": engine.name,
        "version": engine.version,
        "release": engine.release,
        "runtime": engine.runtime,
        "artifact": engine.artifact,
        "skipped": list(engine.skipped),
        "task": "causal-lm",
        "context_length": engine.spec.context_length,
        "max_num_seqs": engine.spec.max_num_seqs,
        "max_queue": engine.max_queue,
        "max_tokens": max_tokens if max_tokens is not None else engine.generation.max_tokens,
        "kv_plan": engine.plan.describe(),
        "api_keys": len(keys),
        "tls": tls is not None,
    }
    if not as_json:
        for line in engine.skipped:
            console_err.print(f"[yellow]not served:[/] {line}")
    emit(
        info,
        as_json,
        lambda: console.print(
            f"serving [bold]{engine.name}[/] v{engine.version} ({engine.runtime}) at {server.url}/v1 "
            f"(OpenAI API) and {server.url}/v2 (generate) - context {info['context_length']}, "
            f"{info['max_num_seqs']} sequence(s) at once - "
            f"{f'{len(keys)} API key(s)' if keys else 'no API key'} - Ctrl-C to stop"
        ),
    )
    sys.stdout.flush()
    try:
        server.serve_forever(close_engines=True)
    finally:
        server.stop(close_engines=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
