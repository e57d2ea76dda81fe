"""What `edgeds bench` runs: benchmark a served URL or a bundle with the scenarios of this package.

:func:`bench_bundle` opens the bundle's engine (and, for the floor, one bare backend per engine
instance), :func:`bench_url` asks a running server for the model's input and batching; both run
:func:`edgeds.bench.run_benchmark` on one sample and add the environment and configuration to
its report. Every resource opened here is closed before they return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import bench as lib
from ..power import PowerSource


def _no_progress(name: str) -> None:
    """The default ``progress`` callback: ignore the scenario names."""


def served_models(url: str) -> list[str]:
    """The names of the models the server at ``url`` (``http://host:port``) serves, in its order."""
    return [m["name"] for m in lib.http_json(f"{url.rstrip('/')}/v2/models/stats")["model_stats"]]


def bench_url(
    url: str,
    model: str,
    *,
    scenarios: Sequence[str] = lib.SCENARIOS,
    duration_s: float = 3.0,
    concurrency: Sequence[int] = (1, 2, 4, 8, 16),
    p99_bound_ms: float = 50.0,
    progress: Callable[[str], None] = _no_progress,
) -> dict[str, Any]:
    """Run ``scenarios`` against ``model`` on the server at ``url``; the JSON-able report.

    The sample is one seeded random tensor per input, shaped and typed like it (from the model's
    OIP metadata); ``max_batch`` comes from the model's config (8 when it has none). The
    report's ``config`` holds the URL, the model and the server's ``dynamic_batching``.
    ``progress(scenario)`` is called as each scenario starts. ``duration_s`` is per measured run.
    """
    from ..runtime.oip import OIP_TO_NUMPY

    url = url.rstrip("/")
    meta = lib.http_json(f"{url}/v2/models/{model}")
    config = lib.http_json(f"{url}/v2/models/{model}/config")
    rng = np.random.default_rng(0)
    samples = {
        spec["name"]: rng.random((1, *spec["shape"][1:])).astype(OIP_TO_NUMPY[spec["datatype"]])
        for spec in meta["inputs"]
    }
    first = meta["inputs"][0]["name"]
    report = lib.run_benchmark(
        url=url,
        model=model,
        sample=samples.pop(first),
        input_name=first,
        extra=samples,
        scenarios=scenarios,
        duration_s=duration_s,
        concurrency=concurrency,
        p99_bound_ms=p99_bound_ms,
        max_batch=int(config.get("max_batch_size", 8)),
        progress=progress,
    )
    report["environment"] = lib.environment()
    report["config"] = {"url": url, "model": model, "batching": config.get("dynamic_batching")}
    return report


def bench_bundle(
    bundle: Path,
    *,
    scenarios: Sequence[str] = lib.SCENARIOS,
    duration_s: float = 3.0,
    concurrency: Sequence[int] = (1, 2, 4, 8, 16),
    p99_bound_ms: float = 50.0,
    threads: int | None = None,
    instances: int | None = None,
    progress: Callable[[str], None] = _no_progress,
    power: tuple[PowerSource | None, str | None] | None = None,
) -> dict[str, Any]:
    """Run ``scenarios`` in-process against an engine for ``bundle`` (not verified); the report.

    The engine uses the manifest's batching (``instances`` overrides its instance count) and
    backend options, with ``threads`` CPU threads (None = the backend's default) split among the
    instances. The sample is the first golden input. With ``floor`` among the scenarios, one bare
    backend per engine instance (its share of the threads, buckets 1..max_batch) measures the
    engine floor. The report adds ``first_inference_s``, ``config`` and ``environment``.
    ``power`` is handed to :func:`~edgeds.bench.run_benchmark` (default: this machine's source).
    """
    from .. import backends
    from ..bundle import load_bundle
    from ..config import Batching
    from ..runtime.engine import Engine

    with load_bundle(bundle, verify=False) as loaded:
        manifest = loaded.manifest
        batching = Batching.from_manifest(manifest.batching)
        if instances is not None:
            batching = batching.model_copy(update={"instances": instances})
        engine = Engine.from_bundle(loaded, batching=batching, threads=threads)
        with engine:
            assert engine.io is not None and engine.selection is not None
            inputs, _ = loaded.golden(engine.selection.index)  # in the opened artifact's layout
            golden_extra = loaded.golden_extra_inputs()  # a multi-input model's other inputs
            extra = {name: np.ascontiguousarray(rows[:1]) for name, rows in golden_extra.items()}
            spec = next((s for s in engine.io.inputs if s.name not in golden_extra), None)
            if spec is not None:
                sample = np.ascontiguousarray(inputs[:1].astype(spec.dtype))
                input_name = spec.name
            else:  # a generic model: every input is a tensor input
                input_name = next(iter(extra))
                sample = extra.pop(input_name)
            max_batch = engine.batching.max_batch_size
            floor_backends: list[Any] = []
            try:
                if "floor" in scenarios:  # the engine's instances, each with its share of the threads
                    for instance in engine.backends:
                        floor_backends.append(backends.create(instance.name, instance.options))
                        floor_backends[-1].open(engine.artifact, list(range(1, max_batch + 1)))
                report = lib.run_benchmark(
                    engine=engine,
                    sample=sample,
                    input_name=input_name,
                    extra=extra,
                    scenarios=scenarios,
                    duration_s=duration_s,
                    concurrency=concurrency,
                    p99_bound_ms=p99_bound_ms,
                    floor_backends=floor_backends,
                    max_batch=max_batch,
                    progress=progress,
                    power=power,
                )
            finally:
                for backend in floor_backends:
                    backend.close()
            report["first_inference_s"] = round(engine.first_inference_s or 0.0, 4)
            assert engine.selection is not None
            options = dict(engine.selection.options)
            report["config"] = {
                "bundle": str(bundle),
                "backend": engine.selection.runtime,
                "precision": engine.selection.precision,
                "opened": engine.selection.as_dict(),
                "backend_options": options,
                "batching": engine.batching.model_dump(mode="json"),
            }
        report["environment"] = lib.environment(engine.artifact, {"backend_options": options})
    return report
