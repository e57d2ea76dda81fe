"""Which of a bundle's artifacts a device opens, and what it says about the choice.

A bundle lists its artifacts in the order of its profile's backend chain (a TensorRT recipe, then
an ONNX Runtime INT8 model; an OpenVINO IR for ``HETERO:GPU,CPU``, then the same IR for ``CPU``).
What depends on the device is decided here, at load: the engine tries each
:class:`ArtifactChoice` in order and serves the first that opens. Each one passed over becomes a
:class:`Skipped` with its reason whole (``tensorrt unavailable: No module named 'tensorrt'``);
a choice marked ``require`` that does not open, or opens only by falling back inside its runtime
(a LiteRT delegate that failed), fails the load with :class:`RequiredArtifactFailed` instead.

The :class:`Selection` of a started engine is what the agent reports in its status, the model
metadata, telemetry and ``edgeds status``: the artifact opened, its device, delegate or engine
fingerprint, and every fallback with its reason.

A TensorRT artifact is a build recipe: its engine is looked up in (or built into) the engine
cache through :func:`edgeds.compile.toolchains.tensorrt.ensure_engine`, the same function and
cache root the device's deploy step builds with, so the engine the device built is the engine
the runtime opens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends.base import Backend, BackendOptions, IOSpec, Opened
from ..errors import BackendError, BackendUnavailable, CompileError

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..compile.toolchains.tensorrt import DeviceFacts

log = logging.getLogger(__name__)

OPEN_ERRORS: tuple[type[Exception], ...] = (BackendError, CompileError)
"""What an artifact that cannot open here raises (BackendUnavailable is a BackendError; a TensorRT
engine build raises ToolchainError, a CompileError): anything else is a bug and propagates."""


THREAD_OPTION = {"onnxruntime": "intra_op_num_threads", "openvino": "inference_num_threads", "litert": "num_threads"}
"""Each runtime's option for its CPU thread count (TensorRT has none)."""


def thread_options(backend: str, threads: int | None) -> dict[str, Any]:
    """The backend option that sets its CPU thread count (empty when None or not applicable)."""
    key = THREAD_OPTION.get(backend)
    return {key: threads} if key and threads else {}


class GoldenMismatch(BackendError):
    """An artifact gated on the device did not reproduce its golden outputs there."""


class RequiredArtifactFailed(BackendError):
    """An artifact the profile marked ``require: true`` did not open as asked on this device."""


