"""TensorRT: a build recipe compiled here, the engine built on the device (TensorRT 10 or 11).

Engines are specific to a GPU and a TensorRT version, so :func:`compile` writes no engine: it
writes a :class:`Recipe` (the ONNX model, precision, min/opt/max shape per dynamic input,
workspace limit, DLA core + GPU fallback, INT8 calibrator and calibration images, and the typed
ONNX a strongly typed build needs: FP16, or INT8 with explicit Q/DQ) into the bundle. On the device
``edgeds engine build`` calls :func:`ensure_engine`, which computes the device fingerprint (model
sha256, TensorRT version, GPU compute capability, JetPack/L4T, precision, shape profile, DLA core),
returns the cached engine for it or builds one with :func:`build_engine` and stores it, with a
per-device timing cache and (INT8 on TensorRT 10) calibration cache.

The builder API follows the installed TensorRT (:mod:`.tensorrt_api`; the builder is
:mod:`.tensorrt_build`). Only the builder and :func:`DeviceFacts.detect` import ``tensorrt`` /
``cuda``; the recipe, fingerprint and cache layout are plain Python and tested everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...backends.base import Artifact, Availability, BackendOptions, Precision, TensorDict
from ...errors import BackendUnavailable, CompileError, ToolchainError, UnsupportedPrecision
from . import package_version

if TYPE_CHECKING:
    from ...modelcard import ModelCard

SUPPORTS_MIXED = False
DEFERRED_GATE = True
MULTI_INPUT = False  # takes the image input only (a card's extra_inputs are not fed)
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
RECIPE_FILE = "recipe.json"
L4T_RELEASE = Path("/etc/nv_tegra_release")


class ShapeProfile(BaseModel):
    """min/opt/max shape of one input for the optimization profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


class Recipe(BaseModel):
    """How to build the engine on the device; paths are relative to the recipe's directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    onnx: str
    onnx_sha256: str
    precision: Precision
    inputs: tuple[ShapeProfile, ...]
    workspace_mb: int = Field(ge=16)
    dla_core: int | None = None
    gpu_fallback: bool = True
    builder_optimization_level: int = Field(default=3, ge=0, le=5)
    calibrator: Literal["entropy2", "minmax"] = "entropy2"
    calibration: str | None = Field(default=None, description="uint8 [N,H,W,3] RGB images (.npy)")
    calibration_cache: str | None = None
    calibration_batch: int = Field(default=8, ge=1)
    version_compatible: bool = False
    hardware_compatibility: Literal["none", "ampere_plus"] = "none"
    qdq_onnx: str | None = Field(default=None, description="INT8 with explicit Q/DQ: what TensorRT 11 builds")
    fp16_onnx: str | None = Field(default=None, description="FP16 with FP32 I/O: what TensorRT 11 builds")

    def shape_key(self) -> str:
        return ";".join(f"{p.name}:{p.min}/{p.opt}/{p.max}" for p in self.inputs)


@dataclass(frozen=True)
class DeviceFacts:
    """What an engine is specific to, besides the recipe."""

    tensorrt_version: str
    compute_capability: str  # "8.7"
    l4t: str | None  # "36.4.0" on Jetson, None elsewhere
    gpu_name: str = ""

    @classmethod
    def detect(cls, device: int = 0) -> DeviceFacts:
        """Facts of this machine's GPU ``device`` (needs tensorrt and cuda-python)."""
        try:
            import tensorrt as trt
            from cuda.bindings import runtime as cudart
        except ImportError as exc:
            raise BackendUnavailable(
                "tensorrt", str(exc), "pip install 'edgeds[tensorrt]' (on a device with an NVIDIA GPU)"
            ) from exc
        err, props = cudart.cudaGetDeviceProperties(device)
        if int(err) != 0:
            raise BackendUnavailable("tensorrt", f"cudaGetDeviceProperties failed ({err})", "check the CUDA driver")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return cls(trt.__version__, f"{props.major}.{props.minor}", read_l4t(), name.strip("\x00 "))


