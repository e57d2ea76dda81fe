"""``compile_model``: walk a profile's backend chain, gate every candidate, write a bundle.

For each entry ``(backend, precision, options)`` of the chain, in order: skip the backend when its
toolchain or runtime is not available here (the report says why); otherwise try the asked
precision and, when it fails the accuracy gate, fall back: INT8 -> INT8 with the most
sensitive nodes kept in float (per-node error scan, two rounds) -> FP16 (if the profile's
hardware does FP16) -> FP32. The first candidate of an entry that passes is its artifact.

What depends on the device is not tried here (:mod:`edgeds.compile.device_choices`): an OpenVINO
IR is gated on the CPU plugin whatever device string the entry names, a ``.tflite`` on XNNPACK
whatever delegate, and a TensorRT recipe is not gated at all (``deferred``: the device builds
the engine and checks the golden outputs). The bundle carries the chain's artifacts in order,
each saying where it was gated and what the device resolves, up to and including the first one
gated here exactly as it runs (later entries could never be opened); the device opens the first
that works there (:mod:`edgeds.runtime.selection`). Entries whose gate would be the same run
(one IR for ``HETERO:GPU,CPU`` and ``CPU``) share one artifact. An entry marked ``require``
that produces no artifact fails the compile. The report says in one line when the bundle's
first artifact is not the profile's first choice, and why.

Before any data is loaded or any toolchain runs, the model's fit to its card and the profile is
checked (:func:`edgeds.compile.fit.check_fit`). A model whose batch is fixed at N is fed batches
of exactly N throughout (evaluation and reference padded, calibration filled up with real
samples), opened with the one bucket N, and its bundle records ``fixed_batch`` and a batching
held to N.

Every attempt is cached (see :mod:`edgeds.compile.cache`): a second identical compile opens no
toolchain and runs no inference. ``progress(task, done, total)`` is called while calibrating,
converting and evaluating.

A candidate that cannot be compiled or run (:class:`CompileError`, :class:`BackendError`) does
not stop the chain: the report records it (``skipped``/``error`` with the reason whole, on one
line) and the module's logger records it at INFO with the traceback; the next candidate is
tried. Any other exception is a bug and propagates.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

from .. import backends
from .._version import __version__
from ..backends.base import Artifact, BackendOptions, Precision
from ..bundle import build_bundle, load_private_key
from ..card_lookup import card_path
from ..config import Profile, load_profile
from ..errors import (
    AccuracyGateFailed,
    BackendError,
    CompileError,
    ConfigError,
    ToolchainError,
    UnsupportedPrecision,
    one_line,
)
from ..manifest import GOLDEN_EXTRA_INPUTS, fixed_batching
from ..modelcard import LMCard, ModelCard, describes_other, load_card, model_card_for
from . import data as data_mod
from . import output, toolchains
from .cache import CompileCache, cache_key
from .detection_head import decode_tail
from .device_choices import GatePlan, gate_device, plan_gate
from .fit import check_fit
from .gates import Figures, tensor_gate_for
from .gates.image import Outputs, run_batches
from .onnxmodel import ModelInfo, inspect_model
from .report import Attempt, CompileReport, CompileResult

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
CACHE_FORMAT = 1
GOLDEN_COUNT = 8
EVAL_BATCH = 16
CALIB_BATCH = 8
SCAN_SAMPLES = 32
MIXED_FRACTIONS = (0.1, 0.3)


def _no_progress(task: str, done: int, total: int | None) -> None:
    return None


@dataclass
class _Candidate:
    """An evaluated artifact living in ``root`` (a cache entry or a work dir)."""

    root: Path
    artifact: Path
    files: list[Path]
    layout: str
    metadata: dict[str, Any]
    gate: Figures | None
    golden_outputs: Outputs
    cached: bool


def _golden_tolerance(precision: str, reference: Outputs) -> tuple[float, float, float]:
    """``(atol, rtol, min_cosine)`` for the device's conformance check against this artifact."""
    span = max((float(np.abs(v).max(initial=0.0)) for v in reference.values()), default=1.0)
    if precision == "fp32":
        return max(1e-4, 1e-3 * span), 1e-3, 0.9999
    if precision == "fp16":
        return max(1e-3, 2e-2 * span), 2e-2, 0.999
    return max(1e-2, 5e-2 * span), 5e-2, 0.99


def _fallback_plan(precision: Precision, hardware: tuple[Precision, ...], tc: ModuleType) -> list[str]:
    plan: list[str] = [precision]
    if precision == "int8":
        if tc.SUPPORTS_MIXED:
            plan += [f"int8-mixed-{i}" for i in range(len(MIXED_FRACTIONS))]
        if "fp16" in tc.PRECISIONS and "fp16" in hardware:
            plan.append("fp16")
        plan.append("fp32")
    elif precision == "fp16":
        plan.append("fp32")
    return plan


