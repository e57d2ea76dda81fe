"""Open a bundle as a started engine, with its batching overridden by the caller.

This is what ``edgeds serve`` serves: the manifest's batching with any overrides applied and
re-validated, the backend's thread count, who runs the batches (:class:`Execution`), and the
server limits of the profile the bundle was compiled for (:func:`load_served`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config import Batching, ServerLimits, override_error
from .engine import Engine


class Execution(str, Enum):
    """Who runs a served engine's batches.

    ``workers``: the batcher's worker threads (needed for ``preserve_ordering``); ``inline``: the
    server's event loops, one per instance (see :meth:`Engine.start`); ``auto``: inline unless
    the bundle's batching asks for ``preserve_ordering``.
    """

    auto = "auto"
    inline = "inline"
    workers = "workers"


def batching_overrides(
    base: Batching,
    max_batch: int | None = None,
    delay_us: int | None = None,
    queue: int | None = None,
    preferred: Sequence[int] | None = None,
    instances: int | None = None,
) -> Batching:
    """``base`` with every override that is not None applied, validated again as a new Batching.

    ``max_batch`` also drops the buckets and preferred batch sizes above it; ``preferred``
    (batch sizes) then replaces the preferred sizes. ``delay_us`` is ``max_queue_delay_us``,
    ``queue`` is ``max_queue_size``, ``instances`` the number of engine instances. Raises
    :class:`ConfigError` (one line per problem, naming the field) when the result is not a valid
    Batching.
    """
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
        data["preferred_batch_sizes"] = tuple(preferred)
    if instances is not None:
        data["instances"] = instances
    try:
        return Batching.model_validate(data)
    except ValidationError as exc:
        raise override_error(exc, "batching") from exc


@dataclass(frozen=True)
class Served:
    """A started engine and the limits its server should keep (see :func:`load_served`)."""

    engine: Engine
    limits: ServerLimits


def load_served(
    bundle_path: Path,
    key: Path | None = None,
    verify: bool = True,
    threads: int | None = None,
    max_batch: int | None = None,
    delay_us: int | None = None,
    queue: int | None = None,
    preferred: Sequence[int] | None = None,
    instances: int | None = None,
    execution: Execution = Execution.workers,
    limits: Mapping[str, Any] | None = None,
) -> Served:
    """A started engine for the bundle at ``bundle_path`` (directory or .tar), which the caller
    closes, and the server limits of the profile its manifest records with the ``limits`` overrides
    (:class:`~edgeds.config.ServerLimits` field names; None values are ignored) applied.

    The bundle is verified against the public ``key`` when ``verify`` and a key is given (an
    unverified bundle is only read). Batching is the manifest's with :func:`batching_overrides`;
    ``threads`` (None = the backend's default) is split among the instances. Starting opens the
    backend and warms every batch bucket; ``execution`` says who then runs the batches.
    Raises the bundle's errors (:class:`~edgeds.errors.BundleError` and subclasses) and the
    backend's when it cannot open the artifact; :class:`~edgeds.errors.ConfigError` for limits
    that are not valid (checked before the engine starts).
    """
    from ..bundle import load_bundle

    with load_bundle(bundle_path, key, verify=verify and key is not None) as bundle:
        batching = batching_overrides(
            Batching.from_manifest(bundle.manifest.batching), max_batch, delay_us, queue, preferred, instances
        )
        served_limits = ServerLimits.from_profile(bundle.manifest.profile, **dict(limits or {}))
        engine = Engine.from_bundle(bundle, batching=batching, threads=threads)
        if execution is Execution.auto:
            execution = Execution.workers if batching.preserve_ordering else Execution.inline
        return Served(engine.start(inline=execution is Execution.inline), served_limits)
