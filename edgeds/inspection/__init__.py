"""Factory inspection: camera frames to accept / reject / uncertain decisions on the device.

A package named ``inspection``, not ``inspect``: a module named like the standard library's
:mod:`inspect` invites shadowing mistakes. One module per job: :mod:`.sources` (images,
video, V4L2 camera, RTSP), :mod:`.prep` (frames into reusable input buffers),
:mod:`.decisions` (thresholds, line alarm), :mod:`.ledger` (JSONL ledger, rejected images),
:mod:`.pipeline` (stations on a shared engine, back-pressure), :mod:`.runner` (entry points
for the CLI, the demo and the agent), :mod:`.service` (the agent's stations), :mod:`.station`
(the station of an ``edgeds inspect`` run, and its ground truth), :mod:`.video` (images to a
video file). OpenCV is imported lazily by the modules that need it.
"""

from __future__ import annotations

from .decisions import Decision, DecisionPolicy
from .ledger import Ledger, RejectStore, read_ledger
from .pipeline import FrameQueue, InspectionPipeline, Station
from .runner import InspectionSummary, inspect_source, open_engine, run_inspection, start_stations
from .sources import Frame, FrameSource, open_source
from .video import labelled_video, write_video

__all__ = [
    "Decision",
    "DecisionPolicy",
    "Frame",
    "FrameQueue",
    "FrameSource",
    "InspectionPipeline",
    "InspectionSummary",
    "Ledger",
    "RejectStore",
    "Station",
    "inspect_source",
    "labelled_video",
    "open_engine",
    "open_source",
    "read_ledger",
    "run_inspection",
    "start_stations",
    "write_video",
]