def parse_l4t(text: str) -> str | None:
    """``36.4.0`` from ``/etc/nv_tegra_release`` ("# R36 (release), REVISION: 4.0, ...")."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def read_l4t(path: Path = L4T_RELEASE) -> str | None:
    try:
        return parse_l4t(path.read_text(errors="replace"))
    except OSError:
        return None


def device_fingerprint(recipe: Recipe, facts: DeviceFacts) -> str:
    """Hex sha256 keying an engine: model, TensorRT version, GPU, L4T, precision, shapes, DLA core, flags."""
    parts = {
        "onnx_sha256": recipe.onnx_sha256,
        "tensorrt": facts.tensorrt_version,
        "compute_capability": facts.compute_capability,
        "l4t": facts.l4t,
        "precision": recipe.precision,
        "shapes": recipe.shape_key(),
        "dla_core": recipe.dla_core,
        "gpu_fallback": recipe.gpu_fallback,
        "workspace_mb": recipe.workspace_mb,
        "opt_level": recipe.builder_optimization_level,
        "calibrator": recipe.calibrator if recipe.precision == "int8" else None,
        "version_compatible": recipe.version_compatible,
        "hardware_compatibility": recipe.hardware_compatibility,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def timing_cache_key(facts: DeviceFacts) -> str:
    """Timing caches are shared by every model on one GPU + TensorRT version (+ L4T)."""
    text = f"{facts.tensorrt_version}|{facts.compute_capability}|{facts.l4t}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EnginePaths:
    engine: Path
    timing_cache: Path
    calibration_cache: Path
    info: Path


def engine_paths(cache_root: Path, recipe: Recipe, facts: DeviceFacts) -> EnginePaths:
    """Where the engine for ``recipe`` on this device lives under ``cache_root``."""
    key = device_fingerprint(recipe, facts)
    base = cache_root / "engines" / key[:2] / key
    calib_key = hashlib.sha256(f"{recipe.onnx_sha256}|{recipe.calibrator}|{recipe.shape_key()}".encode()).hexdigest()
    return EnginePaths(
        engine=base / "model.plan",
        timing_cache=cache_root / "timing" / f"{timing_cache_key(facts)}.cache",
        calibration_cache=cache_root / "calibration" / f"{calib_key[:32]}.cache",
        info=base / "engine.json",
    )


def load_recipe(path: Path) -> Recipe:
    try:
        return Recipe.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ToolchainError(f"{path} is not a TensorRT build recipe: {exc}") from exc


# --------------------------------------------------------------------------- compile (here)


def available() -> Availability:
    """Recipes need only the ONNX file: compiling for TensorRT works on any machine."""
    return Availability("tensorrt", True, version="recipe (engine built on the device)")


def tool_versions() -> dict[str, str]:
    versions = {"recipe_schema": "1"}
    trt = package_version("tensorrt")
    if trt:
        versions["tensorrt"] = trt
    return versions


def shape_profiles(model: Path, max_batch: int, opt_batch: int) -> tuple[ShapeProfile, ...]:
    """min/opt/max per input: batch 1 / ``opt_batch`` / ``max_batch`` for a dynamic batch dim; a
    fixed batch N is N for all three (the engine then runs at N only)."""
    from ..onnxmodel import inspect_model

    profiles = []
    for spec in inspect_model(model).inputs:
        if any(d < 0 for d in spec.shape[1:]):
            raise CompileError(f"input {spec.name!r} has dynamic non-batch dims {spec.shape}: give static shapes")
        rest = tuple(spec.shape[1:])
        if spec.shape[0] >= 1:
            fixed = (spec.shape[0], *rest)
            profiles.append(ShapeProfile(name=spec.name, min=fixed, opt=fixed, max=fixed))
            continue
        profiles.append(ShapeProfile(name=spec.name, min=(1, *rest), opt=(opt_batch, *rest), max=(max_batch, *rest)))
    return tuple(profiles)


def check_precision(options: BackendOptions, precision: Precision) -> None:
    """:class:`UnsupportedPrecision` when these options cannot run ``precision`` (a DLA core needs FP16/INT8)."""
    if getattr(options, "dla_core", None) is not None and precision == "fp32":
        raise UnsupportedPrecision("a DLA core runs FP16 or INT8 only; use precision fp16/int8 or dla_core: null")


def compile(
    options: BackendOptions,
    model: Path,
    card: ModelCard,
    calib: Iterable[TensorDict],
    out: Path,
    precision: Precision = "fp32",
    *,
    exclude_nodes: Sequence[str] = (),
    calibration_images: np.ndarray | None = None,
    max_batch: int = 16,
    opt_batch: int | None = None,
) -> Artifact:
    """Write ``out/recipe.json`` + ``out/model.onnx``, and for INT8 ``out/calibration.npy`` (the
    TensorRT 10 calibrator's images) + ``out/model.qdq.onnx`` (explicit Q/DQ calibrated here with the
    same images, for TensorRT 11), for FP16 ``out/model.fp16.onnx`` (for TensorRT 11)."""
    from ...hashing import sha256_file
    from . import tensorrt_onnx

    if precision not in PRECISIONS:
        raise UnsupportedPrecision(f"tensorrt cannot build {precision!r} (supported: {', '.join(PRECISIONS)})")
    if exclude_nodes:
        raise UnsupportedPrecision("tensorrt recipes do not keep single nodes in float here")
    check_precision(options, precision)
    dla = getattr(options, "dla_core", None)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, out / "model.onnx")
    files = [out / "model.onnx"]
    shapes = shape_profiles(model, max_batch, opt_batch or max(1, max_batch // 2))
    fixed_batch = bool(shapes) and shapes[0].min == shapes[0].max
    # a fixed batch N (min = max) calibrates in batches of N: the only shape the network takes
    fixed = {"calibration_batch": shapes[0].opt[0]} if fixed_batch else {}
    calibration = qdq = fp16 = None
    if precision == "int8":
        if calibration_images is None:
            from ..data import load_images

            calibration_images = load_images(card, "calibration").images
        if len(calibration_images) == 0:
            raise CompileError("TensorRT INT8 needs calibration images")
        np.save(out / "calibration.npy", np.ascontiguousarray(calibration_images, dtype=np.uint8))
        files.append(out / "calibration.npy")
        calibration = "calibration.npy"
        batch = fixed.get("calibration_batch", Recipe.model_fields["calibration_batch"].default)
        tensorrt_onnx.write_qdq_onnx(
            model, out / "model.qdq.onnx", card, calibration_images, shapes[0].name, batch, fixed_batch
        )
        files.append(out / "model.qdq.onnx")
        qdq = "model.qdq.onnx"
    elif precision == "fp16":
        tensorrt_onnx.write_fp16_onnx(model, out / "model.fp16.onnx")
        files.append(out / "model.fp16.onnx")
        fp16 = "model.fp16.onnx"
    recipe = Recipe(
        onnx="model.onnx",
        onnx_sha256=sha256_file(model),
        precision=precision,
        inputs=shapes,
        workspace_mb=int(getattr(options, "workspace_mb", 1024)),
        dla_core=dla,
        gpu_fallback=bool(getattr(options, "gpu_fallback", True)),
        builder_optimization_level=int(getattr(options, "builder_optimization_level", 3)),
        calibrator=getattr(options, "calibrator", "entropy2"),
        calibration=calibration,
        version_compatible=bool(getattr(options, "version_compatible", False)),
        hardware_compatibility=getattr(options, "hardware_compatibility", "none"),
        qdq_onnx=qdq,
        fp16_onnx=fp16,
        **fixed,
    )
    (out / RECIPE_FILE).write_text(recipe.model_dump_json(indent=2))
    files.insert(0, out / RECIPE_FILE)
    return Artifact(
        "tensorrt",
        precision,
        out / RECIPE_FILE,
        tuple(files),
        layout="NCHW",
        metadata={"recipe": recipe.model_dump(mode="json")},
    )


# --------------------------------------------------------------------------- build (on the device)


EngineBuilder = Callable[["Recipe", Path, "ModelCard", EnginePaths], bytes]
"""Builds the plan bytes for a recipe (:func:`build_engine` on a device with TensorRT)."""


def recipe_engine_paths(recipe_path: Path, cache_root: Path, facts: DeviceFacts) -> EnginePaths:
    """Where the engine of the recipe at ``recipe_path`` lives on the device ``facts`` describe: the
    one place both the device's build step and the runtime that opens the engine look."""
    return engine_paths(cache_root, load_recipe(recipe_path), facts)


