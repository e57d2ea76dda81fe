"""LoadGen-style benchmarks of an engine in-process or a server over HTTP (see :mod:`.loops`)."""

from __future__ import annotations

from .loops import *  # noqa: F403
from .loops import __all__ as __all__
