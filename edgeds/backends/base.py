"""The backend contract: every inference library behind the same small interface.

Backends run models; toolchains (:mod:`edgeds.compile.toolchains`) build them, as Polygraphy
separates loaders from runners, so nothing here imports a compile-time library.

Lifecycle: ``Backend(options)`` is free (touches no library, no accelerator). ``open`` loads a
compiled artifact and allocates what running needs (sessions, infer requests, interpreters,
buffers per batch bucket); ``infer`` runs one batch; ``close`` releases everything and is
idempotent. The context manager calls ``close``.

Buffer ownership: arrays passed to ``infer`` are only read during the call. Arrays returned by
``infer`` may alias buffers the backend owns and are valid only until the next ``infer`` or
``close``: copy them if you keep them. Input validation, batching, padding to buckets and
timing live in :mod:`edgeds.runtime`, not here.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
TensorDict = Mapping[str, np.ndarray]
_Bucket = TypeVar("_Bucket")


def bucket_for(buckets: Mapping[int, _Bucket], inputs: TensorDict) -> _Bucket:
    """The opened bucket for the batch size of ``inputs`` (what every backend's ``infer`` starts with).

    Raises :class:`~edgeds.errors.BackendError` before ``open()`` or for a batch size not opened.
    """
    from ..errors import BackendError

    if not buckets:
        raise BackendError("infer() before open()")
    batch = next(iter(inputs.values())).shape[0] if inputs else 0
    bucket = buckets.get(batch)
    if bucket is None:
        raise BackendError(f"batch {batch} is not an opened bucket {sorted(buckets)}")
    return bucket


# Bytes: how a caller's input must be aligned for a backend to read it in place (what onnxruntime's
# own CPU allocator gives); the server aims incoming binary tensors at it.
IN_PLACE_ALIGNMENT = 64


def copy_inputs(targets: Mapping[str, np.ndarray], inputs: TensorDict) -> None:
    """Copy each input into its preallocated staging array (nothing to do when the caller already
    wrote there, e.g. the engine's pooled buffers). BackendError for an unknown input name."""
    from ..errors import BackendError

    for name, array in inputs.items():
        target = targets.get(name)
        if target is None:
            raise BackendError(f"unknown input {name!r}")
        if array is not target:
            np.copyto(target, array, casting="no")


class BackendOptions(BaseModel):
    """Base of each backend's options schema (the ``options:`` of a profile's backend entry)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``shape`` uses -1 for variable dims (batch first)."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class IOSpec:
    """What an opened artifact takes and returns. ``layout`` is the input layout (NCHW/NHWC)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    layout: str = "NCHW"
    max_batch_size: int | None = None


@dataclass(frozen=True)
class Artifact:
    """A compiled model on disk. ``path`` is the file ``open`` takes; ``files`` all it needs."""

    backend: str
    precision: Precision
    path: Path
    files: tuple[Path, ...]
    layout: str = "NCHW"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Availability:
    """Result of probing a backend on this machine."""

    name: str
    available: bool
    version: str | None = None
    reason: str | None = None
    hint: str | None = None
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Opened:
    """What an opened backend actually runs on this machine (reported in status and telemetry).

    ``device``: the runtime's device string as opened (OpenVINO's ``CPU``; ``cuda:0``);
    ``delegate``: the LiteRT delegate in use (``xnnpack``, ``qnn``, ``nnapi``, ``gpu``);
    ``engine``: the TensorRT engine fingerprint (hex); ``fallback``: why what opened is not what the
    options asked for (e.g. ``qnn delegate failed: ...; running on xnnpack``), None when it is.
    """

    device: str | None = None
    delegate: str | None = None
    engine: str | None = None
    fallback: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The fields that are set, by name."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Backend(abc.ABC):
    """One inference library. See the module docstring for the lifecycle and buffer contract."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]]
    precisions: ClassVar[tuple[Precision, ...]] = ("fp32",)
    install_hint: ClassVar[str] = ""

    def __init__(self, options: BackendOptions | Mapping[str, Any] | None = None) -> None:
        if options is None:
            options = self.Options()
        elif not isinstance(options, BackendOptions):
            options = self.Options.model_validate(dict(options))
        self.options = options

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> Availability:
        """Whether the library imports here, its version and the devices it sees."""

    @abc.abstractmethod
    def open(self, artifact: Path, buckets: Sequence[int] = (1,)) -> IOSpec:
        """Load ``artifact``, allocate for each batch size in ``buckets``."""

    @abc.abstractmethod
    def infer(self, inputs: TensorDict) -> TensorDict:
        """Run one batch. Outputs may alias backend-owned buffers (see module docstring)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything ``open`` allocated. Idempotent."""

    def opened(self) -> Opened:
        """What the last :meth:`open` actually opened (device, delegate, engine, fallback reason).

        Backends that resolve something on the device override this; the default says nothing."""
        return Opened()

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
