"""The on-device runtime: buffer pool, dynamic batcher, engine and the OIP server.

``Engine`` (backend + pool + batcher + statistics) is the unit that is served and swapped;
``InferenceServer`` exposes engines over the Open Inference Protocol. Importing this package
imports no inference library: backends load theirs in ``Engine.start``.
"""

from __future__ import annotations

from ..errors import QueueFull
from .batcher import BatchQueue, DynamicBatcher, QueueTimeout
from .buffers import BufferPool, OutputSlot, StagingBackend
from .engine import Engine, EngineDraining, EngineStats, InferRequest
from .server import InferenceServer, SwapReport

__all__ = [
    "BatchQueue",
    "BufferPool",
    "DynamicBatcher",
    "Engine",
    "EngineDraining",
    "EngineStats",
    "InferRequest",
    "InferenceServer",
    "OutputSlot",
    "QueueFull",
    "QueueTimeout",
    "StagingBackend",
    "SwapReport",
]