@dataclass(frozen=True)
class Skipped:
    """An artifact the device passed over, and why (the reason whole, on one line)."""

    index: int
    runtime: str
    precision: str
    device: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Selection:
    """What a started engine opened: artifact ``index`` of the bundle, its runtime and precision,
    what the backend reports (:class:`~edgeds.backends.base.Opened`), what was passed over first,
    and the runtime's options."""

    index: int
    runtime: str
    precision: str | None
    opened: Opened = field(default_factory=Opened)
    skipped: tuple[Skipped, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    """the runtime's options as opened (before an instance's share of the threads)"""

    @property
    def fallback(self) -> str | None:
        """Why this is not the bundle's first choice as asked (artifacts passed over, or a fallback
        inside the runtime), one line; None when it is."""
        parts = [s.reason for s in self.skipped]
        if self.opened.fallback:
            parts.append(self.opened.fallback)
        return "; ".join(parts) or None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``artifact`` index, ``runtime``, ``precision``, the opened fields, ``fallback``
        (None when the first choice opened as asked) and ``skipped``."""
        return {
            "artifact": self.index,
            "runtime": self.runtime,
            "precision": self.precision,
            **self.opened.as_dict(),
            "fallback": self.fallback,
            "skipped": [s.as_dict() for s in self.skipped],
        }

    def summary(self) -> str:
        """One line for logs and tables, e.g. ``onnxruntime fp32 (fallback: tensorrt unavailable: ...)``."""
        where = self.opened.device or self.opened.delegate
        text = f"{self.runtime} {self.precision or ''}".strip() + (f" on {where}" if where else "")
        return text + (f" (fallback: {self.fallback})" if self.fallback else "")


@dataclass
class ArtifactChoice:
    """One artifact a device may open: runtime, artifact path, options, whether it is required.

    ``backend`` is a constructed backend to use as is (an :class:`~edgeds.runtime.engine.Engine`
    built from a backend object); otherwise :meth:`prepare` constructs one. ``engine_resolver``
    turns a TensorRT recipe into the engine file to open (see :func:`tensorrt_resolver`). ``check``
    gates an artifact that could only be gated on the device (:func:`golden_gate`).
    """

    runtime: str
    path: Path
    options: BackendOptions | Mapping[str, Any] | None = None
    precision: str | None = None
    require: bool = False
    index: int = 0
    backend: Backend | None = None
    engine_resolver: Callable[[Path], tuple[Path, str]] | None = None
    check: Callable[[Backend, IOSpec, Sequence[int]], None] | None = None
    """run on the opened backend before it serves (the on-device gate); raises GoldenMismatch"""

    @property
    def asked_device(self) -> str | None:
        """The device string the options ask for (OpenVINO's), if any."""
        options = self.backend.options if self.backend is not None else self.options
        value = options.get("device") if isinstance(options, Mapping) else getattr(options, "device", None)
        return str(value) if value is not None else None

    def prepare(self) -> tuple[Backend, Path, Opened]:
        """The backend (constructed, not opened), the file it opens and what resolving it found
        (a TensorRT engine's fingerprint). Raises what :data:`OPEN_ERRORS` names when the artifact
        cannot run here (:class:`BackendUnavailable` for a missing library)."""
        from .. import backends

        backend = self.backend
        if backend is None:
            options = self.options
            backend = backends.create(self.runtime, dict(options) if isinstance(options, Mapping) else options)
        if self.engine_resolver is None:
            return backend, self.path, Opened()
        engine, fingerprint = self.engine_resolver(self.path)
        return backend, engine, Opened(engine=fingerprint)

    def skipped(self, exc: BaseException) -> Skipped:
        return Skipped(self.index, self.runtime, self.precision or "", self.asked_device, fallback_reason(self, exc))


def fallback_reason(choice: ArtifactChoice, exc: BaseException) -> str:
    """``<runtime> unavailable: <why>`` for a missing library, else ``<runtime>[ <device>] failed: <why>``,
    the exception's text whole on one line (vendor location lines such as OpenVINO's
    ``Exception from src/...cpp:117:`` dropped)."""
    from ..errors import one_line

    if isinstance(exc, BackendUnavailable):
        return f"{choice.runtime} unavailable: {one_line(exc.reason)}"
    device = choice.asked_device
    if isinstance(exc, GoldenMismatch):
        return f"{choice.runtime} {choice.precision or ''} {one_line(str(exc))}".replace("  ", " ")
    return f"{choice.runtime}{' ' + device if device else ''} failed: {one_line(str(exc))}"


BUILD_FAILED = "build-failed.txt"
"""Written beside where an engine would be when its build failed on the device: the reason, whole."""


def tensorrt_resolver(
    card: Any, cache_root: Path | None = None, facts: DeviceFacts | None = None, *, build: bool = True
) -> Callable[[Path], tuple[Path, str]]:
    """Resolve a TensorRT recipe to ``(engine file, fingerprint)`` on this device: the engine cached
    under ``cache_root`` (default :func:`~edgeds.compile.toolchains.tensorrt.default_cache_root`).
    ``build``: build it now when it is missing (``edgeds serve``); without, a missing engine is a
    :class:`BackendError` naming why (the agent: the deploy step builds, and a build that failed
    there left its reason in ``build-failed.txt``, so it is not run again at every load).
    ``facts`` default to this device's (needs TensorRT and a GPU; :class:`BackendUnavailable` else)."""
    from ..compile.toolchains import tensorrt

    def resolve(recipe: Path) -> tuple[Path, str]:
        root = cache_root or tensorrt.default_cache_root()
        device = facts or tensorrt.DeviceFacts.detect()
        if not build:
            paths = tensorrt.recipe_engine_paths(recipe, root, device)
            if not paths.engine.is_file():
                failed = paths.engine.parent / BUILD_FAILED
                if failed.is_file():
                    raise BackendError(f"the engine build failed on this device: {failed.read_text().strip()}")
                raise BackendError(
                    f"no engine built for this device in {root}: deploy again, or run "
                    f"edgeds engine build BUNDLE --cache-dir {root}"
                )
            return paths.engine, paths.engine.parent.name
        engine, built = tensorrt.ensure_engine(recipe, root, card, facts=device)
        if built:
            log.warning("tensorrt: no cached engine for %s on this device: built %s", recipe, engine)
        return engine, engine.parent.name

    return resolve


def golden_gate(bundle: Bundle, index: int) -> Callable[[Backend, IOSpec, Sequence[int]], None]:
    """The on-device gate of artifact ``index``: its golden inputs through the opened backend must
    give its golden outputs within the bundle's tolerance (:class:`GoldenMismatch` with why, else).
    The golden files are read now, while the bundle is open."""
    from .golden import golden_mismatch, run_golden

    image, expected = bundle.golden(index)
    extra = bundle.golden_extra_inputs()
    info = bundle.manifest.golden_for(index)

    def check(backend: Backend, io: IOSpec, buckets: Sequence[int]) -> None:
        outputs = run_golden(backend, io, buckets, image, extra)
        why = golden_mismatch(outputs, expected, info.atol, info.rtol, info.min_cosine)
        if why is not None:
            raise GoldenMismatch(f"failed the on-device golden check: {why}")

    return check


def choices_from_bundle(
    bundle: Bundle,
    options: Mapping[str, Any] | None = None,
    engine_resolver: Callable[[Path], tuple[Path, str]] | None = None,
    *,
    threads: int | None = None,
) -> list[ArtifactChoice]:
    """One :class:`ArtifactChoice` per artifact of ``bundle``, in the manifest's order.

    ``options`` are merged over each artifact's options where that runtime's options schema has the
    key, and ``threads`` sets each runtime's thread option; an OpenVINO artifact's ``device`` comes
    from the entry when its options leave it out. TensorRT artifacts resolve their engine with ``engine_resolver``
    (default :func:`tensorrt_resolver` with the bundle's card). An artifact gated on the device
    (``gated.where == "device"``) is checked against its golden outputs before it serves.
    """
    from .. import backends

    out = []
    for index, entry in enumerate(bundle.manifest.artifacts):
        known = backends.options_schema(entry.runtime).model_fields
        merged = dict(entry.options or {})
        if entry.device and "device" in known:
            merged.setdefault("device", entry.device)
        merged.update({k: v for k, v in (options or {}).items() if k in known})
        merged.update(thread_options(entry.runtime, threads))
        if entry.io_quantization and "io_quantization" in known:
            merged["io_quantization"] = entry.io_quantization  # the backend checks the model agrees
        resolver = None
        if entry.runtime == "tensorrt":
            resolver = engine_resolver or tensorrt_resolver(bundle.card)
        gated_on_device = entry.gated is not None and entry.gated.where == "device"
        out.append(
            ArtifactChoice(
                entry.runtime,
                bundle.root / entry.path,
                merged,
                precision=entry.precision,
                require=entry.require,
                index=index,
                engine_resolver=resolver,
                check=golden_gate(bundle, index) if gated_on_device and bundle.manifest.golden else None,
            )
        )
    return out


def no_artifact_opens(skipped: Sequence[Skipped]) -> BackendError:
    """The error of a bundle none of whose artifacts opens here (every reason, one line)."""
    return BackendError("no artifact of the bundle opens on this device: " + "; ".join(s.reason for s in skipped))
