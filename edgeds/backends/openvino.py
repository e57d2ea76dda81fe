"""OpenVINO backend: runs OpenVINO IR artifacts (conversion and NNCF quantization are in the toolchain)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from .base import (
    Availability,
    Backend,
    BackendOptions,
    IOSpec,
    Opened,
    TensorDict,
    TensorSpec,
    bucket_for,
    copy_inputs,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    pass

_DEVICE = re.compile(r"^(CPU|GPU(\.\d+)?|NPU|AUTO(:[A-Z0-9.,]+)?|(HETERO|MULTI):[A-Z0-9.]+(,[A-Z0-9.]+)*)$")


class OpenVinoOptions(BackendOptions):
    """``options:`` of an ``openvino`` entry in a profile."""

    device: str = Field(default="CPU", description="CPU, GPU, NPU, AUTO, HETERO:GPU,CPU, MULTI:...")
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "THROUGHPUT"
    num_streams: int | None = Field(default=None, ge=1)
    inference_num_threads: int | None = Field(default=None, ge=1)
    cache_compiled_blobs: bool = True
    inference_precision: Literal["auto", "f32", "f16", "bf16"] = Field(
        default="auto", description="INFERENCE_PRECISION_HINT; auto = the device default (bf16 on BF16/AMX CPUs)"
    )

    @field_validator("device")
    @classmethod
    def _device_string(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"not an OpenVINO device string: {value!r} (e.g. CPU, GPU, AUTO, HETERO:GPU,CPU)")
        return value


class OpenVinoBackend(Backend):
    name = "openvino"
    Options = OpenVinoOptions
    precisions = ("fp32", "fp16", "int8")
    install_hint = "pip install 'edgeds[openvino]'"

    def __init__(self, options: OpenVinoOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._buckets: dict[int, _OvBucket] = {}
        self._compiled: dict[int, Any] = {}
        self.optimal_requests = 1
        self._execution_devices: tuple[str, ...] = ()

    @classmethod
    def probe(cls) -> Availability:
        try:
            import openvino as ov
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        try:
            devices = tuple(ov.Core().available_devices)
        except Exception as exc:  # a broken plugin must not break doctor: it is reported unavailable
            log.debug("openvino: listing devices failed", exc_info=True)
            return Availability(cls.name, False, version=ov.get_version(), reason=str(exc), hint=cls.install_hint)
        return Availability(cls.name, True, version=ov.get_version(), devices=devices)

    def open(self, artifact: Path, buckets: Sequence[int] = (1,)) -> IOSpec:
        """Compile one static-shape model per bucket and reuse its infer requests.

        Under the THROUGHPUT hint a bucket of ``b`` samples is split into ``k`` equal slices,
        ``k`` the largest divisor of ``b`` not above the device's OPTIMAL_NUMBER_OF_INFER_REQUESTS;
        each slice has its own reused InferRequest whose input and output tensors share memory
        with a slice of the bucket's arrays (set once), so :meth:`infer` starts the ``k``
        requests and waits: no tensor is allocated or copied by OpenVINO per call. The bucket's
        input arrays are offered through :meth:`staging_inputs`. A model whose batch is fixed at N,
        opened with the one bucket N, is compiled as it is, in one request.
        """
        import numpy as np
        import openvino as ov

        from ..errors import BackendError

        self.close()
        opts: OpenVinoOptions = self.options  # type: ignore[assignment]
        core = ov.Core()
        config: dict[str, object] = {"PERFORMANCE_HINT": opts.performance_hint}
        if opts.num_streams is not None:
            config["NUM_STREAMS"] = opts.num_streams
        if opts.inference_num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = opts.inference_num_threads
        if opts.inference_precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = opts.inference_precision
        if opts.cache_compiled_blobs:
            core.set_property({"CACHE_DIR": str(_ov_cache_dir())})
        try:
            model = core.read_model(str(artifact))
        except Exception as exc:
            raise BackendError(f"openvino cannot read {artifact}: {exc}") from exc

        def spec(port: Any) -> TensorSpec:
            shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
            return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, shape)

        inputs = tuple(spec(p) for p in model.inputs)
        outputs = tuple(spec(p) for p in model.outputs)
        compiled: dict[int, Any] = {}
        # a model with a fixed batch opened at exactly that batch runs as it is: not reshaped, not
        # sliced (its graph may hold the batch size in constants)
        static = inputs[0].shape[0] if inputs and inputs[0].shape[0] >= 1 else None
        as_is = static is not None and set(int(b) for b in buckets) == {static}

        def compile_for(rows: int) -> Any:
            if rows not in compiled:
                if not (as_is and rows == static):
                    model.reshape({s.name: ov.PartialShape([rows, *s.shape[1:]]) for s in inputs})
                try:
                    compiled[rows] = core.compile_model(model, opts.device, config)
                except Exception as exc:
                    raise BackendError(f"openvino cannot compile {artifact} for {opts.device}: {exc}") from exc
            return compiled[rows]

        optimal = 1 if as_is else int(compile_for(1).get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") or 1)
        if opts.performance_hint == "LATENCY":
            optimal = 1
        self._buckets = {}
        for bucket in sorted(set(int(b) for b in buckets)):
            parts = max(k for k in range(1, min(optimal, bucket) + 1) if bucket % k == 0)
            rows = bucket // parts
            cmodel = compile_for(rows)
            arrays_in = {s.name: np.zeros((bucket, *s.shape[1:]), dtype=s.dtype) for s in inputs}
            arrays_out: dict[str, Any] = {}
            requests = []
            for part in range(parts):
                request = cmodel.create_infer_request()
                lo, hi = part * rows, (part + 1) * rows
                for index, s in enumerate(inputs):
                    request.set_input_tensor(index, ov.Tensor(arrays_in[s.name][lo:hi], shared_memory=True))
                for index, port in enumerate(cmodel.outputs):
                    name = outputs[index].name
                    if name not in arrays_out:
                        shape = tuple(port.get_partial_shape().to_shape())
                        arrays_out[name] = np.zeros((bucket, *shape[1:]), dtype=port.get_element_type().to_dtype())
                    request.set_output_tensor(index, ov.Tensor(arrays_out[name][lo:hi], shared_memory=True))
                requests.append(request)
            self._buckets[bucket] = _OvBucket(arrays_in, arrays_out, requests)
        self._compiled = compiled
        self.optimal_requests = optimal
        first = next(iter(compiled.values()))
        try:
            self._execution_devices = tuple(str(d) for d in first.get_property("EXECUTION_DEVICES"))
        except RuntimeError:  # a plugin without the property: the device string is all there is to say
            log.debug("openvino: EXECUTION_DEVICES not readable", exc_info=True)
            self._execution_devices = ()
        return IOSpec(inputs=inputs, outputs=outputs, layout="NCHW", max_batch_size=max(buckets))

    def staging_inputs(self, batch: int) -> dict[str, Any]:
        """The shared-memory input arrays of bucket ``batch``."""
        bucket = self._buckets.get(batch)
        return dict(bucket.inputs) if bucket is not None else {}

    def infer(self, inputs: TensorDict) -> TensorDict:
        from ..errors import InferenceError

        bucket = bucket_for(self._buckets, inputs)
        copy_inputs(bucket.inputs, inputs)
        try:
            if len(bucket.requests) == 1:
                bucket.requests[0].infer()
            else:
                for request in bucket.requests:
                    request.start_async()
                for request in bucket.requests:
                    request.wait()
        except Exception as exc:
            raise InferenceError(f"openvino failed: {exc}") from exc
        return bucket.outputs

    def opened(self) -> Opened:
        """The device string compiled for, with the devices OpenVINO runs it on when they differ
        (``HETERO:GPU,CPU (CPU)``); a fallback when the first device of a ``HETERO``/``AUTO``/``MULTI``
        list runs none of it."""
        if not self._compiled:
            return Opened()
        device: str = self.options.device  # type: ignore[attr-defined]
        ran = ",".join(self._execution_devices)
        fallback = None
        first = device.partition(":")[2].split(",")[0] if ":" in device else None
        if first and self._execution_devices and not any(d.startswith(first) for d in self._execution_devices):
            # HETERO:GPU,CPU compiled, but OpenVINO put every layer on the other devices
            fallback = f"openvino {device} runs on {ran} only: {first} takes no part"
        return Opened(device=device if not ran or ran == device else f"{device} ({ran})", fallback=fallback)

    def close(self) -> None:
        self._buckets = {}
        self._compiled = {}


class _OvBucket:
    """One bucket: its shared-memory input/output arrays and the infer requests bound to slices of them."""

    __slots__ = ("inputs", "outputs", "requests")

    def __init__(self, inputs: dict[str, Any], outputs: dict[str, Any], requests: list[Any]) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.requests = requests


def _ov_cache_dir() -> Path:
    """Where compiled blobs are cached (never inside a bundle, whose file list is signed)."""
    import os

    root = Path(os.environ.get("EDGEDS_CACHE_DIR") or Path.home() / ".cache" / "edgeds")
    path = root / "openvino"
    path.mkdir(parents=True, exist_ok=True)
    return path
