"""ONNX Runtime backend: the only module that imports ``onnxruntime``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ..errors import BackendError, InferenceError
from .base import Artifact, Availability, Backend, BackendOptions, IOSpec, Precision, TensorDict, TensorSpec

if TYPE_CHECKING:
    from ..config import ModelCard

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OnnxRuntimeOptions(BackendOptions):
    """``options:`` of an ``onnxruntime`` entry in a profile."""

    intra_op_num_threads: int | None = Field(default=None, ge=1, description="None = one per core")
    inter_op_num_threads: int = Field(default=1, ge=1)
    execution_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    allow_spinning: bool = Field(default=False, description="thread spinning burns small CPUs")
    quantization: Literal["static", "dynamic"] = "static"
    per_channel: bool = True


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    Options = OnnxRuntimeOptions
    precisions: tuple[Precision, ...] = ("fp32", "fp16", "int8")
    install_hint = "pip install onnxruntime"

    def __init__(self, options: OnnxRuntimeOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._session: Any = None

    @classmethod
    def probe(cls) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        return Availability(
            cls.name, True, version=ort.__version__, devices=tuple(ort.get_available_providers())
        )

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
        import onnxruntime as ort

        opts: OnnxRuntimeOptions = self.options  # type: ignore[assignment]
        so = ort.SessionOptions()
        if opts.intra_op_num_threads is not None:
            so.intra_op_num_threads = opts.intra_op_num_threads
        so.inter_op_num_threads = opts.inter_op_num_threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.allow_spinning else "0")
        try:
            self._session = ort.InferenceSession(str(artifact), so, providers=list(opts.execution_providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {artifact}: {exc}") from exc

        def spec(arg: Any) -> TensorSpec:
            dims = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
            return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, "float32"), dims)

        return IOSpec(
            inputs=tuple(spec(a) for a in self._session.get_inputs()),
            outputs=tuple(spec(a) for a in self._session.get_outputs()),
        )

    def infer(self, inputs: TensorDict) -> TensorDict:
        if self._session is None:
            raise BackendError("infer() before open()")
        try:
            names = [o.name for o in self._session.get_outputs()]
            results = self._session.run(names, dict(inputs))
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        return {name: np.asarray(value) for name, value in zip(names, results)}

    def close(self) -> None:
        self._session = None
