"""The TensorRT engine build step: TensorRT engines are built on the device that runs them.

A bundle's TensorRT artifact is a build recipe with the ONNX model; before ``current`` flips to
the release, the engine is built (or found in the cache) for this device's GPU and TensorRT
version, in the store's ``engines/`` (keyed by the device fingerprint), where the agent opens it.

A device without TensorRT (or without a GPU) skips the build and says why: the agent then opens
the bundle's next artifact and reports the fallback, or, for an artifact the profile requires
(``require: true``), fails to load, and the deploy rolls back. A build that fails on a device with
TensorRT fails the step before the flip for a required artifact; otherwise the runtime falls back.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable, CompileError, StepFailed, one_line
from ...runtime.selection import BUILD_FAILED
from .protocol import Emit, quiet
from .store import Store

if TYPE_CHECKING:
    from ...compile.toolchains.tensorrt import DeviceFacts, EngineBuilder

log = logging.getLogger(__name__)


def build_engine(
    store: Store,
    release_id: str,
    emit: Emit = quiet,
    *,
    facts: DeviceFacts | None = None,
    builder: EngineBuilder | None = None,
) -> dict[str, Any]:
    """Build (or find cached) the TensorRT engine of each TensorRT artifact of a staged release.

    Returns ``{"engines": [{artifact, engine, built} | {artifact, skipped: reason}]}``. Raises
    :class:`StepFailed` when a required artifact's engine build fails here. ``facts`` (this device's
    GPU and TensorRT, detected by default) and ``builder`` (TensorRT's) are for running the path
    logic where there is no GPU.
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
                device = facts or tensorrt.DeviceFacts.detect()
            except BackendUnavailable as exc:
                # the agent's load decides: it falls back, or fails (and the deploy rolls back) when required
                reason = f"tensorrt unavailable: {one_line(exc.reason)}"
                emit("engine_skipped", {"artifact": index, "reason": reason})
                results.append({"artifact": index, "skipped": reason})
                continue
            recipe = bundle.artifact_dir(index)
            try:
                engine, built = tensorrt.ensure_engine(
                    recipe, store.engines, bundle.card, facts=device, builder=builder
                )
            except (CompileError, OSError) as exc:
                reason = f"building the TensorRT engine failed: {one_line(str(exc))}"
                marker = tensorrt.recipe_engine_paths(recipe, store.engines, device).engine.parent / BUILD_FAILED
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(reason + "\n")  # the agent reads it instead of building again
                if entry.require:
                    raise StepFailed(reason) from exc
                log.warning(
                    "artifact %d: %s; the runtime falls back to the next artifact", index, reason, exc_info=True
                )
                emit("engine_build_failed", {"artifact": index, "reason": reason})
                results.append({"artifact": index, "skipped": reason})
                continue
            (engine.parent / BUILD_FAILED).unlink(missing_ok=True)  # an earlier failure no longer holds
            emit("engine_ready", {"artifact": index, "engine": str(engine), "built": built})
            results.append({"artifact": index, "engine": str(engine), "built": built})
    return {"engines": results}
