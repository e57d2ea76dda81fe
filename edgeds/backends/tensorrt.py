"""TensorRT backend: runs engines with ``tensorrt`` and ``cuda`` (cuda-python); engines are built by the toolchain."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .base import Availability, Backend, BackendOptions, IOSpec, TensorDict, TensorSpec, bucket_for, copy_inputs

if TYPE_CHECKING:
    pass


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
    precisions = ("fp32", "fp16", "int8")
    install_hint = "pip install 'edgeds[tensorrt]' (on a device with an NVIDIA GPU and JetPack/CUDA)"

    def __init__(self, options: TensorRtOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._buckets: dict[int, _TrtBucket] = {}
        self._host_ptrs: list[int] = []
        self._device_ptrs: list[int] = []
        self._stream: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._logger: Any = None

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
            return Availability(
                cls.name, False, version=trt.__version__, reason="no CUDA device", hint=cls.install_hint
            )
        return Availability(cls.name, True, version=trt.__version__, devices=tuple(f"cuda:{i}" for i in range(count)))

    def open(self, artifact: Path, buckets: Sequence[int] = (1,)) -> IOSpec:
        """Deserialize the plan; per bucket one execution context (input shapes set once), device
        buffers and pinned host buffers allocated once with their addresses bound, on one stream.

        :meth:`staging_inputs` offers the pinned input arrays, so request rows are written straight
        into page-locked memory; :meth:`infer` is H2D copy -> ``execute_async_v3`` -> D2H copy ->
        stream sync, and returns the pinned output arrays (overwritten by the next call).
        """
        import numpy as np
        import tensorrt as trt

        from ..errors import BackendError

        self.close()
        cudart = _cudart()
        opts: TensorRtOptions = self.options  # type: ignore[assignment]
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if opts.dla_core is not None:
            self._runtime.DLA_core = opts.dla_core
        try:
            engine = self._runtime.deserialize_cuda_engine(Path(artifact).read_bytes())
        except Exception as exc:
            raise BackendError(f"tensorrt cannot deserialize {artifact}: {exc}") from exc
        if engine is None:
            raise BackendError(f"tensorrt cannot deserialize {artifact}: built for another GPU or TensorRT version?")
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        out_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

        def spec(name: str) -> TensorSpec:
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            return TensorSpec(name, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name, (-1, *shape[1:]))

        inputs = tuple(spec(n) for n in in_names)
        outputs = tuple(spec(n) for n in out_names)
        self._stream = _check(cudart.cudaStreamCreate())
        for bucket in sorted(set(int(b) for b in buckets)):
            for name in in_names:
                fixed = int(engine.get_tensor_shape(name)[0])
                if fixed >= 0:
                    low_b = high_b = fixed
                else:
                    low, _, high = engine.get_tensor_profile_shape(name, 0)
                    low_b, high_b = int(low[0]), int(high[0])
                if not low_b <= bucket <= high_b:
                    raise BackendError(
                        f"bucket {bucket} is outside the engine's optimization profile for {name!r} "
                        f"(batch {low_b}..{high_b}): rebuild with a profile covering it"
                    )
            context = engine.create_execution_context()
            host_in: dict[str, Any] = {}
            host_out: dict[str, Any] = {}
            transfers_in: list[tuple[int, int, int]] = []
            transfers_out: list[tuple[int, int, int]] = []
            for spec_in in inputs:
                shape = (bucket, *spec_in.shape[1:])
                if not context.set_input_shape(spec_in.name, shape):
                    raise BackendError(f"tensorrt refused input shape {shape} for {spec_in.name!r}")
                host, device, nbytes = self._allocate(shape, spec_in.dtype)
                context.set_tensor_address(spec_in.name, device)
                host_in[spec_in.name] = host
                transfers_in.append((device, host.ctypes.data, nbytes))
            for spec_out in outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(spec_out.name))
                host, device, nbytes = self._allocate(shape, spec_out.dtype)
                context.set_tensor_address(spec_out.name, device)
                host_out[spec_out.name] = host
                transfers_out.append((host.ctypes.data, device, nbytes))
            self._buckets[bucket] = _TrtBucket(context, host_in, host_out, transfers_in, transfers_out)
        return IOSpec(inputs=inputs, outputs=outputs, layout="NCHW", max_batch_size=max(buckets))

    def _allocate(self, shape: tuple[int, ...], dtype: str) -> tuple[Any, int, int]:
        """Pinned host array + device buffer of ``shape``; both freed by :meth:`close`."""
        import ctypes

        import numpy as np

        cudart = _cudart()
        np_dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = max(1, count * np_dtype.itemsize)
        host_ptr = int(_check(cudart.cudaMallocHost(nbytes)))
        self._host_ptrs.append(host_ptr)
        device_ptr = int(_check(cudart.cudaMalloc(nbytes)))
        self._device_ptrs.append(device_ptr)
        raw = (ctypes.c_byte * nbytes).from_address(host_ptr)
        host = np.frombuffer(memoryview(raw), dtype=np_dtype, count=count).reshape(shape)
        return host, device_ptr, nbytes

    def staging_inputs(self, batch: int) -> dict[str, Any]:
        """The pinned host input arrays of bucket ``batch``."""
        bucket = self._buckets.get(batch)
        return dict(bucket.host_inputs) if bucket is not None else {}

    def infer(self, inputs: TensorDict) -> TensorDict:
        from ..errors import InferenceError

        bucket = bucket_for(self._buckets, inputs)
        cudart = _cudart()
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = self._stream
        copy_inputs(bucket.host_inputs, inputs)
        try:
            for dst, src, nbytes in bucket.transfers_in:
                _check(cudart.cudaMemcpyAsync(dst, src, nbytes, h2d, stream))
            if not bucket.context.execute_async_v3(int(stream)):
                raise InferenceError("tensorrt execute_async_v3 returned false")
            for dst, src, nbytes in bucket.transfers_out:
                _check(cudart.cudaMemcpyAsync(dst, src, nbytes, d2h, stream))
            _check(cudart.cudaStreamSynchronize(stream))
        except InferenceError:
            raise
        except Exception as exc:
            raise InferenceError(f"tensorrt failed: {exc}") from exc
        return bucket.host_outputs

    def close(self) -> None:
        self._buckets = {}
        if self._host_ptrs or self._device_ptrs or self._stream is not None:
            cudart = _cudart()
            if self._stream is not None:
                cudart.cudaStreamSynchronize(self._stream)
                cudart.cudaStreamDestroy(self._stream)
            for ptr in self._device_ptrs:
                cudart.cudaFree(ptr)
            for ptr in self._host_ptrs:
                cudart.cudaFreeHost(ptr)
        self._host_ptrs = []
        self._device_ptrs = []
        self._stream = None
        self._engine = None


class _TrtBucket:
    """One bucket: its execution context, pinned host arrays and (dst, src, bytes) copy lists."""

    __slots__ = ("context", "host_inputs", "host_outputs", "transfers_in", "transfers_out")

    def __init__(
        self,
        context: Any,
        host_inputs: dict[str, Any],
        host_outputs: dict[str, Any],
        transfers_in: list[tuple[int, int, int]],
        transfers_out: list[tuple[int, int, int]],
    ) -> None:
        self.context = context
        self.host_inputs = host_inputs
        self.host_outputs = host_outputs
        self.transfers_in = transfers_in
        self.transfers_out = transfers_out


def _cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def _check(result: Any) -> Any:
    """Unpack cuda-python's ``(error, value...)`` tuples, raising InferenceError on a CUDA error."""
    from ..errors import InferenceError

    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise InferenceError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)