def ensure_engine(
    recipe_path: Path,
    cache_root: Path,
    card: ModelCard,
    rebuild: bool = False,
    *,
    facts: DeviceFacts | None = None,
    builder: EngineBuilder | None = None,
) -> tuple[Path, bool]:
    """The engine for ``recipe_path`` on this device: ``(path, built_now)``. Builds when not cached.

    ``facts`` default to :meth:`DeviceFacts.detect` (needs TensorRT and a GPU) and ``builder`` to
    :func:`build_engine`; the engine is written atomically to :func:`recipe_engine_paths`.
    """
    recipe = load_recipe(recipe_path)
    facts = facts or DeviceFacts.detect()
    paths = engine_paths(cache_root, recipe, facts)
    if paths.engine.is_file() and not rebuild:
        return paths.engine, False
    plan = (builder or build_engine)(recipe, recipe_path.parent, card, paths)
    paths.engine.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.engine.with_suffix(".tmp")
    tmp.write_bytes(plan)
    os.replace(tmp, paths.engine)
    paths.info.write_text(json.dumps({"recipe": recipe.model_dump(mode="json"), "device": facts.__dict__}, indent=2))
    return paths.engine, True


def default_cache_root() -> Path:
    """The engine cache used when none is named: ``<cache dir>/tensorrt`` (see :func:`edgeds.paths.cache_dir`)."""
    from ...paths import cache_dir

    return cache_dir() / "tensorrt"


def ensure_bundle_engine(
    bundle: Path, key: Path | None = None, cache_root: Path | None = None, rebuild: bool = False
) -> tuple[Path, bool]:
    """:func:`ensure_engine` for the recipe of the bundle at ``bundle`` (directory or .tar).

    The bundle is verified first (its signature too when the public ``key`` is given); one that
    is not a TensorRT bundle with a recipe raises :class:`~edgeds.errors.BundleError`. The engine
    is cached under ``cache_root`` (default :func:`default_cache_root`), not in the bundle.
    """
    from ...bundle import load_bundle
    from ...errors import BundleError

    with load_bundle(bundle, key) as loaded:
        if loaded.manifest.backend != "tensorrt" or loaded.manifest.recipe is None:
            raise BundleError(f"{bundle} is a {loaded.manifest.backend} bundle without a TensorRT recipe")
        return ensure_engine(loaded.artifact_path, cache_root or default_cache_root(), loaded.card, rebuild=rebuild)


def build_engine(recipe: Recipe, recipe_dir: Path, card: ModelCard, paths: EnginePaths) -> bytes:
    """Build and serialize the engine with the installed TensorRT's builder API (10 or 11, see
    :mod:`.tensorrt_build`); returns the plan bytes."""
    from .tensorrt_build import build_engine as build

    return build(recipe, recipe_dir, card, paths)
