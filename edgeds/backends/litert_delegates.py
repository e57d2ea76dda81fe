"""The LiteRT delegates' own options: typed profile fields and the strings ``load_delegate`` takes.

An external TFLite delegate receives its options as string key/value pairs
(``load_delegate(library, {key: value})``) and parses them itself, so each delegate's accepted keys
and values are modelled here and turned into strings by :meth:`QnnDelegateOptions.strings` and
:meth:`NnapiDelegateOptions.strings`. Unset fields are not passed (the delegate's default holds).

- QNN (Qualcomm AI Engine Direct TFLite delegate, ``libQnnTFLiteDelegate.so``): keys and enum values
  of Qualcomm's "External Delegate Options" table (``backend_type`` is mandatory;
  ``htp_performance_mode``/``dsp_performance_mode`` 0-8, ``htp_precision`` 0 = quantized / 1 = FP16,
  ``gpu_precision`` 0-3, ``gpu_performance_mode`` 0-3, ``library_path``, ``skel_library_dir``).
- NNAPI: the option names of TFLite's NNAPI delegate provider (``nnapi_accelerator_name``,
  ``nnapi_execution_preference``, ``nnapi_execution_priority``, ``nnapi_allow_fp16``,
  ``disable_nnapi_cpu``), booleans as ``true``/``false``.

Neither delegate can run on the compile host; these strings are what the device's delegate gets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Qualcomm's TfLiteQnnDelegateHtpPerformanceMode / DSP performance mode, by name.
PERFORMANCE_MODES: dict[str, str] = {
    "default": "0",
    "sustained_high_performance": "1",
    "burst": "2",
    "high_performance": "3",
    "power_saver": "4",
    "low_power_saver": "5",
    "high_power_saver": "6",
    "low_balanced": "7",
    "balanced": "8",
}
HTP_PRECISIONS: dict[str, str] = {"quantized": "0", "fp16": "1"}
GPU_PRECISIONS: dict[str, str] = {"graph": "0", "fp32": "1", "fp16": "2", "hybrid": "3"}
GPU_PERFORMANCE_MODES: dict[str, str] = {"default": "0", "high": "1", "normal": "2", "low": "3"}

PerformanceMode = Literal[
    "default",
    "sustained_high_performance",
    "burst",
    "high_performance",
    "power_saver",
    "low_power_saver",
    "high_power_saver",
    "low_balanced",
    "balanced",
]


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class QnnDelegateOptions(_Options):
    """``options.qnn`` of a ``litert`` entry with ``delegate: qnn``."""

    backend_type: Literal["htp", "gpu", "dsp"] = Field(
        default="htp", description="QNN backend to open: htp (Hexagon NPU), gpu (Adreno), dsp (older Hexagon)"
    )
    htp_performance_mode: PerformanceMode | None = Field(
        default=None, description="HTP clock vote while inferring (burst: fastest, most power)"
    )
    htp_precision: Literal["quantized", "fp16"] | None = Field(
        default=None, description="HTP precision: quantized (INT8 models) or fp16 (float models)"
    )
    dsp_performance_mode: PerformanceMode | None = Field(default=None, description="DSP clock vote while inferring")
    gpu_precision: Literal["graph", "fp32", "fp16", "hybrid"] | None = Field(
        default=None, description="GPU compute precision (graph: as the TFLite graph says)"
    )
    gpu_performance_mode: Literal["default", "high", "normal", "low"] | None = Field(
        default=None, description="GPU performance mode"
    )
    library_path: str | None = Field(default=None, description="the QNN backend library (e.g. libQnnHtp.so)")
    skel_library_dir: str | None = Field(default=None, description="directory of the Hexagon skel libraries")

    @model_validator(mode="after")
    def _fields_fit_the_backend_type(self) -> QnnDelegateOptions:
        for prefix in ("htp", "dsp", "gpu"):
            if prefix == self.backend_type:
                continue
            for name in type(self).model_fields:
                if name.startswith(prefix + "_") and getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to backend_type {prefix}, not {self.backend_type}")
        return self

    def strings(self) -> dict[str, str]:
        """The key/value strings for ``load_delegate``."""
        out: dict[str, str] = {"backend_type": self.backend_type}
        tables = {
            "htp_performance_mode": PERFORMANCE_MODES,
            "dsp_performance_mode": PERFORMANCE_MODES,
            "htp_precision": HTP_PRECISIONS,
            "gpu_precision": GPU_PRECISIONS,
            "gpu_performance_mode": GPU_PERFORMANCE_MODES,
        }
        for key, table in tables.items():
            value = getattr(self, key)
            if value is not None:
                out[key] = table[value]
        for key in ("library_path", "skel_library_dir"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class NnapiDelegateOptions(_Options):
    """``options.nnapi`` of a ``litert`` entry with ``delegate: nnapi``."""

    accelerator_name: str | None = Field(
        default=None, description="NNAPI device to use (Android 10+); unset: NNAPI chooses"
    )
    execution_preference: Literal["fast_single_answer", "sustained_speed", "low_power"] | None = Field(
        default=None, description="NNAPI execution preference"
    )
    execution_priority: Literal["low", "medium", "high"] | None = Field(
        default=None, description="priority among NNAPI executions (Android 11+)"
    )
    allow_fp16: bool | None = Field(default=None, description="let NNAPI run float32 operations in FP16")
    disable_cpu: bool | None = Field(
        default=None, description="exclude NNAPI's CPU reference device (ignored with accelerator_name)"
    )

    def strings(self) -> dict[str, str]:
        """The key/value strings for ``load_delegate``."""
        keys = {
            "accelerator_name": "nnapi_accelerator_name",
            "execution_preference": "nnapi_execution_preference",
            "execution_priority": "nnapi_execution_priority",
            "allow_fp16": "nnapi_allow_fp16",
            "disable_cpu": "disable_nnapi_cpu",
        }
        out: dict[str, str] = {}
        for field, key in keys.items():
            value = getattr(self, field)
            if isinstance(value, bool):
                out[key] = "true" if value else "false"
            elif value is not None:
                out[key] = str(value)
        return out
