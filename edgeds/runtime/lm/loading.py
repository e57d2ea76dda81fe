"""Open a language model to serve: a causal-lm bundle as an :class:`LMEngine`, with the settings
its manifest records; for development, a runtime's bare model directory.

What ``edgeds serve``, ``edgeds run --prompt`` and ``edgeds chat`` open in process.

**A bundle.** Its artifacts are tried in the manifest's order; the first whose runtime is known
and importable here, takes its options and leaves room for a KV cache under the budget is
taken (:func:`engine_from_bundle`); :func:`open_engine` also starts it and, when the runtime
cannot open that artifact (a device missing here, say), goes on to the next. The engine's
``artifact`` says which one serves and ``skipped`` why each earlier one does not.

Settings, from the manifest unless overridden: the memory budget (the profile's
``memory.budget_mb``), ``kv_overhead_mb``, the context cap (the card's ``context_length``, capped
by the profile's ``llm.context_length``) and ``max_num_seqs`` (the profile's ``llm`` cap), which
plan the KV cache; ``max_queue``; the KV precision (the artifact's ``kv_cache_precision``
option); generation defaults (the card's ``generation:``: ``max_new_tokens`` is the answer
length of a request that names none); chat template and special tokens. The first artifact
is served under the KV plan the manifest records (the one compile gated); another artifact,
or an override of the budget, overhead, context, sequences or KV precision, is planned afresh
from those settings.

**A model directory** (``openvino_model.xml`` + tokenizer: OpenVINO GenAI's; ``genai_config.json``:
ONNX Runtime GenAI's) is a developer path: no card, no profile, so the budget is
:data:`DEV_BUDGET_MB`, at most :data:`DEV_MAX_NUM_SEQS` sequences and answers of 256 tokens
unless the caller says otherwise; its chat template is the directory's.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...backends.lm import lm_backend_class, lm_create
from ...backends.lm.base import model_weights_bytes
from ...backends.lm.chat import ChatTemplate
from ...backends.lm.kv import Architecture, KVPlan, plan
from ...bundle import Bundle, PublicKeyLike
from ...errors import BackendError, BundleError, ConfigError
from ...manifest import MANIFEST
from ...paths import is_safe_relative
from .engine import GenerationDefaults, LMEngine

log = logging.getLogger(__name__)

MB = 2**20
DEV_BUDGET_MB = 1024.0  # a model directory (no profile): a 4 GB device's share for one small model
DEV_MAX_NUM_SEQS = 8  # a model directory: the profiles' llm.max_num_seqs default
_MANIFEST_MAX = 64 * MB  # read at most this much of a tar's manifest.json


@dataclass(frozen=True)
class ServingSettings:
    """What plans and bounds an LM engine: the profile's ``llm:`` settings a bundle records
    (sizes in MiB, lengths in tokens). ``context_length`` and ``max_num_seqs`` are caps: the KV
    budget may allow less."""

    budget_mb: float
    kv_overhead_mb: float
    context_length: int
    max_num_seqs: int
    max_queue: int

    @classmethod
    def recorded(cls, bundle: Bundle) -> ServingSettings:
        """The settings ``bundle``'s manifest records (its profile, else its KV plan's figures).
        Raises :class:`BundleError` for a bundle that is not a causal-lm one or lacks them."""
        manifest = bundle.manifest
        llm = manifest.llm
        if manifest.task != "causal-lm" or llm is None:
            raise BundleError(f"{bundle.root} is a bundle of task {manifest.task}, not causal-lm")
        profile = manifest.profile or {}
        profile_llm = _mapping(profile.get("llm"))
        memory = _mapping(profile.get("memory"))
        kv = llm.kv_plan
        budget = memory.get("budget_mb")
        if budget is None and kv.get("budget_bytes") is not None:
            budget = float(kv["budget_bytes"]) / MB
        if not isinstance(budget, int | float) or budget <= 0:
            raise BundleError(f"{bundle.root}: the manifest records no memory budget (profile memory.budget_mb)")
        overhead = profile_llm.get("kv_overhead_mb")
        if overhead is None:
            overhead = float(kv.get("overhead_bytes", 64 * MB)) / MB
        context = bundle.lm_card.context_length
        cap = profile_llm.get("context_length")
        if isinstance(cap, int) and cap > 0:
            context = min(context, cap)
        seqs = profile_llm.get("max_num_seqs")
        return cls(
            budget_mb=float(budget),
            kv_overhead_mb=float(overhead),
            context_length=context,
            max_num_seqs=int(seqs) if isinstance(seqs, int) and seqs > 0 else llm.max_num_seqs,
            max_queue=llm.max_queue,
        )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def engine_from_bundle(
    bundle: Bundle | str | Path,
    *,
    public_key: PublicKeyLike | None = None,
    runtime: str | None = None,
    budget_mb: float | None = None,
    kv_overhead_mb: float | None = None,
    context_length: int | None = None,
    max_num_seqs: int | None = None,
    max_queue: int | None = None,
    options: Mapping[str, Any] | None = None,
    default_timeout_s: float | None = None,
    exclude: Mapping[int, str] | None = None,
) -> LMEngine:
    """An engine (not started) for the first artifact of ``bundle`` that can run here.

    A path is opened here (verified when ``public_key`` is given) and closed with the engine; an
    opened :class:`Bundle` stays the caller's. ``runtime`` takes only that runtime's artifacts;
    ``options`` are merged over the artifact's (``num_threads``, say); the other keywords
    override the recorded :class:`ServingSettings`. ``exclude``: artifact indices known not to
    open here, with why (what :func:`open_engine` found). Raises :class:`BundleError` (not a
    causal-lm bundle, a bad manifest) and :class:`BackendError` naming every artifact and why it
    cannot run here.
    """
    opened: Bundle | None = None
    if isinstance(bundle, Bundle):
        target = bundle
    else:
        target = opened = Bundle.open(bundle, public_key, verify=public_key is not None)
    try:
        engine = _engine_for(
            target,
            runtime,
            budget_mb,
            kv_overhead_mb,
            context_length,
            max_num_seqs,
            max_queue,
            options,
            default_timeout_s,
            exclude,
        )
    except BaseException:
        if opened is not None:
            opened.close()
        raise
    if opened is not None:
        engine.owns = opened
    return engine


def _engine_for(
    bundle: Bundle,
    runtime: str | None,
    budget_mb: float | None,
    kv_overhead_mb: float | None,
    context_length: int | None,
    max_num_seqs: int | None,
    max_queue: int | None,
    options: Mapping[str, Any] | None,
    default_timeout_s: float | None,
    exclude: Mapping[int, str] | None,
) -> LMEngine:
    recorded = ServingSettings.recorded(bundle)
    settings = ServingSettings(
        budget_mb=budget_mb if budget_mb is not None else recorded.budget_mb,
        kv_overhead_mb=kv_overhead_mb if kv_overhead_mb is not None else recorded.kv_overhead_mb,
        context_length=min(context_length, recorded.context_length) if context_length else recorded.context_length,
        max_num_seqs=max_num_seqs if max_num_seqs is not None else recorded.max_num_seqs,
        max_queue=max_queue if max_queue is not None else recorded.max_queue,
    )
    replan = any(v is not None for v in (budget_mb, kv_overhead_mb, context_length, max_num_seqs)) or (
        "kv_cache_precision" in (options or {})
    )
    manifest = bundle.manifest
    llm = manifest.llm
    assert llm is not None  # ServingSettings.recorded checked it
    skipped: list[str] = []
    for index, entry in enumerate(manifest.artifacts):
        on = f" on {entry.device}" if entry.device else ""
        where = f"artifact {index} ({entry.runtime} {entry.precision}{on}, {entry.path})"
        if exclude is not None and index in exclude:
            skipped.append(f"{where}: {exclude[index]}")
            continue
        if runtime is not None and entry.runtime != runtime:
            skipped.append(f"{where}: not the runtime asked for ({runtime})")
            continue
        try:
            probe = lm_backend_class(entry.runtime).probe()
        except ConfigError as exc:  # a runtime this edgeds does not know
            skipped.append(f"{where}: {exc.problems[0][3]}")
            continue
        if not probe.available:
            skipped.append(f"{where}: {entry.runtime} is not installed here ({probe.reason})")
            continue
        try:
            backend = lm_create(entry.runtime, {**entry.options, **(options or {})})
            model_dir = bundle.artifact_dir(index)
            if index == 0 and not replan and llm.kv_plan:
                kv = KVPlan.from_dict(llm.kv_plan)
                if (kv.block_size, kv.kv_precision) != (backend.block_size, backend.kv_precision()):
                    raise BundleError(f"the recorded KV plan is not {entry.runtime}'s ({kv.describe()})")
            else:
                kv = plan(
                    Architecture.from_dir(model_dir),
                    budget_mb=settings.budget_mb,
                    weights_bytes=model_weights_bytes(model_dir),
                    kv_precision=backend.kv_precision(),
                    context_length=settings.context_length,
                    max_num_seqs=settings.max_num_seqs,
                    overhead_mb=settings.kv_overhead_mb,
                    block_size=backend.block_size,
                )
        except (ConfigError, BackendError, BundleError, OSError) as exc:
            skipped.append(f"{where}: {str(exc).splitlines()[0]}")
            continue
        for line in skipped:
            log.warning("%s: %s not served", manifest.model.name, line)
        log.info("%s: serving %s", manifest.model.name, where)
        return LMEngine(
            backend,
            model_dir,
            kv,
            name=manifest.model.name,
            version=manifest.model.version,
            release=str(manifest.version),
            max_queue=settings.max_queue,
            default_timeout_s=default_timeout_s,
            chat_template=_chat_template(bundle),
            generation=GenerationDefaults.from_manifest(llm.generation),
            artifact=where,
            artifact_index=index,
            skipped=skipped,
        )
    raise BackendError(
        f"no artifact of {manifest.model.name} v{manifest.model.version} can run here: " + "; ".join(skipped)
    )


def _chat_template(bundle: Bundle) -> ChatTemplate:
    llm = bundle.manifest.llm
    assert llm is not None
    if not is_safe_relative(llm.chat_template):
        raise BundleError(f"llm.chat_template {llm.chat_template!r} must be a relative path inside the bundle")
    path = bundle.root / llm.chat_template
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"the bundle's chat template {llm.chat_template} cannot be read: {exc}") from exc
    special = llm.special_tokens
    return ChatTemplate(source, bos_token=special.get("bos"), eos_token=special.get("eos"))


def runtime_of(model_dir: Path) -> str:
    """The LM runtime whose export ``model_dir`` holds; BundleError when it holds none."""
    if (model_dir / "genai_config.json").is_file():
        return "onnxruntime-genai"
    if (model_dir / "openvino_model.xml").is_file():
        return "openvino-genai"
    raise BundleError(
        f"{model_dir} holds no language-model export (openvino_model.xml or genai_config.json); "
        "a causal-lm bundle or a runtime's model directory is needed"
    )


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` is a runtime's bare model directory (not a bundle)."""
    if not path.is_dir() or (path / "manifest.json").is_file():
        return False
    return ((path / "openvino_model.xml").is_file() and (path / "openvino_tokenizer.xml").is_file()) or (
        path / "genai_config.json"
    ).is_file()


