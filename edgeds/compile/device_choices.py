"""What the compile host gates and what the device decides at load, per runtime.

An artifact is portable; some choices about running it are not. An OpenVINO IR runs on whatever
device string the device's plugins offer (``HETERO:GPU,CPU`` needs the iGPU's plugin and driver),
a ``.tflite`` on whatever delegate loads there (QNN, NNAPI), a TensorRT recipe becomes an engine
only on the GPU that builds it. The compile host therefore gates what it can run itself (the IR
on OpenVINO's CPU plugin, the ``.tflite`` on XNNPACK) and leaves the device-specific choice to
the device, which records what it opened (:mod:`edgeds.runtime.selection`). No compile attempt
is spent on a device the compile host does not have.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import BackendOptions


@dataclass(frozen=True)
class GatePlan:
    """``gate_options``: the options the compile host compiles and gates with; ``resolved_on_device``:
    what the device decides at load, in words (None when the compile host gated exactly what runs)."""

    gate_options: BackendOptions
    resolved_on_device: str | None = None


def plan_gate(runtime: str, options: BackendOptions) -> GatePlan:
    """How a profile entry of ``runtime`` with ``options`` is gated here and what is left to the device."""
    if runtime == "openvino":
        device = str(getattr(options, "device", "CPU"))
        if device != "CPU":
            return GatePlan(options.model_copy(update={"device": "CPU"}), f"OpenVINO device {device}")
    elif runtime == "litert":
        delegate = str(getattr(options, "delegate", "xnnpack"))
        if delegate != "xnnpack":
            return GatePlan(
                options.model_copy(update={"delegate": "xnnpack", "delegate_library": None}),
                f"LiteRT delegate {delegate}",
            )
    elif runtime == "tensorrt":
        dla = getattr(options, "dla_core", None)
        return GatePlan(
            options, "TensorRT engine, built on the device" + (f" for DLA core {dla}" if dla is not None else "")
        )
    return GatePlan(options)


def gate_device(runtime: str, options: BackendOptions) -> str:
    """Where the compile host runs the gate of ``runtime`` with these (gate) options, in words."""
    if runtime == "openvino":
        return f"OpenVINO {getattr(options, 'device', 'CPU')}"
    if runtime == "litert":
        return "XNNPACK (CPU)"
    return "CPU"
