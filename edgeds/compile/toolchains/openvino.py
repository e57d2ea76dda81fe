"""OpenVINO compile step: ``ov.convert_model`` to IR (FP32, or FP16-compressed weights), INT8 via NNCF.

INT8: ``nncf.quantize`` (post-training, default preset, min/max activation ranges) over the
calibration samples;
``exclude_nodes`` (ONNX node names) become an NNCF ``IgnoredScope`` of the matching OpenVINO
operations (mixed precision). The batch dimension stays as the model has it: a dynamic one
is reshaped per bucket by the runtime, a fixed one is calibrated and run at its size. The
device string (``CPU``, ``GPU``, ``NPU``, ``AUTO``, ``HETERO:GPU,CPU``) is not baked into the
IR; it is recorded in the artifact metadata (and so in the manifest) for the runtime, together
with whether to use the compiled-blob cache (``CACHE_DIR``).
Artifacts: ``out/model.xml`` + ``out/model.bin``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...backends.base import Artifact, Availability, BackendOptions, Precision, TensorDict
from ...errors import CompileError, UnsupportedPrecision
from . import package_version

if TYPE_CHECKING:
    from ...modelcard import ModelCard

SUPPORTS_MIXED = True
DEFERRED_GATE = False
MULTI_INPUT = True  # calibrates with every input of a card with extra_inputs
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
_HINT = "pip install 'edgeds[openvino]'"


def available() -> Availability:
    try:
        import openvino as ov
    except ImportError as exc:
        return Availability("openvino", False, reason=str(exc), hint=_HINT)
    return Availability("openvino", True, version=ov.get_version())


def tool_versions() -> dict[str, str]:
    return {k: v for k in ("openvino", "nncf") if (v := package_version(k))}


def runtime_options(options: BackendOptions, precision: str) -> BackendOptions:
    """Options the runtime opens the artifact with. An FP32 artifact runs in f32: the CPU plugin's
    default on BF16-capable CPUs is bf16, which is not what an FP32 bundle promises."""
    if precision == "fp32" and getattr(options, "inference_precision", "auto") == "auto":
        return options.model_copy(update={"inference_precision": "f32"})
    return options


def ov_names_for(ov_model: Any, onnx_nodes: Sequence[str], onnx_outputs: dict[str, list[str]]) -> list[str]:
    """Friendly names of the OpenVINO operations that came from the given ONNX nodes."""
    wanted = set(onnx_nodes)
    tensors = {t for n in onnx_nodes for t in onnx_outputs.get(n, [])}
    names = []
    for op in ov_model.get_ordered_ops():
        friendly = op.get_friendly_name()
        base = friendly.split("/")[0]
        out_names = {name for output in op.outputs() for name in output.get_names()}
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        if friendly in wanted or base in wanted or out_names & tensors:
            names.append(friendly)
    return names


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
    """Write ``out/model.xml``/``.bin`` at ``precision``. See the module docstring."""
    if precision not in PRECISIONS:
        raise UnsupportedPrecision(f"openvino cannot compile {precision!r} (supported: {', '.join(PRECISIONS)})")
    import openvino as ov

    out.mkdir(parents=True, exist_ok=True)
    target = out / "model.xml"
    try:
        ov_model = ov.convert_model(str(model))
    except Exception as exc:
        raise CompileError(f"openvino cannot convert {model}: {exc}") from exc
    device = str(getattr(options, "device", "CPU"))
    meta: dict[str, Any] = {
        "device": device,
        "cache_compiled_blobs": bool(getattr(options, "cache_compiled_blobs", True)),
        "performance_hint": str(getattr(options, "performance_hint", "THROUGHPUT")),
    }
    if precision == "int8":
        batches = [dict(b) for b in calib]
        if not batches:
            raise CompileError("INT8 quantization with NNCF needs calibration data; none was given")
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        logging.getLogger("nncf").setLevel(logging.ERROR)
        # the image input; a generic card has none: any input counts the rows of a batch
        input_name = card.input.name if card.input is not None else next(iter(batches[0]))
        ignored = None
        if exclude_nodes:
            import onnx

            graph = onnx.load(str(model), load_external_data=False).graph
            outputs = {n.name: list(n.output) for n in graph.node}
            names = ov_names_for(ov_model, exclude_nodes, outputs)
            ignored = nncf.IgnoredScope(names=names, validate=False)
            meta["excluded_nodes"] = list(exclude_nodes)
            meta["ignored_ov_ops"] = names
        # NNCF collects statistics per item: one sample per item calibrates best; a model with a
        # fixed batch takes only whole batches (the pipeline hands it batches of exactly that size)
        batch_dim = ov_model.inputs[0].get_partial_shape()[0] if ov_model.inputs else None
        whole = batch_dim is not None and batch_dim.is_static and batch_dim.get_length() != 1
        items: list[Any]
        if card.extra_inputs:  # a multi-input model: an item is every input by name
            rows = [(b, slice(0, None)) for b in batches] if whole else []
            if not whole:
                rows = [(b, slice(i, i + 1)) for b in batches for i in range(len(b[input_name]))]
            items = [{name: array[part] for name, array in b.items()} for b, part in rows]
        elif whole:
            items = [b[input_name] for b in batches]
        else:
            items = [b[input_name][i : i + 1] for b in batches for i in range(len(b[input_name]))]
        samples = len(items)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                ov_model = nncf.quantize(
                    ov_model,
                    nncf.Dataset(items),
                    subset_size=samples,
                    # min/max activation ranges over our calibration set (as ONNX Runtime's MinMax):
                    # NNCF's default quantile estimator clips this model's activations (-1.7 pts top-1)
                    advanced_parameters=AdvancedQuantizationParameters(
                        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
                    ),
                    ignored_scope=ignored,
                )
        except Exception as exc:
            raise CompileError(f"NNCF quantization of {model} failed: {exc}") from exc
        meta.update(quantization="nncf-ptq", activation_ranges="minmax", calibration_samples=samples)
    try:
        ov.save_model(ov_model, str(target), compress_to_fp16=precision == "fp16")
    except Exception as exc:
        raise CompileError(f"openvino cannot save IR to {target}: {exc}") from exc
    files = (target, target.with_suffix(".bin"))
    return Artifact("openvino", precision, target, files, layout="NCHW", metadata=meta)
