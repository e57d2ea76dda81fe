"""Triton-style views of served engines: model metadata, config and statistics as JSON, and the
Prometheus text of ``/metrics``.

Functions of the served :class:`~edgeds.runtime.engine.Engine` objects' state (what they serve, how
they batch, their counters; ``/metrics`` adds the server's failed answers by status code, the
process's RSS and uptime): no HTTP, no routing. A model's ``version`` is its card's version (what
clients address); ``/metrics`` names each model's release in ``edgeds_model_info``.
:mod:`edgeds.runtime.server` answers its GET endpoints with them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .oip import oip_datatype

if TYPE_CHECKING:
    from .engine import Engine


def model_metadata(engine: Engine) -> dict[str, Any]:
    """``GET /v2/models/{m}``: name, version, platform and the tensors (batch dim -1) of a started engine,
    and ``opened`` (:meth:`edgeds.runtime.selection.Selection.as_dict`): the artifact this device opened."""
    io = engine.io
    assert io is not None

    def tensor(spec: Any) -> dict[str, Any]:
        shape = [-1, *[d if d >= 0 else -1 for d in spec.shape[1:]]]
        return {"name": spec.name, "datatype": oip_datatype(spec.dtype), "shape": shape}

    metadata: dict[str, Any] = {
        "name": engine.name,
        "versions": [engine.version],
        "platform": f"edgeds_{engine.backend.name}",
        "inputs": [tensor(s) for s in io.inputs],
        "outputs": [tensor(s) for s in io.outputs],
    }
    if engine.selection is not None:  # an extension: what this device opened, and any fallback with its reason
        metadata["opened"] = engine.selection.as_dict()
    return metadata


def model_config(engine: Engine) -> dict[str, Any]:
    """``GET /v2/models/{m}/config``: Triton's model configuration (dynamic batching, instance group)."""
    io = engine.io
    assert io is not None
    b = engine.batching

    def tensor(spec: Any) -> dict[str, Any]:
        return {
            "name": spec.name,
            "data_type": f"TYPE_{oip_datatype(spec.dtype)}",
            "dims": [d if d >= 0 else -1 for d in spec.shape[1:]],
        }

    dynamic: dict[str, Any] = {
        "preferred_batch_size": list(b.preferred_batch_sizes),
        "max_queue_delay_microseconds": b.max_queue_delay_us,
        "preserve_ordering": b.preserve_ordering,
        "priority_levels": b.priority_levels,
        "default_priority_level": b.priority_levels,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": b.default_timeout_us or 0,
            "allow_timeout_override": True,
            "max_queue_size": b.max_queue_size,
        },
    }
    return {
        "name": engine.name,
        "platform": f"edgeds_{engine.backend.name}",
        "backend": engine.backend.name,
        "version_policy": {"specific": {"versions": [engine.version]}},
        "max_batch_size": b.max_batch_size,
        "input": [tensor(s) for s in io.inputs],
        "output": [tensor(s) for s in io.outputs],
        "dynamic_batching": dynamic,
        "instance_group": [
            {
                "name": engine.name,
                "kind": "KIND_GPU" if engine.backend.name == "tensorrt" else "KIND_CPU",
                "count": b.instances,
            }
        ],
        "parameters": {"buckets": {"string_value": ",".join(str(s) for s in b.bucket_sizes())}},
    }


def model_stats(engine: Engine) -> dict[str, Any]:
    """One entry of ``model_stats``: Triton's cumulative counters (durations in ns and µs) and the queue depth."""
    s = engine.stats()

    def dur(count: int, us: float) -> dict[str, Any]:
        return {"count": count, "ns": int(us * 1000), "us": round(us, 3)}

    return {
        "name": engine.name,
        "version": engine.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": dur(s.success, s.queue_us + s.compute_input_us + s.compute_infer_us + s.compute_output_us),
            "fail": dur(s.failure, 0.0),
            "queue": dur(s.success, s.queue_us),
            "compute_input": dur(s.success, s.compute_input_us),
            "compute_infer": dur(s.success, s.compute_infer_us),
            "compute_output": dur(s.success, s.compute_output_us),
        },
        "batch_stats": [{"batch_size": size, "count": count} for size, count in sorted(s.batch_sizes.items())],
        "instance_executions": {str(i): n for i, n in sorted(s.instance_executions.items())},
        "rejected": {"queue_full": s.rejected_queue_full, "timeout": s.rejected_timeout},
        "queue_depth": engine.queue_depth(),
    }


