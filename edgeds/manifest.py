"""The bundle manifest (``manifest.json``): its schema and the canonical bytes written."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN_INPUTS = "golden/inputs.npy"
GOLDEN_OUTPUTS = "golden/outputs.npz"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    name: str
    version: str


class FileEntry(_Frozen):
    """One file of the bundle: POSIX path relative to the bundle root, sha256 hex, size in bytes."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TensorInfo(_Frozen):
    """An input or output; ``-1`` marks a variable dimension (batch first)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


class IOInfo(_Frozen):
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


class Requirements(_Frozen):
    """What a device must offer to install the bundle."""

    arch: str
    backends: tuple[str, ...]
    min_memory_mb: int = Field(ge=0)
    min_disk_mb: int = Field(ge=0)
    max_bundle_bytes: int | None = Field(default=None, ge=1)


class GoldenInfo(_Frozen):
    """The on-device conformance check: outputs must match within atol/rtol and min_cosine."""

    inputs: str = GOLDEN_INPUTS
    outputs: str = GOLDEN_OUTPUTS
    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)
    min_cosine: float = Field(ge=0, le=1)


class AccuracyInfo(_Frozen):
    """Gate figures of the shipped artifact vs the FP32 reference (top-1 as fractions, drop in points)."""

    reference_top1: float | None = None
    top1: float | None = None
    top1_drop: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    max_abs_error: float | None = None


class Manifest(_Frozen):
    """``manifest.json``. ``version`` is monotonic per model name: devices refuse a lower one."""

    schema_version: Literal[1] = 1
    model: ModelRef
    version: int = Field(ge=0)
    created_at: str
    expires_at: str | None = Field(default=None, description="ISO 8601 UTC; devices refuse the bundle after it")
    backend: str
    precision: Literal["fp32", "fp16", "int8"]
    backend_options: dict[str, Any] = Field(default_factory=dict)
    device: str | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    artifact: str
    recipe: dict[str, Any] | None = None
    profile: dict[str, Any] = Field(default_factory=dict)
    batching: dict[str, Any] = Field(default_factory=dict)
    io: IOInfo
    labels: tuple[str, ...] = ()
    tools: dict[str, str] = Field(default_factory=dict)
    files: tuple[FileEntry, ...] = ()
    requirements: Requirements
    golden: GoldenInfo
    accuracy: AccuracyInfo = AccuracyInfo()

    def to_json_bytes(self) -> bytes:
        """The canonical bytes written to ``manifest.json`` (sorted keys, 2-space indent, LF)."""
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
