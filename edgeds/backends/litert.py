"""LiteRT (TensorFlow Lite) backend: runs ``.tflite`` artifacts with ``ai_edge_litert`` (its runtime import)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .base import Availability, Backend, BackendOptions, IOSpec, TensorDict, TensorSpec, bucket_for

if TYPE_CHECKING:
    pass


class LiteRtOptions(BackendOptions):
    """``options:`` of a ``litert`` entry in a profile."""

    delegate: Literal["xnnpack", "nnapi", "qnn", "gpu"] = "xnnpack"
    delegate_library: str | None = Field(default=None, description="shared library for load_delegate")
    delegate_fallback: bool = Field(default=True, description="fall back to XNNPACK when the delegate fails")
    num_threads: int | None = Field(default=None, ge=1)


class LiteRtBackend(Backend):
    name = "litert"
    Options = LiteRtOptions
    precisions = ("fp32", "fp16", "int8")
    install_hint = "pip install 'edgeds[litert]'"

    def __init__(self, options: LiteRtOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._buckets: dict[int, _LiteRtBucket] = {}
        self.delegate_used = "xnnpack"

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

        :meth:`infer` writes each input through a transient zero-copy view
        (``interpreter.tensor(i)()``) that is dropped before ``invoke``, then copies the outputs
        into buffers this backend owns (LiteRT forbids holding views across ``invoke``).
        """
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        from ..errors import BackendError

        self.close()
        opts: LiteRtOptions = self.options  # type: ignore[assignment]
        self.delegate_used = "xnnpack"
        probe = self._interpreter(Interpreter, artifact, opts)
        in_details = probe.get_input_details()
        out_details = probe.get_output_details()

        def signature(detail: Any) -> tuple[int, ...]:
            sig = detail.get("shape_signature")
            dims = sig if sig is not None and len(sig) else detail["shape"]
            return (-1, *(int(d) for d in dims[1:]))

        inputs = tuple(TensorSpec(d["name"], np.dtype(d["dtype"]).name, signature(d)) for d in in_details)
        outputs = tuple(TensorSpec(d["name"], np.dtype(d["dtype"]).name, signature(d)) for d in out_details)
        self._buckets = {}
        for bucket in sorted(set(int(b) for b in buckets)):
            interp = probe if bucket == int(in_details[0]["shape"][0]) else None
            interp = interp or self._interpreter(Interpreter, artifact, opts)
            try:
                for detail, spec in zip(in_details, inputs, strict=True):
                    interp.resize_tensor_input(detail["index"], [bucket, *spec.shape[1:]], strict=False)
                interp.allocate_tensors()
            except Exception as exc:
                raise BackendError(f"litert cannot resize {artifact} to batch {bucket}: {exc}") from exc
            outs = {}
            for detail in interp.get_output_details():
                outs[detail["name"]] = np.zeros(tuple(detail["shape"]), dtype=detail["dtype"])
            self._buckets[bucket] = _LiteRtBucket(
                interp,
                {d["name"]: d["index"] for d in in_details},
                {d["name"]: d["index"] for d in interp.get_output_details()},
                outs,
            )
        layout = "NHWC" if inputs and len(inputs[0].shape) == 4 and inputs[0].shape[-1] in (1, 3) else "NCHW"
        return IOSpec(inputs=inputs, outputs=outputs, layout=layout, max_batch_size=max(buckets))

    def _interpreter(self, interpreter_cls: Any, artifact: Path, opts: LiteRtOptions) -> Any:
        """An interpreter with the configured delegate (XNNPACK is LiteRT's CPU default)."""
        from ..errors import BackendError, BackendUnavailable

        delegates: list[Any] = []
        if opts.delegate != "xnnpack":
            from ai_edge_litert.interpreter import load_delegate

            library = opts.delegate_library or _DELEGATE_LIBRARIES[opts.delegate]
            try:
                delegates.append(load_delegate(library))
                self.delegate_used = opts.delegate
            except (OSError, ValueError, RuntimeError) as exc:
                if not opts.delegate_fallback:
                    raise BackendUnavailable(self.name, f"{opts.delegate} delegate {library!r}: {exc}", "") from exc
                self.delegate_used = "xnnpack (fallback)"
        try:
            return interpreter_cls(
                model_path=str(artifact), num_threads=opts.num_threads, experimental_delegates=delegates or None
            )
        except Exception as exc:
            raise BackendError(f"litert cannot load {artifact}: {exc}") from exc

    def infer(self, inputs: TensorDict) -> TensorDict:
        import numpy as np

        from ..errors import BackendError, InferenceError

        bucket = bucket_for(self._buckets, inputs)
        interp = bucket.interpreter
        try:
            for name, array in inputs.items():
                view = interp.tensor(bucket.input_index[name])()
                np.copyto(view, array, casting="no")
                del view  # no reference to interpreter memory may survive into invoke()
            interp.invoke()
            for name, index in bucket.output_index.items():
                view = interp.tensor(index)()
                np.copyto(bucket.outputs[name], view)
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
    """One bucket's interpreter, tensor indices and the output buffers this backend owns."""

    __slots__ = ("input_index", "interpreter", "output_index", "outputs")

    def __init__(
        self, interpreter: Any, input_index: dict[str, int], output_index: dict[str, int], outputs: dict[str, Any]
    ) -> None:
        self.interpreter = interpreter
        self.input_index = input_index
        self.output_index = output_index
        self.outputs = outputs
