"""ONNX Runtime compile step: offline graph optimization, FP16, INT8 (static QDQ or dynamic).

INT8 static: ``quant_pre_process`` (shape inference + optimization) first, then
``quantize_static`` in QDQ format, U8S8, per-channel weights, activations calibrated with MinMax
on the calibration batches; nodes named in ``exclude_nodes`` stay in float (mixed precision).
Weights are 7-bit (``reduce_range``) for x86_64 profiles unless the options say otherwise: on x86
CPUs without VNNI, ONNX Runtime multiplies U8S8 with VPMADDUBSW, which saturates its 16-bit pair
sums on full-range weights (measured on an AMD EPYC Zen 3: a random CNN's cosine to FP32 was 0.9990
with full-range weights, 0.9996 with 7-bit ones); the device, not the compile host, saturates or
not, so the profile's arch decides.
INT8 dynamic (no calibration) when the options ask for it or the model has no convolution,
where static QDQ does not apply well. Artifacts: ``out/model.onnx`` (+ ``preprocessed.onnx``
for INT8, kept out of the artifact list; the sensitivity scan reads it).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...backends.base import Artifact, Availability, BackendOptions, Precision, TensorDict
from ...errors import CompileError, UnsupportedPrecision
from . import package_version

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ...config import Hardware
    from ...modelcard import ModelCard

SUPPORTS_MIXED = True
DEFERRED_GATE = False
MULTI_INPUT = True  # calibrates with every input of a card with extra_inputs
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_EXTENDED",
}


def available() -> Availability:
    try:
        import onnxruntime
        from onnxruntime import quantization  # noqa: F401
    except ImportError as exc:
        return Availability("onnxruntime", False, reason=str(exc), hint="pip install onnxruntime")
    return Availability("onnxruntime", True, version=onnxruntime.__version__)


def tool_versions() -> dict[str, str]:
    return {k: v for k in ("onnxruntime", "onnx") if (v := package_version(k))}


def for_hardware(options: BackendOptions, hardware: Hardware) -> BackendOptions:
    """``options`` with the choices left to the target settled: ``reduce_range`` None becomes
    on for x86_64 (see the module docstring) and off for aarch64."""
    if getattr(options, "reduce_range", False) is None:
        return options.model_copy(update={"reduce_range": hardware.arch == "x86_64"})
    return options


def _optimize(model: Path, dest: Path, level: str) -> None:
    """Offline graph optimization. ``all`` is capped at ``extended``: layout-specific fusions
    (NCHWc) are tied to this CPU, so they are left for the device's session to apply."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    so.optimized_model_filepath = str(dest)
    try:
        ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompileError(f"onnxruntime cannot optimize {model}: {exc}") from exc


class _Reader:
    """``CalibrationDataReader`` over caller-supplied batches."""

    def __init__(self, calib: Iterable[TensorDict]) -> None:
        self._batches = [dict(b) for b in calib]
        self._iter: Iterator[dict[str, Any]] = iter(self._batches)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def preprocess_for_quantization(model: Path, dest: Path) -> Path:
    """``quant_pre_process`` (symbolic shape inference + optimization) into ``dest``."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(model), str(dest), skip_symbolic_shape=False)
    except Exception as exc:  # onnxruntime's tools raise their own and onnx's exception types
        # symbolic inference fails on some graphs; plain ONNX inference is enough for CNNs
        log.info("symbolic shape inference of %s failed (%s); retrying without", model, exc, exc_info=True)
        try:
            quant_pre_process(str(model), str(dest), skip_symbolic_shape=True)
        except Exception as retry:
            raise CompileError(f"quantization pre-processing of {model} failed: {exc}; {retry}") from retry
    return dest


def quantize_int8(
    model: Path,
    out_model: Path,
    calib: Iterable[TensorDict],
    *,
    per_channel: bool = True,
    dynamic: bool = False,
    exclude_nodes: Sequence[str] = (),
    reduce_range: bool = False,
    for_tensorrt: bool = False,
) -> Path:
    """INT8 QDQ (static) or dynamic quantization of an already pre-processed ``model`` (``reduce_range``:
    7-bit weights). Static activations are uint8 with a zero point (U8S8) and biases int32, unless
    ``for_tensorrt``: then the form TensorRT's explicit quantization takes, int8 activations with
    zero point 0 (S8S8, symmetric) and biases left in float (TensorRT quantizes no bias tensor)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    try:
        if dynamic:
            quantize_dynamic(
                str(model),
                str(out_model),
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude_nodes) or None,
            )
            return out_model
        reader = _Reader(calib)
        if len(reader) == 0:
            raise CompileError("INT8 static quantization needs calibration data; none was given")

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def get_next(self) -> dict[str, Any] | None:
                return reader.get_next()

            def rewind(self) -> None:
                reader.rewind()

        quantize_static(
            str(model),
            str(out_model),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            # U8S8: the fast x86 path (VNNI); S8S8 measured 0.96x FP32 at batch 1 here, U8S8 ~2x
            activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude_nodes) or None,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "ActivationSymmetric": for_tensorrt,
                "WeightSymmetric": True,
                "QuantizeBias": not for_tensorrt,
            },
        )
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(f"onnxruntime quantization of {model} failed: {exc}") from exc
    return out_model


def compile(
    options: BackendOptions,
    model: Path,
    card: ModelCard,
    calib: Iterable[TensorDict],
    out: Path,
    precision: Precision = "fp32",
    *,
    exclude_nodes: Sequence[str] = (),
) -> Artifact:
    """Write ``out/model.onnx`` at ``precision``. See the module docstring."""
    import onnx

    if precision not in PRECISIONS:
        raise UnsupportedPrecision(f"onnxruntime cannot compile {precision!r} (supported: {', '.join(PRECISIONS)})")
    level = str(getattr(options, "graph_optimization_level", "all"))
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model.onnx"
    meta: dict[str, Any] = {"graph_optimization": _LEVELS[level]}
    if precision == "fp32":
        if level == "disable":
            shutil.copyfile(model, target)
        else:
            _optimize(model, target, level)
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        try:
            converted = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
            onnx.save(converted, str(target))
        except Exception as exc:
            raise CompileError(f"FP16 conversion of {model} failed: {exc}") from exc
    else:
        pre = preprocess_for_quantization(model, out / "preprocessed.onnx")
        heavy = {"Conv", "ConvTranspose"}
        has_conv = bool(heavy & {n.op_type for n in onnx.load(str(pre), load_external_data=False).graph.node})
        dynamic = getattr(options, "quantization", "static") == "dynamic" or not has_conv
        reduce_range = bool(getattr(options, "reduce_range", False))  # settled by for_hardware; None = full
        quantize_int8(
            pre,
            target,
            calib,
            per_channel=bool(getattr(options, "per_channel", True)),
            dynamic=dynamic,
            exclude_nodes=exclude_nodes,
            reduce_range=reduce_range,
        )
        meta.update(
            quantization="dynamic" if dynamic else "static-qdq",
            per_channel=bool(getattr(options, "per_channel", True)),
            activation_type="uint8",
            weight_type="int8",
            weight_bits=7 if reduce_range else 8,
            calibration_method=None if dynamic else "minmax",
            excluded_nodes=list(exclude_nodes),
            preprocessed_model=str(pre),
        )
    return Artifact("onnxruntime", precision, target, (target,), layout="NCHW", metadata=meta)
