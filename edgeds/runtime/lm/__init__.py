"""Serving language models on the device: the LM engine (admission, step loop, statistics).

:class:`LMEngine` drives one LM backend (:mod:`edgeds.backends.lm`) with continuous or static
batching as its runtime does it; importing this package imports no LM runtime.
"""

from __future__ import annotations

from .engine import Completion, Event, Generation, LMEngine, SamplingParams, Usage
from .stats import HistogramSnapshot, LMStats

__all__ = ["Completion", "Event", "Generation", "HistogramSnapshot", "LMEngine", "LMStats", "SamplingParams", "Usage"]