def is_language_model(path: Path) -> bool:
    """Whether ``path`` holds a language model to serve: a bundle (directory or ``.tar``) whose
    manifest's task is ``causal-lm``, or a runtime's model directory (:func:`is_model_dir`)."""
    if path.is_file():
        return _tar_task(path) == "causal-lm"
    if not path.is_dir():
        return False
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            return bool(json.loads(manifest.read_text(encoding="utf-8")).get("task") == "causal-lm")
        except (OSError, ValueError, AttributeError):
            return False
    return is_model_dir(path)


def _tar_task(path: Path) -> str | None:
    """The ``task`` of a bundle ``.tar``'s manifest (at its root or under one directory); None
    when it is not a readable bundle tar."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = member.name.removeprefix("./").split("/")
                if member.isfile() and len(parts) <= 2 and parts[-1] == MANIFEST:
                    raw = tar.extractfile(member)
                    if raw is None:
                        return None
                    task = json.loads(raw.read(_MANIFEST_MAX)).get("task")
                    return task if isinstance(task, str) else None
    except (OSError, tarfile.TarError, ValueError, AttributeError):
        return None
    return None


def open_engine(
    path: Path | Bundle,
    *,
    public_key: PublicKeyLike | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    budget_mb: float | None = None,
    max_num_seqs: int | None = None,
    max_queue: int | None = None,
    context_length: int | None = None,
    name: str | None = None,
) -> LMEngine:
    """A started engine for a causal-lm bundle (an opened one, a directory or a ``.tar``) or a
    runtime's model directory (the developer path); the caller closes it. An artifact whose
    runtime fails to open it is skipped (logged, and listed in ``engine.skipped``) for the next.
    ``threads`` sets the runtime's ``num_threads``; the rest override the recorded settings.
    ``public_key`` verifies a bundle; with a model directory it raises
    :class:`~edgeds.errors.BundleError` (a directory carries no signature to check)."""
    options: dict[str, Any] = {} if threads is None else {"num_threads": threads}
    if isinstance(path, Path) and is_model_dir(path):
        if public_key is not None:
            raise BundleError(f"{path} is a model directory, not a signed bundle: it has nothing a key can verify")
        engine = LMEngine.from_dir(
            path,
            runtime or runtime_of(path),
            budget_mb=budget_mb if budget_mb is not None else DEV_BUDGET_MB,
            max_num_seqs=max_num_seqs if max_num_seqs is not None else DEV_MAX_NUM_SEQS,
            max_queue=max_queue if max_queue is not None else 64,
            context_length=context_length,
            options=options,
            name=name,
        )
        return engine.start()
    bundle = path if isinstance(path, Bundle) else Bundle.open(path, public_key, verify=public_key is not None)
    failed: dict[int, str] = {}
    try:
        while True:
            engine = _engine_for(
                bundle, runtime, budget_mb, None, context_length, max_num_seqs, max_queue, options, None, failed
            )
            try:
                engine.start()
            except BackendError as exc:
                engine.close()
                assert engine.artifact_index is not None
                failed[engine.artifact_index] = str(exc).splitlines()[0]  # logged when the next is chosen
                continue
            break
    except BaseException:
        if bundle is not path:
            bundle.close()
        raise
    if bundle is not path:
        engine.owns = bundle
    return engine


__all__ = [
    "DEV_BUDGET_MB",
    "DEV_MAX_NUM_SEQS",
    "ServingSettings",
    "engine_from_bundle",
    "is_language_model",
    "is_model_dir",
    "open_engine",
    "runtime_of",
]
