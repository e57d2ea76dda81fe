"""Compile: per-profile backend selection, quantization behind an accuracy gate, bundles.

:func:`compile_model` is the public entry (``edgeds compile`` is its CLI). Layout:

- :mod:`.pipeline` walks the profile's backend chain with the INT8 -> mixed -> FP16 -> FP32 fallback;
- :mod:`.gates` the quality gate per task, :mod:`.sensitivity` the per-node error scan;
- :mod:`.data` calibration / validation data from the model card, :mod:`.cache` the compile cache;
- :mod:`.toolchains` one compile-time module per backend. Import split: ``edgeds/backends/``
  own the runtime imports, ``edgeds/compile/toolchains/`` own the compile-time imports
  (``onnxruntime.quantization``, openvino conversion + nncf, onnx2tf in its venv, the TensorRT builder).
"""

from __future__ import annotations

from .pipeline import Progress, compile_model
from .report import Attempt, CompileReport, CompileResult

__all__ = ["Attempt", "CompileReport", "CompileResult", "Progress", "compile_model"]
