"""LiteRT (TensorFlow Lite) backend: runs ``.tflite`` artifacts with ``ai_edge_litert`` (its runtime import).

The delegate is resolved at :meth:`LiteRtBackend.open`: ``xnnpack`` is LiteRT's CPU default; ``qnn``,
``nnapi`` and ``gpu`` load an external delegate library with its options
(:mod:`edgeds.backends.litert_delegates`). When the delegate cannot be loaded or applied, the
backend runs on XNNPACK if ``delegate_fallback`` is on (a warning, and :meth:`LiteRtBackend.opened`
says why) and raises :class:`~edgeds.errors.BackendError` with the reason if it is off.

Full-integer models keep float32 at the interface (:mod:`edgeds.backends.litert_io`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import BackendError
from .base import Availability, Backend, BackendOptions, IOSpec, Opened, TensorDict, TensorSpec, bucket_for
from .litert_delegates import NnapiDelegateOptions, QnnDelegateOptions
from .litert_io import Dequantizer, Quantizer, TensorQuantization, check_agrees, quantization_of

log = logging.getLogger(__name__)


class LiteRtOptions(BackendOptions):
    """``options:`` of a ``litert`` entry in a profile."""

    delegate: Literal["xnnpack", "nnapi", "qnn", "gpu"] = "xnnpack"
    delegate_library: str | None = Field(default=None, description="shared library for load_delegate")
    delegate_fallback: bool = Field(default=True, description="fall back to XNNPACK when the delegate fails")
    num_threads: int | None = Field(default=None, ge=1)
    qnn: QnnDelegateOptions | None = Field(
        default=None, description="QNN delegate options (delegate: qnn)", exclude_if=lambda v: v is None
    )
    nnapi: NnapiDelegateOptions | None = Field(
        default=None, description="NNAPI delegate options (delegate: nnapi)", exclude_if=lambda v: v is None
    )
    io_quantization: dict[str, TensorQuantization] | None = Field(
        default=None,
        description="the manifest's integer I/O parameters {tensor: {dtype, scale, zero_point}}; "
        "checked against the model at open",
        exclude_if=lambda v: v is None,
    )

    @model_validator(mode="after")
    def _delegate_options_fit_the_delegate(self) -> LiteRtOptions:
        for name in ("qnn", "nnapi"):
            if getattr(self, name) is not None and self.delegate != name:
                raise ValueError(f"{name}: options of the {name} delegate, but delegate is {self.delegate}")
        return self

    def delegate_options(self) -> dict[str, str]:
        """The key/value strings the delegate library is loaded with ({} for xnnpack and gpu)."""
        if self.delegate == "qnn":
            return (self.qnn or QnnDelegateOptions()).strings()
        if self.delegate == "nnapi" and self.nnapi is not None:
            return self.nnapi.strings()
        return {}


class _DelegateFailed(BackendError):
    """The configured delegate could not be loaded or applied (``reason`` is kept whole)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LiteRtBackend(Backend):
    name = "litert"
    Options = LiteRtOptions
    precisions = ("fp32", "fp16", "int8")
    install_hint = "pip install 'edgeds[litert]'"

    def __init__(self, options: LiteRtOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._buckets: dict[int, _LiteRtBucket] = {}
        self._opened = Opened()
        self._quantization: dict[str, TensorQuantization] = {}

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

    def open(self, artifact: Path, buckets: Sequence[int] = (1,)) -> IOSpec:
        """One interpreter per bucket, its inputs resized to the bucket and tensors allocated once.

        The delegate is resolved on the first interpreter (see the module docstring); the other
        buckets use what it resolved to. :meth:`infer` writes each input through a transient
        zero-copy view (``interpreter.tensor(i)()``) that is dropped before ``invoke``, then copies
        the outputs into buffers this backend owns (LiteRT forbids holding views across ``invoke``).
        Integer inputs/outputs are quantized/dequantized there; the IOSpec says float32 for them.
        """
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        self.close()
        opts: LiteRtOptions = self.options  # type: ignore[assignment]
        probe = self._first_interpreter(Interpreter, artifact, opts)
        use_delegate = self._opened.delegate != "xnnpack"
        in_details = probe.get_input_details()
        out_details = probe.get_output_details()
        quant = {d["name"]: q for d in (*in_details, *out_details) if (q := quantization_of(d)) is not None}
        if opts.io_quantization is not None:
            check_agrees(quant, opts.io_quantization, str(artifact))
        self._quantization = quant

        def signature(detail: Any) -> tuple[int, ...]:
            sig = detail.get("shape_signature")
            dims = sig if sig is not None and len(sig) else detail["shape"]
            return (-1, *(int(d) for d in dims[1:]))

        def spec(detail: Any) -> TensorSpec:
            dtype = "float32" if detail["name"] in quant else np.dtype(detail["dtype"]).name
            return TensorSpec(detail["name"], dtype, signature(detail))

        inputs = tuple(spec(d) for d in in_details)
        outputs = tuple(spec(d) for d in out_details)
        self._buckets = {}
        for bucket in sorted(set(int(b) for b in buckets)):
            interp = probe if bucket == int(in_details[0]["shape"][0]) else None
            interp = interp or self._interpreter(Interpreter, artifact, opts, use_delegate)
            try:
                for detail, tspec in zip(in_details, inputs, strict=True):
                    interp.resize_tensor_input(detail["index"], [bucket, *tspec.shape[1:]], strict=False)
                interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise BackendError(f"litert cannot resize {artifact} to batch {bucket}: {exc}") from exc
            outs = {}
            dequant = {}
            for detail in interp.get_output_details():
                shape = tuple(detail["shape"])
                q = quant.get(detail["name"])
                outs[detail["name"]] = np.zeros(shape, dtype=np.float32 if q else detail["dtype"])
                if q is not None:
                    dequant[detail["name"]] = Dequantizer(q)
            quantizers = {
                d["name"]: Quantizer(quant[d["name"]], (bucket, *(int(x) for x in d["shape"][1:])))
                for d in in_details
                if d["name"] in quant
            }
            self._buckets[bucket] = _LiteRtBucket(
                interp,
                {d["name"]: d["index"] for d in in_details},
                {d["name"]: d["index"] for d in interp.get_output_details()},
                outs,
                quantizers,
                dequant,
            )
        layout = "NHWC" if inputs and len(inputs[0].shape) == 4 and inputs[0].shape[-1] in (1, 3) else "NCHW"
        return IOSpec(inputs=inputs, outputs=outputs, layout=layout, max_batch_size=max(buckets))

    def opened(self) -> Opened:
        """The delegate the last :meth:`open` runs on and, after a fallback, why (whole)."""
        return self._opened

    def quantization(self) -> dict[str, dict[str, Any]]:
        """``{tensor name: {dtype, scale, zero_point}}`` of the opened model's integer inputs/outputs
        ({} for a float model): what a manifest's ``io_quantization`` records."""
        return {name: q.model_dump() for name, q in self._quantization.items()}

    def _first_interpreter(self, interpreter_cls: Any, artifact: Path, opts: LiteRtOptions) -> Any:
        """The first interpreter; sets :attr:`_opened` to the delegate it runs on (and any fallback)."""
        if opts.delegate == "xnnpack":
            self._opened = Opened(delegate="xnnpack")
            return self._interpreter(interpreter_cls, artifact, opts, False)
        try:
            interp = self._interpreter(interpreter_cls, artifact, opts, True)
        except _DelegateFailed as exc:
            reason = f"{opts.delegate} delegate failed: {exc.reason}"
            if not opts.delegate_fallback:
                raise BackendError(f"litert: {reason} (delegate_fallback is off)") from exc
            interp = self._interpreter(interpreter_cls, artifact, opts, False)
            self._opened = Opened(delegate="xnnpack", fallback=f"{reason}; running on xnnpack")
            log.warning("litert: %s", self._opened.fallback)
            return interp
        self._opened = Opened(delegate=opts.delegate)
        return interp

    def _interpreter(self, interpreter_cls: Any, artifact: Path, opts: LiteRtOptions, delegate: bool) -> Any:
        """An interpreter, with the configured delegate when ``delegate`` (:class:`_DelegateFailed`
        when that delegate cannot be loaded or applied)."""
        delegates: list[Any] | None = None
        library = opts.delegate_library or _DELEGATE_LIBRARIES.get(opts.delegate, "")
        if delegate:
            import ctypes

            from ai_edge_litert.interpreter import load_delegate

            try:
                # checked first: load_delegate's Delegate object raises again in __del__ when it fails
                handle = ctypes.CDLL(library)
                if not all(hasattr(handle, f"tflite_plugin_{verb}_delegate") for verb in ("create", "destroy")):
                    raise _DelegateFailed(
                        f"cannot load {library!r}: not a TFLite external delegate (no tflite_plugin_create_delegate)"
                    )
                delegates = [load_delegate(library, opts.delegate_options())]
            except (OSError, ValueError, RuntimeError) as exc:
                raise _DelegateFailed(f"cannot load {library!r}: {exc}") from exc
        try:
            return interpreter_cls(
                model_path=str(artifact), num_threads=opts.num_threads, experimental_delegates=delegates
            )
        except (ValueError, RuntimeError) as exc:
            if delegate:
                raise _DelegateFailed(f"{library!r} cannot run {artifact.name}: {exc}") from exc
            raise BackendError(f"litert cannot load {artifact}: {exc}") from exc

    def infer(self, inputs: TensorDict) -> TensorDict:
        import numpy as np

        from ..errors import InferenceError

        bucket = bucket_for(self._buckets, inputs)
        interp = bucket.interpreter
        try:
            for name, array in inputs.items():
                view = interp.tensor(bucket.input_index[name])()
                quantizer = bucket.quantizers.get(name)
                if quantizer is None:
                    np.copyto(view, array, casting="no")
                else:
                    quantizer.write(view, array)
                del view  # no reference to interpreter memory may survive into invoke()
            interp.invoke()
            for name, index in bucket.output_index.items():
                view = interp.tensor(index)()
                dequantizer = bucket.dequantizers.get(name)
                if dequantizer is None:
                    np.copyto(bucket.outputs[name], view)
                else:
                    dequantizer.read(bucket.outputs[name], view)
                del view
        except KeyError as exc:
            raise BackendError(f"unknown input {exc}") from exc
        except Exception as exc:
            raise InferenceError(f"litert failed: {exc}") from exc
        return bucket.outputs

    def close(self) -> None:
        self._buckets = {}


_DELEGATE_LIBRARIES = {
    "nnapi": "libnnapi_delegate.so",
    "qnn": "libQnnTFLiteDelegate.so",
    "gpu": "libtensorflowlite_gpu_delegate.so",
}


class _LiteRtBucket:
    """One bucket's interpreter, tensor indices, the output buffers this backend owns and the
    quantizers/dequantizers of its integer inputs/outputs (empty for a float model)."""

    __slots__ = ("dequantizers", "input_index", "interpreter", "output_index", "outputs", "quantizers")

    def __init__(
        self,
        interpreter: Any,
        input_index: dict[str, int],
        output_index: dict[str, int],
        outputs: dict[str, Any],
        quantizers: dict[str, Quantizer],
        dequantizers: dict[str, Dequantizer],
    ) -> None:
        self.interpreter = interpreter
        self.input_index = input_index
        self.output_index = output_index
        self.outputs = outputs
        self.quantizers = quantizers
        self.dequantizers = dequantizers
