"""Which TensorRT builder API an installed TensorRT speaks, and which ONNX file each API builds from.

Two APIs, chosen by the installed version (:func:`builder_api`):

- ``v10`` (TensorRT 10.x; JetPack 6.1/6.2 ships 10.3, what the Jetson profiles target): a weakly
  typed network from the FP32 ONNX; ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` let the builder pick
  reduced-precision kernels and an ``IInt8Calibrator`` (``IBuilderConfig.int8_calibrator``) measures
  the INT8 ranges on the device.
- ``v11`` (TensorRT 11.x): TensorRT 11.0 removed the weak-typing builder flags (``FP16``, ``INT8``,
  ``BF16``, ``FP8``, ``OBEY/PREFER_PRECISION_CONSTRAINTS``), ``int8_calibrator`` and the calibration
  profile; every network is strongly typed, so the precision is in the graph: FP16 is an FP16 ONNX
  (FP32 I/O kept), INT8 is an ONNX with explicit QuantizeLinear/DequantizeLinear nodes (signed INT8,
  zero point 0). Both are written at compile time (:mod:`.tensorrt_onnx`) and named in the recipe.

Older TensorRT (8.x, JetPack 5 / JetPack 6.0) and majors after 11 are refused with
:class:`~edgeds.errors.BackendUnavailable`, so a device without a usable TensorRT falls back to the
next artifact of the bundle. Plain Python: no ``tensorrt`` import.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from ...errors import BackendUnavailable, ToolchainError

if TYPE_CHECKING:
    from .tensorrt import Recipe

BuilderApi = Literal["v10", "v11"]
OLDEST = (10, 0)
"""The oldest TensorRT edgeds builds with (the builder calls ``create_network(0)``: TensorRT 10)."""
HINT = "use TensorRT 10.x (JetPack 6.1 or later ships 10.3) or 11.x"


def parse_version(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a TensorRT version string such as ``10.3.0.30`` or ``11.4.1``."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    if match is None:
        raise BackendUnavailable("tensorrt", f"cannot read the TensorRT version {version!r}", HINT)
    return int(match.group(1)), int(match.group(2))


def builder_api(version: str) -> BuilderApi:
    """The builder API of TensorRT ``version``: ``v10`` for 10.x, ``v11`` for 11.x.

    :class:`~edgeds.errors.BackendUnavailable` for anything else (older than 10.0, or a major this
    edgeds does not know), with the reason in one line.
    """
    major, minor = parse_version(version)
    if (major, minor) < OLDEST:
        raise BackendUnavailable("tensorrt", f"TensorRT {version} is older than 10.0", HINT)
    if major == 10:
        return "v10"
    if major == 11:
        return "v11"
    raise BackendUnavailable("tensorrt", f"TensorRT {version} is newer than the 10.x/11.x edgeds builds with", HINT)


def network_onnx(recipe: Recipe, api: BuilderApi) -> str:
    """The ONNX file (relative to the recipe) the ``api`` builder parses for ``recipe``.

    ``v10`` parses the FP32 model at every precision (flags and the calibrator choose the rest);
    ``v11`` parses the FP16 ONNX for FP16 and the Q/DQ ONNX for INT8. A recipe written before those
    existed raises :class:`~edgeds.errors.ToolchainError`: compile the bundle again.
    """
    if api == "v10" or recipe.precision == "fp32":
        return recipe.onnx
    typed = recipe.fp16_onnx if recipe.precision == "fp16" else recipe.qdq_onnx
    if typed is None:
        kind = "an FP16 ONNX" if recipe.precision == "fp16" else "a Q/DQ INT8 ONNX"
        raise ToolchainError(
            f"TensorRT 11 builds {recipe.precision} from {kind}, which this recipe lacks: "
            "compile the bundle again with this edgeds"
        )
    return typed
