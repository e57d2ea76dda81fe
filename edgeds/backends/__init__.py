"""Backend registry: profile names -> implementing classes, imported only when asked for.

The registry holds import strings, not classes, so that listing or validating backends never
imports an optional heavy library. :func:`probe` says whether one is usable here.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import BackendUnavailable, ConfigError
from .base import Availability, Backend, BackendOptions, Opened

_REGISTRY: dict[str, str] = {
    "onnxruntime": "edgeds.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgeds.backends.openvino:OpenVinoBackend",
    "litert": "edgeds.backends.litert:LiteRtBackend",
    "tensorrt": "edgeds.backends.tensorrt:TensorRtBackend",
}


def names() -> list[str]:
    """Every registered backend name, in registry order."""
    return list(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The class registered under ``name`` (its module imports no heavy library)."""
    try:
        target = _REGISTRY[name]
    except KeyError as exc:
        raise ConfigError.single(
            None, None, "backend", f"unknown backend {name!r} (known: {', '.join(names())})"
        ) from exc
    module_name, _, class_name = target.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls


def options_schema(name: str) -> type[BackendOptions]:
    """The pydantic schema of ``name``'s ``options:`` block."""
    return backend_class(name).Options


def probe(name: str) -> Availability:
    """Probe one backend; never raises for a missing library."""
    return backend_class(name).probe()


def create(name: str, options: BackendOptions | dict[str, Any] | None = None) -> Backend:
    """A constructed (not opened) backend. Raises :class:`BackendUnavailable` if it cannot run here."""
    cls = backend_class(name)
    availability = cls.probe()
    if not availability.available:
        raise BackendUnavailable(name, availability.reason or "not importable", availability.hint or cls.install_hint)
    return cls(options)


__all__ = [
    "Availability",
    "Backend",
    "BackendOptions",
    "Opened",
    "backend_class",
    "create",
    "names",
    "options_schema",
    "probe",
]