def prometheus_text(engines: Iterable[Engine], started_at: float, failures: Mapping[int, int]) -> str:
    """The Prometheus text exposition of ``engines``' counters, the server's ``failures`` (answers of
    status 400 or more, by status code, whether or not they reached a model), the process RSS and
    the uptime since ``started_at`` (``time.time()`` seconds)."""
    lines: list[str] = []

    def family(metric: str, kind: str, help_text: str, values: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.extend(f"{metric}{{{labels}}} {value:g}" for labels, value in values)

    stats = [(f'model="{e.name}",version="{e.version}"', e, e.stats()) for e in engines]
    family("nv_inference_request_success", "counter", "Successful requests", [(lb, s.success) for lb, _, s in stats])
    family("nv_inference_request_failure", "counter", "Failed requests", [(lb, s.failure) for lb, _, s in stats])
    family("nv_inference_count", "counter", "Inferences (samples)", [(lb, s.inference_count) for lb, _, s in stats])
    family(
        "nv_inference_exec_count",
        "counter",
        "Executions (batches)",
        [(lb, s.execution_count) for lb, _, s in stats],
    )
    for key, what in (
        ("queue_us", "queue"),
        ("compute_input_us", "compute_input"),
        ("compute_infer_us", "compute_infer"),
        ("compute_output_us", "compute_output"),
    ):
        family(
            f"nv_inference_{what}_duration_us",
            "counter",
            f"Cumulative {what} time in microseconds",
            [(lb, getattr(s, key)) for lb, _, s in stats],
        )
    family(
        "edgeds_model_info",
        "gauge",
        "1 per served model: its card version and its release (the bundle's monotonic version)",
        [(f'{lb},release="{e.release}"', 1.0) for lb, e, _ in stats],
    )
    family("edgeds_queue_depth", "gauge", "Requests waiting", [(lb, e.queue_depth()) for lb, e, _ in stats])
    family(
        "edgeds_model_ready",
        "gauge",
        "1 when the model takes requests",
        [(lb, float(e.ready)) for lb, e, _ in stats],
    )
    lines.append("# HELP edgeds_batch_size Samples per execution")
    lines.append("# TYPE edgeds_batch_size histogram")
    for lb, e, s in stats:
        cumulative = 0
        total = 0
        for size in e.batching.bucket_sizes():
            cumulative = sum(c for b, c in s.batch_sizes.items() if b <= size)
            lines.append(f'edgeds_batch_size_bucket{{{lb},le="{size}"}} {cumulative}')
        total = sum(b * c for b, c in s.batch_sizes.items())
        lines.append(f'edgeds_batch_size_bucket{{{lb},le="+Inf"}} {s.execution_count}')
        lines.append(f"edgeds_batch_size_sum{{{lb}}} {total}")
        lines.append(f"edgeds_batch_size_count{{{lb}}} {s.execution_count}")
    family(
        "edgeds_http_request_failures_total",
        "counter",
        "Requests answered 4xx or 5xx by the server, framing errors included",
        [(f'class="{code // 100}xx",code="{code}"', n) for code, n in failures.items()],
    )
    family("edgeds_process_resident_memory_bytes", "gauge", "RSS of the server process", [("", float(rss_bytes()))])
    family("edgeds_uptime_seconds", "gauge", "Seconds since the server started", [("", time.time() - started_at)])
    return "\n".join(lines).replace("{}", "") + "\n"


def rss_bytes() -> int:
    """Resident memory of this process in bytes (0 where ``/proc`` cannot tell)."""
    try:
        with open(f"/proc/{os.getpid()}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


__all__ = ["model_config", "model_metadata", "model_stats", "prometheus_text"]