@dataclass(frozen=True)
class _Entry:
    """One profile backend entry as compiled: ``index`` in the chain, runtime, precision asked,
    options (settled for the hardware), how it is gated here, and whether the device must open it."""

    index: int
    name: str
    precision: Precision
    options: BackendOptions
    plan: GatePlan
    require: bool


@dataclass(frozen=True)
class _Shipped:
    """An entry's artifact that goes into the bundle: the candidate that passed (or was deferred),
    at ``precision``, with the entry's own options (the device's choices) and its gate plan."""

    entry: _Entry
    candidate: _Candidate
    precision: Precision
    options: BackendOptions

    @property
    def plan(self) -> GatePlan:
        return self.entry.plan

    @property
    def plan_name(self) -> str:
        return self.entry.name


def _runtime_options(tc: ModuleType, options: BackendOptions, precision: Precision) -> BackendOptions:
    """``options`` as the runtime must run an artifact of ``precision`` (e.g. OpenVINO FP32 held to f32)."""
    settle: Callable[[BackendOptions, Precision], BackendOptions] | None = getattr(tc, "runtime_options", None)
    return settle(options, precision) if settle is not None else options


def _why(attempt: Attempt) -> str:
    return f"{attempt.backend}/{attempt.variant}: {attempt.outcome} ({attempt.reason})"


def first_choice_note(first: _Entry, shipped: _Shipped, report: CompileReport) -> str | None:
    """One line when the bundle's first artifact is not what the profile's first entry asked for
    (another runtime, or another precision), saying why; None when it is."""
    if shipped.entry.index == first.index and shipped.precision == first.precision:
        return None
    why = "; ".join(_why(a) for a in report.attempts if a.entry == first.index and a.outcome != "passed")
    return (
        f"not the profile's first choice ({first.name} {first.precision}): the bundle serves "
        f"{shipped.entry.name} {shipped.precision} first because {why or 'it did not pass'}"
    )


def _compile_entry(
    entry: _Entry,
    compiler: _Compiler,
    report: CompileReport,
    hardware: tuple[Precision, ...],
    tried: dict[str, tuple[_Candidate | None, Attempt]],
    card: ModelCard,
) -> _Shipped | None:
    """Try ``entry`` at its precision and the fallback precisions; record every attempt in ``report``.

    Returns the first candidate that passes the gate (or is deferred to the device), else None.
    A gate run with the same runtime, options and variant as an earlier entry's (an OpenVINO IR
    gated on CPU for both ``HETERO:GPU,CPU`` and ``CPU``) is not run again: ``tried`` holds it."""
    name, options = entry.name, entry.plan.gate_options
    tc = toolchains.module(name)
    device = gate_device(name, options) if name in ("openvino", "litert") else None
    why = _unavailable(name, tc)
    if why is None and card.extra_inputs and not getattr(tc, "MULTI_INPUT", False):
        why = (
            f"{name} takes one image input, and a generic model's tensor inputs are not fed to it"
            if card.task == "generic"
            else f"{name} takes the image input only, and this model has extra_inputs"
        )
    if why is not None:
        log.info("compile: %s skipped: %s", name, why)
        report.attempts.append(
            Attempt(name, entry.precision, entry.precision, "skipped", why, device=device, entry=entry.index)
        )
        return None
    int8_errored = False
    for variant in _fallback_plan(entry.precision, hardware, tc):
        prec: Precision = "int8" if variant.startswith("int8") else variant  # type: ignore[assignment]
        shown = "int8-mixed" if variant.startswith("int8-mixed") else variant
        if shown == "int8-mixed" and int8_errored:
            continue  # mixed precision cannot help when INT8 itself did not compile or run
        memo = cache_key({"name": name, "variant": variant, "options": options.model_dump(mode="json")})
        if memo in tried:
            cand_or_none, earlier = tried[memo]
            attempt = replace(
                earlier,
                seconds=0.0,
                cached=True,
                entry=entry.index,
                resolved_on_device=entry.plan.resolved_on_device,
                reason=earlier.reason or f"the artifact of backend {earlier.entry + 1}, gated once",
            )
            report.attempts.append(attempt)
            if attempt.outcome in ("passed", "deferred") and cand_or_none is not None:
                report.shipped.append(len(report.attempts) - 1)
                return _Shipped(entry, cand_or_none, prec, _runtime_options(tc, entry.options, prec))
            if attempt.outcome == "skipped":
                return None  # the toolchain failed for the earlier entry: it fails the same way here
            int8_errored = int8_errored or (attempt.outcome == "error" and variant == "int8")
            continue
        t0 = time.perf_counter()
        exclude: list[str] = []
        try:
            if variant.startswith("int8-mixed-"):
                exclude = compiler.mixed_exclusions(int(variant.rsplit("-", 1)[1]))
            vopts = _runtime_options(tc, options, prec)
            cand = compiler.attempt(name, vopts, prec, tc, exclude)
        except (CompileError, BackendError) as exc:
            # the report keeps the reason whole (one line); the traceback goes to the log
            log.info("compile: %s/%s failed, trying the next candidate", name, shown, exc_info=True)
            if isinstance(exc, ToolchainError):
                skipped = Attempt(name, prec, shown, "skipped", one_line(str(exc)), device=device, entry=entry.index)
                report.attempts.append(skipped)
                tried[memo] = (None, skipped)
                return None
            int8_errored = int8_errored or variant == "int8"
            errored = Attempt(
                name,
                prec,
                shown,
                "error",
                one_line(str(exc)),
                seconds=time.perf_counter() - t0,
                excluded_nodes=exclude,
                device=device,
                entry=entry.index,
            )
            report.attempts.append(errored)
            tried[memo] = (None, errored)
            continue
        attempt = Attempt(
            name,
            prec,
            shown,
            "passed",
            accuracy=cand.gate.as_dict() if cand.gate else None,
            size_bytes=_size(cand.files),
            seconds=time.perf_counter() - t0,
            cached=cand.cached,
            excluded_nodes=exclude,
            device=device,
            entry=entry.index,
            resolved_on_device=entry.plan.resolved_on_device,
        )
        if cand.gate is None:
            attempt.outcome = "deferred"
            attempt.reason = "built and checked on the device (golden outputs = FP32 reference)"
        elif not cand.gate.passed:
            attempt.outcome = "failed"
            attempt.reason = "; ".join(cand.gate.failures)
        if exclude and attempt.outcome != "failed":
            attempt.reason = f"{len(exclude)} most sensitive node(s) kept in float"
        elif exclude:
            attempt.reason = f"{len(exclude)} node(s) in float: {attempt.reason}"
        report.attempts.append(attempt)
        tried[memo] = (cand, attempt)
        if attempt.outcome in ("passed", "deferred"):
            report.shipped.append(len(report.attempts) - 1)
            return _Shipped(entry, cand, prec, _runtime_options(tc, entry.options, prec))
    return None


