"""edgeds: take a trained model to edge devices and keep it running there.

The public API is what ``__all__`` lists; submodules (``edgeds.compile``, ``edgeds.runtime``,
``edgeds.deploy``, ``edgeds.telemetry``) carry the rest and import their heavy libraries only
when used.
"""

from __future__ import annotations

from ._version import __version__
from .config import (
    ModelCard,
    Profile,
    Target,
    list_profiles,
    list_targets,
    load_model_card,
    load_profile,
    load_target,
    resolve_target_profile,
)
from .errors import EdgedsError

__all__ = [
    "EdgedsError",
    "ModelCard",
    "Profile",
    "Target",
    "__version__",
    "list_profiles",
    "list_targets",
    "load_model_card",
    "load_profile",
    "load_target",
    "resolve_target_profile",
]
