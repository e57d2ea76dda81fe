"""LM backend registry: runtime names -> implementing classes, imported only when asked for.

Like :mod:`edgeds.backends`, the registry holds import strings, so listing or validating LM
runtimes never imports one. Runtime names are the ones a profile's ``llm.runtimes`` use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ...errors import BackendUnavailable, ConfigError
from ..base import Availability, BackendOptions
from .base import FinishReason, GenParams, LMBackend, LMHandle, LMMetrics, LMSpec
from .kv import Architecture, KVPlan, KVPrecision

_REGISTRY: dict[str, str] = {
    "openvino-genai": "edgeds.backends.lm.openvino_genai:OpenVinoGenAIBackend",
    "onnxruntime-genai": "edgeds.backends.lm.onnxruntime_genai:OnnxRuntimeGenAIBackend",
}


def lm_names() -> list[str]:
    """Every registered LM runtime name, in registry order."""
    return list(_REGISTRY)


def lm_backend_class(name: str) -> type[LMBackend]:
    """The class registered under ``name`` (its module imports no runtime)."""
    try:
        target = _REGISTRY[name]
    except KeyError as exc:
        raise ConfigError.single(
            None, None, "llm.runtimes", f"unknown LM runtime {name!r} (known: {', '.join(lm_names())})"
        ) from exc
    module_name, _, class_name = target.partition(":")
    cls: type[LMBackend] = getattr(importlib.import_module(module_name), class_name)
    return cls


def lm_probe(name: str) -> Availability:
    """Probe one LM runtime; never raises for a missing library."""
    return lm_backend_class(name).probe()


def lm_create(name: str, options: BackendOptions | Mapping[str, Any] | None = None) -> LMBackend:
    """A constructed (not opened) LM backend. :class:`BackendUnavailable` if it cannot run here."""
    cls = lm_backend_class(name)
    availability = cls.probe()
    if not availability.available:
        raise BackendUnavailable(name, availability.reason or "not importable", availability.hint or cls.install_hint)
    return cls(options)


__all__ = [
    "Architecture",
    "Availability",
    "FinishReason",
    "GenParams",
    "KVPlan",
    "KVPrecision",
    "LMBackend",
    "LMHandle",
    "LMMetrics",
    "LMSpec",
    "lm_backend_class",
    "lm_create",
    "lm_names",
    "lm_probe",
]
