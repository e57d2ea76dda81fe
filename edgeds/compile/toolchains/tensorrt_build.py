"""Build a TensorRT engine from a recipe on the device, with the builder API of the installed TensorRT.

One build for both APIs (:func:`~.tensorrt_api.builder_api` picks by ``tensorrt.__version__``);
they differ only in how the precision gets into the network:

- TensorRT 10 (``v10``): a weakly typed network parsed from the FP32 ONNX; ``BuilderFlag.FP16`` for
  FP16 and INT8 (INT8 engines keep FP16 for layers without INT8 kernels), ``BuilderFlag.INT8`` with an
  ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` over the recipe's images (ranges cached per
  model in the calibration cache) and the optimization profile as calibration profile.
- TensorRT 11 (``v11``): 11.0 removed those flags, ``IBuilderConfig.int8_calibrator`` and
  ``set_calibration_profile``; the network is created ``STRONGLY_TYPED`` (the flag is required for a
  strongly typed network on 10.x and accepted, without effect, on 11.x where every network is) from
  the recipe's FP16 ONNX or explicit Q/DQ INT8 ONNX, and no precision flag is set.

Shared by both: workspace limit, optimization level, min/opt/max profile, DLA core + GPU fallback,
version/hardware compatibility, and the per-device timing cache. Needs ``tensorrt`` (and
``cuda-python`` for the TensorRT 10 calibrator); the engine cache layout lives in :mod:`.tensorrt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ToolchainError
from .tensorrt_api import BuilderApi, builder_api, network_onnx

if TYPE_CHECKING:
    from ...modelcard import ModelCard
    from .tensorrt import EnginePaths, Recipe


def network_flags(trt: Any, api: BuilderApi) -> int:
    """``create_network`` flags: none on 10 (networks are explicit-batch since 10.0), ``STRONGLY_TYPED`` on 11."""
    if api == "v10":
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine(recipe: Recipe, recipe_dir: Path, card: ModelCard | None, paths: EnginePaths) -> bytes:
    """Build and serialize the engine for ``recipe``; returns the plan bytes.

    ``card`` preprocesses the calibration images of a TensorRT 10 INT8 build (other builds do not
    read it and may pass None).

    Reads (and updates) the timing cache at ``paths.timing_cache``; on TensorRT 10 INT8 also the
    calibration cache at ``paths.calibration_cache``. :class:`~edgeds.errors.BackendUnavailable`
    for a TensorRT version this edgeds does not build with, :class:`~edgeds.errors.ToolchainError`
    when TensorRT cannot parse or build.
    """
    import tensorrt as trt

    api = builder_api(str(trt.__version__))
    source = network_onnx(recipe, api)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, api))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(recipe_dir / source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ToolchainError(f"TensorRT {trt.__version__} cannot parse {source}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, recipe.workspace_mb << 20)
    config.builder_optimization_level = recipe.builder_optimization_level
    profile = builder.create_optimization_profile()
    for shape in recipe.inputs:
        profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
    config.add_optimization_profile(profile)
    calibrator = None
    if api == "v10" and recipe.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for layers without INT8 kernels
        if recipe.precision == "int8":
            if card is None:
                raise ToolchainError(
                    "a TensorRT 10 INT8 build needs the model card to preprocess its calibration images"
                )
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_calibration_profile(profile)
            calibrator = _make_calibrator(trt, recipe, recipe_dir, card, paths.calibration_cache)
            config.int8_calibrator = calibrator
    try:
        _place(trt, builder, config, recipe)
        timing_bytes = paths.timing_cache.read_bytes() if paths.timing_cache.is_file() else b""
        timing_cache = config.create_timing_cache(timing_bytes)
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ToolchainError(f"TensorRT {trt.__version__} failed to build the engine (see the TensorRT log above)")
        paths.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        paths.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(plan)
    finally:
        if calibrator is not None:
            calibrator.free()


def _place(trt: Any, builder: Any, config: Any, recipe: Recipe) -> None:
    """DLA core + GPU fallback, version and hardware compatibility (the same on 10 and 11)."""
    if recipe.dla_core is not None:
        if builder.num_DLA_cores <= recipe.dla_core:
            raise ToolchainError(f"DLA core {recipe.dla_core} requested, this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = recipe.dla_core
        if recipe.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if recipe.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if recipe.hardware_compatibility == "ampere_plus":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS


def _make_calibrator(trt: Any, recipe: Recipe, recipe_dir: Path, card: ModelCard, cache_file: Path) -> Any:
    """TensorRT 10 only: an ``IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``) over the
    recipe's images, preprocessed with the model card, staged through one device buffer (cuda-python).
    The caller frees its device buffer with ``free()``."""
    from cuda.bindings import runtime as cudart

    from ..data import preprocess_all

    images = np.load(recipe_dir / recipe.calibration) if recipe.calibration else np.empty((0,))
    data = preprocess_all(card, images, "NCHW") if len(images) else np.empty((0,), np.float32)
    base = trt.IInt8EntropyCalibrator2 if recipe.calibrator == "entropy2" else trt.IInt8MinMaxCalibrator
    batch = recipe.calibration_batch
    nbytes = int(np.prod((batch, *data.shape[1:]))) * 4 if len(data) else 4

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.position = 0
            err, self.device_ptr = cudart.cudaMalloc(nbytes)
            if int(err) != 0:
                raise ToolchainError(f"cudaMalloc({nbytes}) failed: {err}")

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.position + batch > len(data):
                return None
            chunk = np.ascontiguousarray(data[self.position : self.position + batch], dtype=np.float32)
            self.position += batch
            (err,) = cudart.cudaMemcpy(
                self.device_ptr, chunk.ctypes.data, chunk.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            )
            if int(err) != 0:
                raise ToolchainError(f"cudaMemcpy failed: {err}")
            return [int(self.device_ptr)]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_bytes(bytes(cache))

        def free(self) -> None:
            if self.device_ptr:
                cudart.cudaFree(self.device_ptr)
                self.device_ptr = 0

    return Calibrator()
