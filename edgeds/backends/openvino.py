"""OpenVINO backend: the only module that imports ``openvino`` and ``nncf``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from .base import Artifact, Availability, Backend, BackendOptions, IOSpec, Precision, TensorDict

if TYPE_CHECKING:
    from ..config import ModelCard

_DEVICE = re.compile(r"^(CPU|GPU(\.\d+)?|NPU|AUTO(:[A-Z0-9.,]+)?|(HETERO|MULTI):[A-Z0-9.]+(,[A-Z0-9.]+)*)$")


class OpenVinoOptions(BackendOptions):
    """``options:`` of an ``openvino`` entry in a profile."""

    device: str = Field(default="CPU", description="CPU, GPU, NPU, AUTO, HETERO:GPU,CPU, MULTI:...")
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "THROUGHPUT"
    num_streams: int | None = Field(default=None, ge=1)
    inference_num_threads: int | None = Field(default=None, ge=1)
    cache_compiled_blobs: bool = True

    @field_validator("device")
    @classmethod
    def _device_string(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"not an OpenVINO device string: {value!r} (e.g. CPU, GPU, AUTO, HETERO:GPU,CPU)")
        return value


class OpenVinoBackend(Backend):
    name = "openvino"
    Options = OpenVinoOptions
    precisions: tuple[Precision, ...] = ("fp32", "fp16", "int8")
    install_hint = "pip install 'edgeds[openvino]'"

    @classmethod
    def probe(cls) -> Availability:
        try:
            import openvino as ov
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        try:
            devices = tuple(ov.Core().available_devices)
        except Exception as exc:  # a broken plugin must not break doctor
            return Availability(cls.name, False, version=ov.get_version(), reason=str(exc), hint=cls.install_hint)
        return Availability(cls.name, True, version=ov.get_version(), devices=devices)

    def compile(
        self,
        model: Path,
        card: ModelCard,
        calib: Iterable[TensorDict],
        out: Path,
        precision: Precision = "fp32",
    ) -> Artifact:
        raise NotImplementedError("compile lands with the compile issue")

    def open(self, artifact: Path, buckets: Sequence[int] = (1,)) -> IOSpec:
        raise NotImplementedError("runtime lands with the runtime issue")

    def infer(self, inputs: TensorDict) -> TensorDict:
        raise NotImplementedError("runtime lands with the runtime issue")

    def close(self) -> None:
        return None
