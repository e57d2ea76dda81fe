"""edgeds: take a trained model to edge devices and keep it running there.

The public API is what ``__all__`` lists; everything else is reachable through the submodules but
may change without notice. The trip in Python::

    import edgeds

    result = edgeds.compile_model("model.onnx", "x86-cpu", key="keys/edgeds.key")
    with edgeds.Bundle.open(result.bundle, public_key="keys/edgeds.pub") as bundle:
        rollout = edgeds.deploy_bundle(bundle, "my-target", options=edgeds.DeployOptions(health_requests=20))
    assert rollout.succeeded, rollout.counts()

    with edgeds.Bundle.open(result.bundle) as bundle:
        engine = edgeds.Engine.from_bundle(bundle).start()
    server = edgeds.InferenceServer(engine, port=8000).start()

A language model (a ``causal-lm`` card) takes the same compile; its bundle opens as an
:class:`LMEngine` (the runtime's own continuous batching behind edgeds' admission) and is
served by :class:`LMServer` (the OpenAI API and KServe's generate extension)::

    engine = edgeds.LMEngine.from_bundle("shift-assistant.bundle").start()
    prompt = engine.chat_prompt([{"role": "user", "content": "..."}])
    print(engine.submit(prompt, edgeds.SamplingParams(max_tokens=64)).result().text)

``import edgeds`` is cheap: each name is imported from its module on first use, so the heavy
libraries behind compile, deploy and the runtime load only when a program touches them.
All errors derive from :class:`EdgedsError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import EdgedsError

if TYPE_CHECKING:
    from .bundle import Bundle
    from .compile import CompileResult, compile_model
    from .config import (
        Profile,
        Target,
        list_profiles,
        list_targets,
        load_profile,
        load_target,
        resolve_target_profile,
    )
    from .deploy.api import deploy_bundle
    from .deploy.host import HostResult
    from .deploy.options import DeployOptions
    from .deploy.rollout import RolloutResult
    from .modelcard import LMCard, ModelCard, load_card, load_model_card
    from .runtime.engine import Engine
    from .runtime.lm.engine import LMEngine, SamplingParams
    from .runtime.lm.server import LMServer
    from .runtime.server import InferenceServer

# public name -> module that defines it (imported on first access)
_LAZY = {
    "ModelCard": ".modelcard",
    "LMCard": ".modelcard",
    "load_card": ".modelcard",
    "Profile": ".config",
    "Target": ".config",
    "list_profiles": ".config",
    "list_targets": ".config",
    "load_model_card": ".modelcard",
    "load_profile": ".config",
    "load_target": ".config",
    "resolve_target_profile": ".config",
    "compile_model": ".compile",
    "CompileResult": ".compile",
    "Bundle": ".bundle",
    "deploy_bundle": ".deploy.api",
    "DeployOptions": ".deploy.options",
    "HostResult": ".deploy.host",
    "RolloutResult": ".deploy.rollout",
    "Engine": ".runtime.engine",
    "InferenceServer": ".runtime.server",
    "LMEngine": ".runtime.lm.engine",
    "SamplingParams": ".runtime.lm.engine",
    "LMServer": ".runtime.lm.server",
}

__all__ = [
    "Bundle",
    "CompileResult",
    "DeployOptions",
    "EdgedsError",
    "Engine",
    "HostResult",
    "InferenceServer",
    "LMCard",
    "LMEngine",
    "LMServer",
    "ModelCard",
    "Profile",
    "RolloutResult",
    "SamplingParams",
    "Target",
    "__version__",
    "compile_model",
    "deploy_bundle",
    "list_profiles",
    "list_targets",
    "load_card",
    "load_model_card",
    "load_profile",
    "load_target",
    "resolve_target_profile",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeds' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__"})
