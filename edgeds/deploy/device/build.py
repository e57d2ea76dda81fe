"""The TensorRT engine build step: TensorRT engines are built on the device that runs them.

A bundle's TensorRT artifact is a build recipe with the ONNX model; before ``current`` flips to
the release, the engine is built (or found in the cache) for this device's GPU and TensorRT
version, in the cache the runtime opens it from
(:func:`edgeds.compile.toolchains.tensorrt.default_cache_root`, keyed by the device fingerprint).

A device without TensorRT (or without a GPU) skips the build and says why: the agent then opens
the bundle's next artifact and reports the fallback, or, for an artifact the profile requires
(``require: true``), fails to load, and the deploy rolls back. A build that fails on a device with
TensorRT fails the step before the flip for a required artifact; otherwise the runtime falls back.
"""

from __future__ import annotations

import logging
from typing import Any

from ...errors import BackendUnavailable, CompileError, StepFailed, one_line
from .protocol import Emit, quiet
from .store import Store

log = logging.getLogger(__name__)


def build_engine(store: Store, release_id: str, emit: Emit = quiet) -> dict[str, Any]:
    """Build (or find cached) the TensorRT engine of each TensorRT artifact of a staged release.

    Returns ``{"engines": [{artifact, engine, built} | {artifact, skipped: reason}]}``. Raises
    :class:`StepFailed` when a required artifact's engine build fails here.
    """
    from ...bundle import load_bundle
    from ...compile.toolchains import tensorrt

    results: list[dict[str, Any]] = []
    with load_bundle(store.releases / release_id, verify=False) as bundle:
        for index, entry in enumerate(bundle.manifest.artifacts):
            if entry.runtime != "tensorrt":
                continue
            emit("engine_build", {"release": release_id, "artifact": index})
            try:
                facts = tensorrt.DeviceFacts.detect()
            except BackendUnavailable as exc:
                # the agent's load decides: it falls back, or fails (and the deploy rolls back) when required
                reason = f"tensorrt unavailable: {one_line(exc.reason)}"
                emit("engine_skipped", {"artifact": index, "reason": reason})
                results.append({"artifact": index, "skipped": reason})
                continue
            try:
                engine, built = tensorrt.ensure_engine(
                    bundle.artifact_dir(index), tensorrt.default_cache_root(), bundle.card, facts=facts
                )
            except (CompileError, OSError) as exc:
                reason = f"building the TensorRT engine failed: {one_line(str(exc))}"
                if entry.require:
                    raise StepFailed(reason) from exc
                log.warning(
                    "artifact %d: %s; the runtime falls back to the next artifact", index, reason, exc_info=True
                )
                emit("engine_build_failed", {"artifact": index, "reason": reason})
                results.append({"artifact": index, "skipped": reason})
                continue
            emit("engine_ready", {"artifact": index, "engine": str(engine), "built": built})
            results.append({"artifact": index, "engine": str(engine), "built": built})
    return {"engines": results}
