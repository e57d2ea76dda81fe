"""LiteRT (TensorFlow Lite) backend: the only module that imports ``ai_edge_litert``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from .base import Artifact, Availability, Backend, BackendOptions, IOSpec, Precision, TensorDict

if TYPE_CHECKING:
    from ..config import ModelCard


class LiteRtOptions(BackendOptions):
    """``options:`` of a ``litert`` entry in a profile."""

    delegate: Literal["xnnpack", "nnapi", "qnn", "gpu"] = "xnnpack"
    delegate_library: str | None = Field(default=None, description="shared library for load_delegate")
    delegate_fallback: bool = Field(default=True, description="fall back to XNNPACK when the delegate fails")
    num_threads: int | None = Field(default=None, ge=1)


class LiteRtBackend(Backend):
    name = "litert"
    Options = LiteRtOptions
    precisions: tuple[Precision, ...] = ("fp32", "fp16", "int8")
    install_hint = "pip install 'edgeds[litert]'"

    @classmethod
    def probe(cls) -> Availability:
        try:
            from ai_edge_litert import interpreter  # noqa: F401
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver: str | None = version("ai-edge-litert")
        except PackageNotFoundError:
            ver = None
        return Availability(cls.name, True, version=ver, devices=("CPU (XNNPACK)",))

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
