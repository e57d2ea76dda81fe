"""Integer inputs/outputs of a fully quantized ``.tflite``: their parameters and the float edges.

A full-integer model takes and returns int8/uint8 tensors with one scale and zero point each
(``real = scale * (q - zero_point)``). The LiteRT backend keeps float32 at its interface: it
quantizes float inputs into the int tensors (``q = clip(rint(x / scale) + zero_point)`` to the
dtype's range; ties round to even) and dequantizes int outputs into float32 buffers it
owns, with scratch buffers allocated once per batch bucket at ``open`` (no per-call allocation).

The interpreter's own tensor details are authoritative; :func:`check_agrees` compares them with
what the bundle's manifest recorded (``io_quantization``: ``{tensor name: {dtype, scale,
zero_point}}``, the names the backend's :class:`~edgeds.backends.base.IOSpec` reports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import BackendError


class TensorQuantization(BaseModel):
    """One integer input or output: ``real = scale * (q - zero_point)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: Literal["int8", "uint8", "int16"]
    scale: float = Field(gt=0)
    zero_point: int

    def describe(self) -> str:
        return f"{self.dtype}, scale {self.scale!r}, zero point {self.zero_point}"


def quantization_of(detail: Mapping[str, Any]) -> TensorQuantization | None:
    """The parameters of one tensor detail (``get_input_details()`` item); None for a float tensor
    or an integer tensor that carries no quantization (e.g. token ids)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), dtype=np.float64)
    zero_points = np.asarray(params.get("zero_points", ()), dtype=np.int64)
    if scales.size == 0:
        return None
    if scales.size != 1:
        raise BackendError(
            f"litert: tensor {detail['name']!r} is quantized per channel ({scales.size} scales); "
            "model inputs and outputs need one scale: reconvert the model"
        )
    if dtype.name not in ("int8", "uint8", "int16"):
        name = detail["name"]
        raise BackendError(f"litert: tensor {name!r} is quantized as {dtype.name} (int8, uint8 or int16 only)")
    return TensorQuantization(dtype=dtype.name, scale=float(scales[0]), zero_point=int(zero_points[0]))


def check_agrees(
    actual: Mapping[str, TensorQuantization], recorded: Mapping[str, TensorQuantization], artifact: str
) -> None:
    """BackendError when the manifest's ``io_quantization`` is not what the model's tensors carry."""
    for name in sorted(set(actual) | set(recorded)):
        have, want = actual.get(name), recorded.get(name)
        same = (
            have is not None
            and want is not None
            and have.dtype == want.dtype
            and have.zero_point == want.zero_point
            and math.isclose(have.scale, want.scale, rel_tol=1e-6)
        )
        if not same:
            have_text = have.describe() if have else "not quantized"
            want_text = want.describe() if want else "nothing"
            raise BackendError(
                f"litert: {artifact} tensor {name!r} is {have_text} but the manifest's io_quantization "
                f"says {want_text}; the bundle is inconsistent: recompile it"
            )


class Quantizer:
    """Writes a float32 batch into an integer input tensor through a scratch buffer of its shape."""

    __slots__ = ("hi", "lo", "scale", "scratch", "zero_point")

    def __init__(self, q: TensorQuantization, shape: tuple[int, ...]) -> None:
        info = np.iinfo(np.dtype(q.dtype))
        self.scale = np.float32(q.scale)
        self.zero_point = np.float32(q.zero_point)
        self.lo, self.hi = np.float32(info.min), np.float32(info.max)
        self.scratch = np.empty(shape, dtype=np.float32)

    def write(self, target: np.ndarray, array: np.ndarray) -> None:
        s = self.scratch
        np.divide(array, self.scale, out=s)
        np.rint(s, out=s)
        np.add(s, self.zero_point, out=s)
        np.clip(s, self.lo, self.hi, out=s)
        np.copyto(target, s, casting="unsafe")


class Dequantizer:
    """Reads an integer output tensor into a float32 buffer: ``scale * (q - zero_point)``."""

    __slots__ = ("scale", "zero_point")

    def __init__(self, q: TensorQuantization) -> None:
        self.scale = np.float32(q.scale)
        self.zero_point = np.float32(q.zero_point)

    def read(self, out: np.ndarray, source: np.ndarray) -> None:
        np.copyto(out, source, casting="unsafe")
        np.subtract(out, self.zero_point, out=out)
        np.multiply(out, self.scale, out=out)
