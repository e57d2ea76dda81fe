"""ONNX Runtime backend: runs ``.onnx`` artifacts (quantization is in the onnxruntime toolchain)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from ..errors import BackendError, InferenceError
from .base import (
    IN_PLACE_ALIGNMENT,
    Availability,
    Backend,
    BackendOptions,
    IOSpec,
    Opened,
    TensorDict,
    TensorSpec,
    copy_inputs,
)

log = logging.getLogger(__name__)

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
    cpu_mem_arena: bool = Field(default=True, description="ONNX Runtime's CPU arena (off: steadier RSS, slower)")
    quantization: Literal["static", "dynamic"] = "static"
    per_channel: bool = True
    reduce_range: bool | None = Field(
        default=None,
        description=(
            "INT8 weights in 7 bits. x86 CPUs without VNNI (AVX2 and early AVX-512: AMD Zen 1-3, Intel before "
            "Ice Lake / Alder Lake) multiply U8S8 with VPMADDUBSW, whose 16-bit sums saturate on full-range "
            "weights; None = on for x86_64 profiles, off for aarch64"
        ),
    )


@dataclass(frozen=True)
class _Bound:
    """One bucket's IOBinding, its staging inputs and outputs (owned by the backend), and the address
    each input is bound to now (the staging array's, or a caller's array bound in place)."""

    binding: Any
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    addresses: dict[str, int]
    staged_at: dict[str, int]  # each staging input's own address
    raw: Any  # the C binding behind ``binding`` (None if this onnxruntime has none; see _Direct)


@dataclass(frozen=True)
class _Direct:
    """onnxruntime's C session and CPU device behind its Python wrappers, for the per-request calls.

    Since 1.2x the wrappers' ``run_with_iobinding`` and ``IOBinding.bind_input`` do per-call Python
    work for WebGPU graph capture and device-vendor aliasing (``OrtDevice.make``) that the CPU
    provider never needs; calling the C objects directly skips that work on every request (about
    40 us of server CPU per request at batch 1 with onnxruntime 1.32). Used only with the CPU
    provider alone, and only where the private attributes exist; otherwise the public calls.
    """

    session: Any
    cpu: Any

    @classmethod
    def resolve(cls, ort: Any, session: Any, providers: Sequence[str]) -> _Direct | None:
        if set(providers) != {"CPUExecutionProvider"}:
            return None
        try:
            c_session = session._sess
            cpu = ort.OrtDevice.make("cpu", 0)._get_c_device()
            c_binding = session.io_binding()._iobinding
        except Exception:  # another onnxruntime layout: the public wrappers are always right
            log.debug("onnxruntime internals not as expected: using the public io_binding path", exc_info=True)
            return None
        if not callable(getattr(c_session, "run_with_iobinding", None)) or not callable(
            getattr(c_binding, "bind_input", None)
        ):
            return None
        return cls(c_session, cpu)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    Options = OnnxRuntimeOptions
    precisions = ("fp32", "fp16", "int8")
    install_hint = "pip install onnxruntime"

    def __init__(self, options: OnnxRuntimeOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._session: Any = None
        self._output_names: list[str] = []
        self._run_options: Any = None
        self._bound: dict[int, _Bound | None] = {}
        self._direct: _Direct | None = None
        self._providers: tuple[str, ...] = ()

    @classmethod
    def probe(cls) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        return Availability(cls.name, True, version=ort.__version__, devices=tuple(ort.get_available_providers()))

    def open(self, artifact: Path, buckets: Sequence[int] = (1,)) -> IOSpec:
        """Create the session and, per bucket, an IOBinding over preallocated input/output arrays.

        Inputs and outputs are bound once; :meth:`infer` on a bucket's own staging arrays
        (:meth:`staging_inputs`) copies nothing and returns the bucket's output arrays, which the
        next ``infer`` on that bucket overwrites.
        """
        import onnxruntime as ort

        self.close()
        opts: OnnxRuntimeOptions = self.options  # type: ignore[assignment]
        so = ort.SessionOptions()
        if opts.intra_op_num_threads is not None:
            so.intra_op_num_threads = opts.intra_op_num_threads
        so.inter_op_num_threads = opts.inter_op_num_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_cpu_mem_arena = opts.cpu_mem_arena
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opts.graph_optimization_level]
        spin = "1" if opts.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        unknown = [p for p in opts.execution_providers if p not in ort.get_all_providers()]
        if unknown:
            raise BackendError(
                f"onnxruntime has no execution provider {', '.join(unknown)} "
                f"(it knows {', '.join(ort.get_all_providers())}): fix execution_providers in the profile"
            )
        try:
            session = ort.InferenceSession(str(artifact), so, providers=list(opts.execution_providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {artifact}: {exc}") from exc

        def spec(arg: Any) -> TensorSpec:
            dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
            return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, "float32"), dims)

        inputs = tuple(spec(a) for a in session.get_inputs())
        outputs = tuple(spec(a) for a in session.get_outputs())
        self._session = session
        self._providers = tuple(session.get_providers())
        self._output_names = [o.name for o in outputs]
        self._run_options = ort.RunOptions()
        if set(opts.execution_providers) == {"CPUExecutionProvider"}:
            # onnxruntime's Python run_with_iobinding looks up "gpu_graph_id" on every call, and an
            # unset key costs a C++ exception (~25 us here). -1 = "no graph capture", which is what
            # the CPU provider does anyway; once set, the lookup is free.
            self._run_options.add_run_config_entry("gpu_graph_id", "-1")
        self._direct = _Direct.resolve(ort, session, opts.execution_providers)
        self._bound = {}
        for bucket in sorted(set(int(b) for b in buckets)):
            self._bound[bucket] = self._bind(session, bucket, inputs, outputs)
        return IOSpec(inputs=inputs, outputs=outputs, layout="NCHW", max_batch_size=max(buckets))

    @staticmethod
    def _bind(session: Any, bucket: int, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> _Bound | None:
        """Preallocate and bind one bucket; None when a non-batch dim is unknown (plain run)."""

        def shaped(spec: TensorSpec) -> tuple[int, ...] | None:
            fixed, rest = spec.shape[:1], spec.shape[1:]
            if any(d < 0 for d in rest) or (fixed and fixed[0] not in (-1, bucket)):
                return None
            return (bucket, *rest)

        shapes_in = [shaped(s) for s in inputs]
        shapes_out = [shaped(s) for s in outputs]
        if any(s is None for s in shapes_in) or any(s is None for s in shapes_out):
            return None
        binding = session.io_binding()
        in_arrays: dict[str, np.ndarray] = {}
        out_arrays: dict[str, np.ndarray] = {}
        addresses: dict[str, int] = {}
        for spec_in, shape in zip(inputs, shapes_in, strict=True):
            assert shape is not None
            array = np.zeros(shape, dtype=np.dtype(spec_in.dtype))
            binding.bind_input(spec_in.name, "cpu", 0, array.dtype, list(shape), array.ctypes.data)
            in_arrays[spec_in.name] = array
            addresses[spec_in.name] = array.ctypes.data
        for spec_out, shape in zip(outputs, shapes_out, strict=True):
            assert shape is not None
            array = np.zeros(shape, dtype=np.dtype(spec_out.dtype))
            binding.bind_output(spec_out.name, "cpu", 0, array.dtype, list(shape), array.ctypes.data)
            out_arrays[spec_out.name] = array
        raw = getattr(binding, "_iobinding", None)
        return _Bound(binding, in_arrays, out_arrays, addresses, dict(addresses), raw)

    def staging_inputs(self, batch: int) -> dict[str, np.ndarray]:
        """The input arrays bound for bucket ``batch`` (see :class:`edgeds.runtime.buffers.StagingBackend`)."""
        bound = self._bound.get(batch)
        return dict(bound.inputs) if bound is not None else {}

    def infer(self, inputs: TensorDict) -> TensorDict:
        session = self._session
        if session is None:
            raise BackendError("infer() before open()")
        batch = next(iter(inputs.values())).shape[0] if inputs else 0
        bound = self._bound.get(batch)
        try:
            if bound is None:
                results = session.run(self._output_names, dict(inputs), self._run_options)
                return {name: np.asarray(value) for name, value in zip(self._output_names, results, strict=True)}
            direct = self._direct  # resolve() checked that bindings have their C object
            self._bind_inputs(bound, inputs, direct)
            if direct is not None:
                direct.session.run_with_iobinding(bound.raw, self._run_options)
            else:
                session.run_with_iobinding(bound.binding, self._run_options)
        except BackendError:
            raise
        except Exception as exc:
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        return bound.outputs

    @staticmethod
    def _bind_inputs(bound: _Bound, inputs: TensorDict, direct: _Direct | None = None) -> None:
        """Point the bucket's binding at each input: a caller's C-contiguous, 64-byte aligned array of
        the bucket's shape in place (no copy; it must stay untouched until ``infer`` returns), any
        other array copied into the staging input. Every input must be given: a binding left alone
        could still point at a previous caller's array."""
        if len(inputs) != len(bound.inputs) or any(name not in inputs for name in bound.inputs):
            raise BackendError(f"infer() needs exactly the inputs {sorted(bound.inputs)}, got {sorted(inputs)}")
        for name, array in inputs.items():
            staged = bound.inputs.get(name)
            if staged is None:
                raise BackendError(f"unknown input {name!r}")
            target, address = staged, bound.staged_at[name]
            # ndarray.ctypes.data, not __array_interface__: numpy 2.4 keeps ~10 bytes per distinct
            # address asked through the latter (1.9 MB after 30,000 requests in a server)
            if array is not staged:
                own = array.ctypes.data
                if (
                    own % IN_PLACE_ALIGNMENT == 0
                    and array.flags.c_contiguous
                    and array.dtype == staged.dtype
                    and array.shape == staged.shape
                ):
                    target, address = array, own
                else:
                    copy_inputs(bound.inputs, {name: array})
            if bound.addresses[name] != address:
                if direct is not None:
                    bound.raw.bind_input(name, direct.cpu, target.dtype, list(target.shape), address)
                else:
                    bound.binding.bind_input(name, "cpu", 0, target.dtype, list(target.shape), address)
                bound.addresses[name] = address

    def opened(self) -> Opened:
        """The execution provider the session runs on first; a fallback when onnxruntime dropped an
        asked provider it has no build for here (it then runs on the CPU provider)."""
        if not self._providers:
            return Opened()
        asked = self.options.execution_providers  # type: ignore[attr-defined]
        missing = [p for p in asked if p not in self._providers]
        fallback = None
        if missing:
            fallback = f"onnxruntime {', '.join(missing)} unavailable here; running on {self._providers[0]}"
        return Opened(device=self._providers[0], fallback=fallback)

    def close(self) -> None:
        self._bound = {}
        self._direct = None
        self._session = None
