"""TensorRT backend: the only module that imports ``tensorrt`` and ``cuda`` (cuda-python)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from .base import Artifact, Availability, Backend, BackendOptions, IOSpec, Precision, TensorDict

if TYPE_CHECKING:
    from ..config import ModelCard


class TensorRtOptions(BackendOptions):
    """``options:`` of a ``tensorrt`` entry in a profile."""

    dla_core: int | None = Field(default=None, ge=0, description="DLA core, None = GPU only")
    gpu_fallback: bool = Field(default=True, description="layers DLA cannot run go to the GPU")
    workspace_mb: int = Field(default=1024, ge=16, description="builder memory pool limit")
    builder_optimization_level: int = Field(default=3, ge=0, le=5)
    calibrator: Literal["entropy2", "minmax"] = "entropy2"
    version_compatible: bool = False
    hardware_compatibility: Literal["none", "ampere_plus"] = "none"


class TensorRtBackend(Backend):
    name = "tensorrt"
    Options = TensorRtOptions
    precisions: tuple[Precision, ...] = ("fp32", "fp16", "int8")
    install_hint = "pip install 'edgeds[tensorrt]' (on a device with an NVIDIA GPU and JetPack/CUDA)"

    @classmethod
    def probe(cls) -> Availability:
        try:
            import tensorrt as trt
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        try:
            from cuda.bindings import runtime as cudart
        except ImportError as exc:
            return Availability(cls.name, False, version=trt.__version__, reason=str(exc), hint=cls.install_hint)
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count == 0:
            return Availability(cls.name, False, version=trt.__version__, reason="no CUDA device", hint=cls.install_hint)
        return Availability(cls.name, True, version=trt.__version__, devices=tuple(f"cuda:{i}" for i in range(count)))

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
