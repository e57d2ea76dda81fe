"""The TensorRT engine build step: TensorRT engines are built on the device that runs them.

A bundle that carries a TensorRT recipe ships the ONNX model; the engine is built (or found in
the cache) for this device's GPU and TensorRT version before ``current`` flips to the release.
"""

from __future__ import annotations

from typing import Any

from ...errors import StepFailed
from ...paths import cache_dir
from .protocol import Emit, quiet
from .store import Store


def build_engine(store: Store, release_id: str, emit: Emit = quiet) -> dict[str, Any]:
    """Build (or find cached) the TensorRT engine for a staged release carrying a recipe.

    Runs before the flip; the engine lands in the same per-device cache ``edgeds engine build``
    uses, keyed by the device fingerprint, so the agent's TensorRT backend finds it.
    """
    from ...bundle import load_bundle
    from ...compile.toolchains import tensorrt

    emit("engine_build", {"release": release_id})
    try:
        with load_bundle(store.releases / release_id, verify=False) as bundle:
            engine, built = tensorrt.ensure_engine(bundle.artifact_path, cache_dir() / "tensorrt", bundle.card)
    except Exception as exc:  # toolchain, CUDA or bundle: any of them fails the step before the flip
        raise StepFailed(f"building the TensorRT engine failed: {exc}") from exc
    emit("engine_ready", {"engine": str(engine), "built": built})
    return {"engine": str(engine), "built": built}
