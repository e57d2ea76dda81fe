"""The typed ONNX models a strongly typed TensorRT build parses, written at compile time.

TensorRT 11 builds only strongly typed networks (see :mod:`.tensorrt_api`), so the precision must be
in the ONNX graph:

- INT8: :func:`write_qdq_onnx` runs ONNX Runtime's static quantization in QDQ format
  (:func:`~edgeds.compile.toolchains.onnxruntime.quantize_int8`) in the one form TensorRT's explicit
  quantization accepts: signed INT8 activations and weights, symmetric (zero point 0), per-channel
  weights, full 8-bit range, biases in float. Activation ranges are calibrated here with the bundle's calibration
  images, preprocessed exactly as the TensorRT 10 calibrator does on the device.
- FP16: :func:`write_fp16_onnx` converts weights and compute to FP16 and keeps the inputs and
  outputs FP32 (what NVIDIA's ModelOpt AutoCast produces with ``keep_io_types``; ONNX Runtime's
  converter is used here because it is already a dependency).

:func:`qdq_problems` checks a Q/DQ model against what TensorRT accepts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import CompileError

if TYPE_CHECKING:
    from ...backends.base import TensorDict
    from ...modelcard import ModelCard

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def calibration_feeds(
    card: ModelCard, images: np.ndarray, input_name: str, batch: int, fixed: bool
) -> Iterator[TensorDict]:
    """``{input_name: [batch, C, H, W]}`` from uint8 RGB ``images`` preprocessed with ``card``.

    A ``fixed`` batch model takes exactly ``batch`` rows, so a short last batch is dropped; a
    dynamic one gets it as is.
    """
    from ..data import preprocess_all

    data = preprocess_all(card, images, "NCHW")
    for start in range(0, len(data), batch):
        chunk = data[start : start + batch]
        if fixed and len(chunk) < batch:
            return
        yield {input_name: np.ascontiguousarray(chunk)}


def write_qdq_onnx(
    model: Path, dest: Path, card: ModelCard, images: np.ndarray, input_name: str, batch: int, fixed: bool
) -> Path:
    """Write ``dest``: ``model`` with explicit Q/DQ INT8 (see the module docstring); returns ``dest``."""
    from .onnxruntime import preprocess_for_quantization, quantize_int8

    feeds = list(calibration_feeds(card, images, input_name, batch, fixed))
    if not feeds:
        raise CompileError(f"TensorRT INT8 needs at least {batch} calibration images for a fixed batch of {batch}")
    with tempfile.TemporaryDirectory(prefix="edgeds-qdq-") as tmp:
        pre = preprocess_for_quantization(model, Path(tmp) / "preprocessed.onnx")
        quantize_int8(pre, dest, feeds, per_channel=True, reduce_range=False, for_tensorrt=True)
    problems = qdq_problems(dest)
    if problems:
        raise CompileError(f"the Q/DQ ONNX for TensorRT is not what TensorRT accepts: {'; '.join(problems)}")
    return dest


def write_fp16_onnx(model: Path, dest: Path) -> Path:
    """Write ``dest``: ``model`` in FP16 with FP32 inputs and outputs; returns ``dest``."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        onnx.save(convert_float_to_float16(onnx.load(str(model)), keep_io_types=True), str(dest))
    except (ValueError, RuntimeError, onnx.checker.ValidationError) as exc:
        raise CompileError(f"FP16 conversion of {model} for TensorRT failed: {exc}") from exc
    return dest


def qdq_problems(path: Path) -> list[str]:
    """What keeps TensorRT from building the Q/DQ model at ``path`` (empty: nothing).

    TensorRT's explicit quantization takes signed INT8 with zero point 0 only; a model without any
    QuantizeLinear/DequantizeLinear node would build in floating point.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {init.name: init for init in graph.initializer}
    nodes = [node for node in graph.node if node.op_type in QDQ_OPS]
    problems = []
    if not any(node.op_type == "QuantizeLinear" for node in nodes):
        problems.append("no QuantizeLinear node")
    if not any(node.op_type == "DequantizeLinear" for node in nodes):
        problems.append("no DequantizeLinear node")
    for node in nodes:
        if len(node.input) < 3 or not node.input[2]:
            if node.op_type == "QuantizeLinear":  # without a zero point its output is uint8
                problems.append(f"{node.name}: no zero point, so it quantizes to uint8; TensorRT takes int8")
            continue
        zero = constants.get(node.input[2])
        if zero is None:
            problems.append(f"{node.name}: zero point {node.input[2]!r} is not a constant")
            continue
        value = numpy_helper.to_array(zero)
        if value.dtype != np.int8:
            problems.append(f"{node.name}: zero point is {value.dtype}, TensorRT takes int8")
        elif np.any(value != 0):
            problems.append(f"{node.name}: zero point is not 0 (TensorRT quantizes symmetrically)")
    return problems