class _Compiler:
    def __init__(
        self,
        info: ModelInfo,
        card: ModelCard,
        profile: Profile,
        cache: CompileCache,
        progress: Progress,
        validation: data_mod.ImageSet,
        calibration: data_mod.ImageSet,
        work: Path,
        fixed_batch: int | None = None,
    ) -> None:
        self.info, self.card, self.profile, self.cache, self.progress = info, card, profile, cache, progress
        self.validation, self.calibration, self.work = validation, calibration, work
        # a model with a fixed batch N is fed batches of exactly N everywhere (padded, padding dropped)
        self.fixed_batch = fixed_batch
        self.eval_batch = fixed_batch or EVAL_BATCH
        self.golden_count = fixed_batch or GOLDEN_COUNT
        # what of the card shapes results (preprocessing, the output read, the tensor inputs): one
        # ONNX compiled with two cards (--card) must not share cached references or attempts
        shaping = card.model_dump(mode="json", include={"input", "output", "extra_inputs", "labels", "outputs"})
        self.card_key = hashlib.sha256(repr(sorted(shaping.items())).encode()).hexdigest()[:16]
        self._inputs: dict[str, np.ndarray] = {}
        self._calib: dict[str, list[dict[str, np.ndarray]]] = {}
        self._reference: Outputs | None = None
        self._scan: list[str] | None = None
        # a detection head's decode tail stays float in every INT8 variant (edgeds.compile.detection_head)
        self.float_tail = decode_tail(info.path, card.output.name) if card.task == "object-detection" else []

    # ---------------------------------------------------------------- data
    def inputs(self, layout: str) -> np.ndarray:
        """The preprocessed validation images in ``layout``; ``[N, 0]`` for a generic card (no image)."""
        if self.card.task == "generic":
            return np.zeros((len(self.validation), 0), dtype=np.float32)
        if layout not in self._inputs:
            self._inputs[layout] = data_mod.preprocess_all(self.card, self.validation.images, layout)
        return self._inputs[layout]

    def feeds(self, layout: str) -> dict[str, np.ndarray]:
        """Every validation input by name: the preprocessed images and the card's tensor inputs."""
        if self.card.task == "generic":
            return dict(self.validation.extra)
        return {self.card.input.name: self.inputs(layout), **self.validation.extra}

    def calib_batches(self, layout: str = "NCHW") -> list[dict[str, np.ndarray]]:
        """Preprocessed calibration batches (computed once per layout)."""
        if layout not in self._calib:
            self.progress("calibration data", 0, len(self.calibration))
            batches = data_mod.batches(
                self.card,
                self.calibration.images,
                batch=self.fixed_batch or CALIB_BATCH,
                layout=layout,
                exact=self.fixed_batch is not None,
                extra=self.calibration.extra,
            )
            self.progress("calibration data", len(self.calibration), len(self.calibration))
            self._calib[layout] = [dict(b) for b in batches]
        return self._calib[layout]

    def reference(self) -> Outputs:
        """FP32 outputs of the original model on the validation inputs (ONNX Runtime), cached."""
        if self._reference is not None:
            return self._reference
        versions = toolchains.module("onnxruntime").tool_versions()
        key = cache_key(
            {
                "kind": "reference",
                "f": CACHE_FORMAT,
                "model": self.info.sha256,
                "card": self.card_key,
                "validation": self.validation.fingerprint,
                "tools": versions,
            }
        )
        hit = self.cache.get(key)
        if hit is not None:
            self._reference = CompileCache.arrays(hit[0], "reference")
            return self._reference
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        session = ort.InferenceSession(str(self.info.path), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        feeds = self.feeds("NCHW")
        count = len(self.validation)
        step = self.eval_batch
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for start in range(0, count, step):
            chunk = {k: self.padded(v[start : start + step]) for k, v in feeds.items()}
            real = min(step, count - start)
            for name, value in zip(names, session.run(names, chunk), strict=True):
                parts[name].append(np.asarray(value[:real], dtype=np.float32))
            self.progress("FP32 reference", start + real, count)
        self._reference = {n: np.concatenate(p) for n, p in parts.items()}
        self.cache.put(key, self._empty(), {"kind": "reference"}, {"reference": self._reference})
        return self._reference

    def padded(self, chunk: np.ndarray) -> np.ndarray:
        """``chunk`` with zero rows appended up to the fixed batch (as is for a dynamic batch)."""
        if self.fixed_batch is None or len(chunk) == self.fixed_batch:
            return chunk
        pad = np.zeros((self.fixed_batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
        return np.concatenate([chunk, pad])

    # ---------------------------------------------------------------- mixed precision
    def sensitive_nodes(self) -> list[str]:
        """Nodes ranked by the error they add under INT8 (ORT QDQ scan), most sensitive first."""
        if self._scan is not None:
            return self._scan
        ort_tc = toolchains.module("onnxruntime")
        key = cache_key(
            {
                "kind": "scan",
                "f": CACHE_FORMAT,
                "model": self.info.sha256,
                "card": self.card_key,
                "calibration": self.calibration.fingerprint,
                "validation": self.validation.fingerprint,
                "tools": ort_tc.tool_versions(),
            }
        )
        hit = self.cache.get(key)
        if hit is not None:
            self._scan = [str(n) for n in hit[1]["nodes"]]
            return self._scan
        from . import sensitivity

        self.progress("per-node error scan", 0, 3)
        scan_dir = self.work / "scan"
        scan_dir.mkdir(exist_ok=True)
        pre = ort_tc.preprocess_for_quantization(self.info.path, scan_dir / "pre.onnx")
        quant = ort_tc.quantize_int8(pre, scan_dir / "qdq.onnx", self.calib_batches())
        self.progress("per-node error scan", 1, 3)
        # one session run over the scan samples: a fixed-batch model takes exactly its batch
        scan_rows = self.fixed_batch or SCAN_SAMPLES
        feeds = {k: self.padded(v[:scan_rows]) for k, v in self.feeds("NCHW").items()}
        errors = sensitivity.scan(pre, quant, feeds)
        self.progress("per-node error scan", 2, 3)
        self._scan = [e.node for e in errors]
        self.cache.put(
            key, self._empty(), {"kind": "scan", "nodes": self._scan, "errors": [e.__dict__ for e in errors]}, {}
        )
        self.progress("per-node error scan", 3, 3)
        return self._scan

    def _empty(self) -> Path:
        empty = self.work / "empty"
        empty.mkdir(exist_ok=True)
        return empty

    def mixed_exclusions(self, round_index: int) -> list[str]:
        from . import sensitivity

        ranked = self.sensitive_nodes()
        count = max(1, math.ceil(MIXED_FRACTIONS[round_index] * len(ranked)))
        pre = self.work / "scan" / "pre.onnx"
        if not pre.is_file():
            pre = toolchains.module("onnxruntime").preprocess_for_quantization(
                self.info.path, self._empty() / "pre.onnx"
            )
        return sensitivity.exclusion_set(pre, ranked[:count], set(ranked))

    # ---------------------------------------------------------------- one attempt
    def attempt(
        self, name: str, options: BackendOptions, precision: Precision, tc: ModuleType, exclude: list[str]
    ) -> _Candidate:
        if precision == "int8" and self.float_tail and tc.SUPPORTS_MIXED:
            # toolchains that cannot keep nodes in float quantize the tail too; the gate judges that
            exclude = list(dict.fromkeys([*self.float_tail, *exclude]))
        opts = options.model_dump(mode="json")
        key = cache_key(
            {
                "kind": "attempt",
                "f": CACHE_FORMAT,
                "model": self.info.sha256,
                "card": self.card_key,
                "backend": name,
                "options": opts,
                "precision": precision,
                "exclude": sorted(exclude),
                "tools": tc.tool_versions(),
                "toolchain_code": _source_hash(tc),
                "calibration": self.calibration.fingerprint if precision == "int8" else None,
                "validation": self.validation.fingerprint,
                "edgeds": __version__,
            }
        )
        hit = self.cache.get(key)
        if hit is not None:
            entry, meta = hit
            root = entry / "artifacts"
            gate_of = tensor_gate_for(self.card.task)
            cached_gate = gate_of.restore(meta["gate"], self.profile) if meta.get("gate") else None
            return _Candidate(
                root,
                root / meta["artifact"],
                [root / f for f in meta["files"]],
                meta["layout"],
                meta["metadata"],
                cached_gate,
                CompileCache.arrays(entry, "golden"),
                True,
            )
        out = Path(tempfile.mkdtemp(prefix=f"{name}-{precision}-", dir=self.work))
        # every toolchain gets the calibration batches: litert converts all precisions in one calibrated run
        calib = self.calib_batches("NCHW") if len(self.calibration) and not tc.DEFERRED_GATE else []
        if tc.DEFERRED_GATE:
            artifact = tc.compile(
                options,
                self.info.path,
                self.card,
                calib,
                out,
                precision,
                exclude_nodes=exclude,
                calibration_images=self.calibration.images,
                max_batch=self.fixed_batch or self.profile.batching.max_batch_size,
                opt_batch=self.fixed_batch
                or max(self.profile.batching.preferred_batch_sizes or (self.profile.batching.max_batch_size,)),
            )
        else:
            self.progress(f"converting {name} {precision}", 0, 1)
            artifact = tc.compile(options, self.info.path, self.card, calib, out, precision, exclude_nodes=exclude)
            self.progress(f"converting {name} {precision}", 1, 1)
        gate: Figures | None
        if tc.DEFERRED_GATE:
            gate = None
            golden = {k: v[: self.golden_count] for k, v in self.reference().items()}
        else:
            outputs = self.run_candidate(name, options, artifact, tc)
            gate = tensor_gate_for(self.card.task).evaluate(
                self.reference(), outputs, self.validation, self.card, self.profile
            )
            golden = {k: v[: self.golden_count] for k, v in outputs.items()}
        rel_files = [str(p.relative_to(out)) for p in artifact.files]
        meta = {
            "artifact": str(artifact.path.relative_to(out)),
            "files": rel_files,
            "layout": artifact.layout,
            "metadata": {k: v for k, v in artifact.metadata.items() if k != "preprocessed_model"},
            "gate": gate.as_dict() if gate else None,
            "precision": precision,
        }
        stored = self.cache.put(key, out, meta, {"golden": golden})
        root = stored / "artifacts" if self.cache.enabled else out
        return _Candidate(
            root,
            root / meta["artifact"],
            [root / f for f in rel_files],
            artifact.layout,
            meta["metadata"],
            gate,
            golden,
            False,
        )

    def run_candidate(self, name: str, options: BackendOptions, artifact: Artifact, tc: ModuleType) -> Outputs:
        """Outputs of ``artifact`` on the validation inputs through the backend's own runtime."""
        x = self.inputs(artifact.layout)
        task = f"evaluating {name} {artifact.precision}"

        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            self.progress(task, done[0], len(x))

        with backends.create(name, options) as backend:
            spec = backend.open(artifact.path, buckets=(self.eval_batch,))
            if self.card.extra_inputs:
                feeds: np.ndarray | dict[str, np.ndarray] = self.feeds(artifact.layout)
                input_name = self.card.input_names[0]
            else:  # converters may rename a single input
                feeds = x
                input_name = spec.inputs[0].name if spec.inputs else self.card.input.name
            return self._align(run_batches(backend, feeds, input_name, self.eval_batch, advance))

    def _align(self, outputs: Outputs) -> Outputs:
        """Key outputs by the ONNX model's output names (converters rename them; order is kept)."""
        names = [o.name for o in self.info.outputs]
        if set(outputs) == set(names) or len(outputs) != len(names):
            return outputs
        return {name: value for name, value in zip(names, outputs.values(), strict=True)}


def _source_hash(module: ModuleType) -> str:
    """Hash of a toolchain module's source: changing how edgeds compiles invalidates the cache."""
    path = Path(str(module.__file__))
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files if f.is_file())


def compile_model(
    model: str | Path,
    profile: str | Path | Profile,
    *,
    precision: str | None = None,
    out: str | Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    key: str | Path | None = None,
    version: int | None = None,
    valid_days: float | None = None,
    calibration_images: np.ndarray | None = None,
    validation_limit: int | None = None,
    calibration_limit: int | None = None,
    cache_root: Path | None = None,
    card: str | Path | None = None,
) -> CompileResult:
    """Compile ``model`` for ``profile`` and write a bundle to ``out``.

    ``model`` is an ONNX file with its model card beside it, or a model directory / card file: a
    ``causal-lm`` card goes through :func:`edgeds.compile.lm_pipeline.compile_lm` (its LM runtime
    chain and quality gate; ``validation_limit`` limits its evaluation prompts, ``precision`` may
    also be int4), an image card's ONNX model through the steps below.

    An ONNX file's card is ``<stem>.yaml`` beside it, else the one card whose ``model:`` names it
    (:func:`edgeds.card_lookup.card_path`); a card that names another file is refused. ``card``
    (a card YAML or its directory) names the card explicitly: then the ONNX ``model`` is compiled
    even when the card's ``model:`` names another file, and the report and manifest record both.

    ``precision`` overrides the profile's (and every chain entry's). ``key`` signs the bundle
    (ed25519 private key file); devices refuse it ``valid_days`` after now when given.
    ``calibration_images`` (uint8 [N,H,W,3]) replace the card's
    calibration split; ``validation_limit`` / ``calibration_limit`` use only the first N
    images of the splits. Raises :class:`InvalidModel`, :class:`ConfigError` (profile, unknown
    backend), :class:`UnsupportedPrecision`, :class:`DatasetError` (missing data) and
    :class:`AccuracyGateFailed` (with ``.report``) when no candidate passes.
    """
    started = time.perf_counter()
    progress = progress or _no_progress
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if out is not None:
        output.check_out(Path(out))
    given = Path(model)
    if given.is_dir() or given.suffix in (".yaml", ".yml"):
        if card is not None:
            raise ConfigError.single(
                None,
                None,
                "--card",
                f"{given} is a card or model directory already: pass the ONNX file with --card, or drop --card",
            )
        any_card = load_card(given)
        if isinstance(any_card, LMCard):
            from .lm_pipeline import compile_lm

            return compile_lm(
                any_card,
                card_path(given),
                prof,
                precision=precision,
                out=out,
                use_cache=use_cache,
                progress=progress,
                key=key,
                version=version,
                valid_days=valid_days,
                evaluation_limit=validation_limit,
                cache_root=cache_root,
            )
        model = any_card.model_path
    if precision is not None and precision not in ("fp32", "fp16", "int8"):
        raise UnsupportedPrecision(f"an image model compiles to fp32, fp16 or int8, not {precision!r}")
    info = inspect_model(model)
    image_card, card_file = model_card_for(info.path, card)
    fit = check_fit(info, image_card, prof)  # before any data is loaded or any toolchain runs
    chain = prof.chain()
    hardware = prof.hardware.precisions
    if precision is not None and precision not in hardware:
        raise UnsupportedPrecision(
            f"profile {prof.name!r} hardware does not do {precision} (it lists {', '.join(hardware)})"
        )
    plan: list[_Entry] = []
    for index, ((name, entry_precision, options), link) in enumerate(zip(chain, prof.backends, strict=True)):
        want = cast("Precision", precision) or entry_precision
        supported = toolchains.module(name).PRECISIONS
        if want not in supported:
            raise UnsupportedPrecision(f"backend {name!r} cannot compile {want} (supported: {', '.join(supported)})")
        check = getattr(toolchains.module(name), "check_precision", None)
        if check is not None:
            check(options, want)
        # choices a toolchain leaves to the target's hardware class are settled from the profile here,
        # so the cache key and the bundle record the value used
        settle = getattr(toolchains.module(name), "for_hardware", None)
        settled = settle(options, prof.hardware) if settle is not None else options
        plan.append(_Entry(index, name, want, settled, plan_gate(name, settled), link.require))
    needs_int8 = any(e.precision == "int8" for e in plan)
    validation = data_mod.with_extra_inputs(
        image_card, data_mod.load_images(image_card, "validation", validation_limit), "validation"
    )
    if calibration_images is not None:
        calibration = data_mod.custom_images(calibration_images)
    elif needs_int8:
        calibration = data_mod.load_images(image_card, "calibration", calibration_limit)
    else:
        calibration = data_mod.ImageSet(validation.images[:0], validation.labels[:0], "none")
    calibration = data_mod.with_extra_inputs(image_card, calibration, "calibration")
    if needs_int8 and len(calibration) == 0:
        raise CompileError("INT8 needs calibration data")
    cache = CompileCache(cache_root, enabled=use_cache)
    report = CompileReport(str(info.path), info.sha256, prof.name, len(validation), len(calibration))
    report.task = image_card.task
    report.notes.extend(fit.notes)
    report.card = str(card_file)
    other = describes_other(image_card, info.path)
    if other:
        report.notes.append(f"card {card_file.name} describes {image_card.model}; compiled {info.path.name} (--card)")
    out_path = Path(out) if out is not None else output.default_out(image_card.name, image_card.version, prof.name)
    private = load_private_key(key) if key is not None else None

    with tempfile.TemporaryDirectory(prefix="edgeds-compile-") as tmp:
        compiler = _Compiler(info, image_card, prof, cache, progress, validation, calibration, Path(tmp), fit.batch)
        if compiler.float_tail and needs_int8:
            report.notes.append(
                f"INT8 keeps the detection head's decode in float ({len(compiler.float_tail)} nodes) where the "
                "toolchain can keep nodes in float (onnxruntime, openvino); litert and tensorrt quantize it too"
            )
        shipped: list[_Shipped] = []
        tried: dict[str, tuple[_Candidate | None, Attempt]] = {}  # the same gate run twice is run once
        for position, entry in enumerate(plan):
            found = _compile_entry(entry, compiler, report, hardware, tried, image_card)
            if found is not None:
                shipped.append(found)
                exact = found.plan.resolved_on_device is None and found.candidate.gate is not None
                if exact and not any(later.require for later in plan[position + 1 :]):
                    break  # gated here exactly as it runs: later entries would never be opened
            elif entry.require:
                failed = AccuracyGateFailed(
                    f"the profile requires {entry.name} (backend {entry.index + 1}, require: true) and it produced "
                    "no artifact: " + "; ".join(_why(a) for a in report.attempts if a.entry == entry.index)
                )
                failed.report = report  # type: ignore[attr-defined]
                raise failed
        if report.attempts and compiler._reference is not None and image_card.task == "image-classification":
            report.reference_top1 = float(
                (compiler._reference[image_card.output.name].argmax(axis=1) == validation.labels).mean()
            )
        report.seconds = time.perf_counter() - started
        if not shipped:
            error = AccuracyGateFailed(
                f"no backend of profile {prof.name!r} produced an artifact that passes the accuracy budget: "
                + "; ".join(_why(a) for a in report.attempts)
            )
            error.report = report  # type: ignore[attr-defined]
            raise error
        report.selected = report.shipped[0]
        report.first_choice = first_choice_note(plan[0], shipped[0], report)
        output.prepare_out(out_path)
        expires_at = output.expires_at(valid_days)
        _write_bundle(
            out_path,
            info,
            image_card,
            card_file,
            prof,
            shipped,
            compiler,
            report,
            private,
            version,
            expires_at,
            source=other,
        )
    report.seconds = time.perf_counter() - started
    first = shipped[0]
    return CompileResult(out_path, report, first.plan_name, first.precision, private is not None)


def _unavailable(name: str, tc: ModuleType) -> str | None:
    """Why ``name`` cannot be compiled and gated here, or None."""
    avail = tc.available()
    if not avail.available:
        return f"toolchain not available: {avail.reason}" + (f" ({avail.hint})" if avail.hint else "")
    if tc.DEFERRED_GATE:
        return None
    runtime = backends.probe(name)
    if not runtime.available:
        return f"runtime not available here to run the accuracy gate: {runtime.reason}"
    return None


def _write_bundle(
    out: Path,
    info: ModelInfo,
    card: ModelCard,
    card_file: Path,
    prof: Profile,
    shipped: list[_Shipped],
    compiler: _Compiler,
    report: CompileReport,
    private: Any,
    version: int | None,
    expires_at: str | None = None,
    *,
    source: bool = False,
) -> None:
    """Write the bundle: one manifest artifact per shipped entry, in chain order. Entries that share
    a candidate (one IR for two OpenVINO device strings) share its files; with more than one distinct
    candidate each gets a directory ``artifacts/<n>-<runtime>-<precision>/`` and, after the first,
    its own golden (``golden/<that directory>/``: its inputs in its layout, its outputs).
    ``source``: the card's ``model:`` names another file than the ONNX compiled (an explicit
    ``--card``); the manifest's ``model.source`` then records both."""
    first = shipped[0]
    distinct: list[_Candidate] = []
    for item in shipped:
        if all(item.candidate is not c for c in distinct):
            distinct.append(item.candidate)
    prefixes = {id(c): "" for c in distinct}
    if len(distinct) > 1:
        for n, item in enumerate(shipped):
            if prefixes[id(item.candidate)] == "":
                prefixes[id(item.candidate)] = f"{n + 1}-{item.entry.name}-{item.precision}/"
    artifacts: dict[str, Path] = {}
    for cand in distinct:
        artifacts.update({prefixes[id(cand)] + str(f.relative_to(cand.root)): f for f in cand.files})
    golden_extra = {k: v[: compiler.golden_count] for k, v in compiler.validation.extra.items()}
    cand = first.candidate
    atol, rtol, min_cos = _golden_tolerance(first.precision, cand.golden_outputs)
    files: dict[str, Path | bytes] = {GOLDEN_EXTRA_INPUTS: _npz_bytes(golden_extra)} if golden_extra else {}
    entries = []
    for item in shipped:
        c = item.candidate
        gate = c.gate
        entry: dict[str, Any] = {
            "runtime": item.entry.name,
            "precision": item.precision,
            "path": prefixes[id(c)] + str(c.artifact.relative_to(c.root)),
            "options": item.options.model_dump(mode="json"),
            "device": getattr(item.options, "device", None)
            if item.entry.name == "openvino"
            else c.metadata.get("device"),
            "recipe": c.metadata.get("recipe"),
            "gated": (
                {
                    "where": "compile-host",
                    "device": gate_device(item.entry.name, item.plan.gate_options),
                    "figures": gate.as_dict(),
                }
                if gate
                else {"where": "device", "figures": {}}
            ),
            "require": item.entry.require,
            "resolved_on_device": item.plan.resolved_on_device,
            "io_quantization": c.metadata.get("io_quantization"),
        }
        if c.layout != cand.layout:
            entry["layout"] = c.layout
        if c is not cand:
            own = f"golden/{prefixes[id(c)]}"
            files[own + "inputs.npy"] = _npy_bytes(compiler.inputs(c.layout)[: compiler.golden_count])
            files[own + "outputs.npz"] = _npz_bytes(c.golden_outputs)
            a_tol, r_tol, cos = _golden_tolerance(item.precision, c.golden_outputs)
            entry["golden"] = {
                "inputs": own + "inputs.npy",
                "outputs": own + "outputs.npz",
                "atol": a_tol,
                "rtol": r_tol,
                "min_cosine": cos,
            }
        entries.append(entry)
    golden_inputs = compiler.inputs(cand.layout)[: compiler.golden_count]
    gate = cand.gate
    io_meta = cand.metadata.get("io")
    if io_meta is None:
        io_meta = {
            "inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in info.inputs],
            "outputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in info.outputs],
        }
    tools: dict[str, str] = {}
    for item in shipped:
        tools.update(toolchains.module(item.entry.name).tool_versions())
    tools["edgeds"] = __version__
    total = sum(f.stat().st_size for c in distinct for f in c.files)
    batching = prof.batching.model_dump(mode="json")
    batching["buckets"] = list(prof.batching.bucket_sizes())
    if compiler.fixed_batch is not None:
        batching = fixed_batching(batching, compiler.fixed_batch)
    runtimes = list(dict.fromkeys(item.entry.name for item in shipped))
    manifest: dict[str, Any] = {
        "model": {"name": card.name, "version": card.version}
        | ({"source": {"onnx": info.path.name, "card": card_file.name, "card_model": card.model}} if source else {}),
        "version": version if version is not None else int(time.time()),
        "expires_at": expires_at,
        "task": card.task,
        "artifacts": entries,
        "layout": cand.layout,
        "profile": prof.model_dump(mode="json", by_alias=True),
        "batching": batching,
        "io": io_meta,
        "labels": list(card.labels),
        "tools": tools,
        "requirements": {
            "arch": prof.hardware.arch,
            "backends": runtimes,
            "min_memory_mb": prof.memory.budget_mb,
            "min_disk_mb": max(1, math.ceil(3 * total / 2**20)),
        },
        "golden": {"atol": atol, "rtol": rtol, "min_cosine": min_cos},
        "accuracy": gate.manifest_accuracy() if gate else {"reference_top1": report.reference_top1},
    }
    if compiler.fixed_batch is not None:
        # only then: a manifest without the key stays readable by an edgeds that does not know it
        manifest["fixed_batch"] = compiler.fixed_batch
    build_bundle(
        out,
        manifest=manifest,
        artifacts=artifacts,
        card_file=card_file,
        golden_inputs=golden_inputs,
        golden_outputs=cand.golden_outputs,
        private_key=private,
        files=files or None,
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    named: dict[str, Any] = dict(arrays)
    np.savez(buffer, **named)
    return buffer.getvalue()
