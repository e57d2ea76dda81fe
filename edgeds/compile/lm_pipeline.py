"""``compile_lm``: a causal-lm card through its profile's LM runtime chain, gated, into a bundle.

For each runtime of the profile's ``llm.runtimes``, in order: skip it when its runtime is not
importable here or the ``llm`` toolchain is not installed (the report says why); otherwise try
the entry's precision and, when the causal-lm gate (:mod:`.gates.lm`) fails, fall back:
INT4 (group-wise) -> INT4 with 20 % then 50 % of the layers in INT8 (NNCF's ratio) -> INT8 ->
FP16 -> FP32, as far as the runtime's exporter goes (ONNX Runtime GenAI makes INT4 and FP32 and
has no ratio: those steps are reported as skipped). The first candidate that passes is written
as a schema-2 bundle with the tokenizer files, the chat template, generation defaults, golden
prompts with the shipped artifact's greedy token ids, and the KV plan.

Evaluation: the card's evaluation prompts are rendered with the chat template, tokenized by the
checkpoint's ``tokenizer.json`` (the reference) and by the runtime (tokenizer agreement), and
generated greedily by the FP32 checkpoint (``llm.reference``, transformers in the toolchain venv)
and by the candidate through its :mod:`edgeds.backends.lm` backend. Neither LM backend exposes
logits, so a candidate's perplexity is not measured (the report says so); the reference's is.

Every export, the reference and every evaluation is cached by fingerprint (see
:mod:`.cache`): a second identical compile runs no export and no inference.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..backends.lm import GenParams, KVPlan, LMBackend, lm_backend_class, lm_create, lm_probe
from ..backends.lm.base import model_weights_bytes
from ..backends.lm.chat import ChatTemplate
from ..backends.lm.kv import Architecture
from ..backends.lm.kv import plan as kv_plan
from ..bundle import build_bundle, load_private_key
from ..config import LLMRuntimeEntry, Profile
from ..errors import AccuracyGateFailed, BackendError, CompileError, ConfigError, DatasetError, ToolchainError
from ..modelcard import LMCard
from . import output
from .cache import CompileCache, cache_key
from .gates import gate_for
from .gates.lm import LMGateResult, judge, perplexity, token_agreement, tokenizer_agreement
from .report import Attempt, CompileReport, CompileResult
from .toolchains import llm
from .toolchains.openvino import runtime_options

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
CACHE_FORMAT = 1
GOLDEN_PROMPTS = 8
RATIOS = (0.8, 0.5)
"""INT4 shares tried after plain INT4 (the rest of the layers INT8)."""
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)
EXPORTS = {"openvino-genai": ("int4", "int8", "fp16", "fp32"), "onnxruntime-genai": ("int4", "fp32")}
"""What the LM toolchain exports for each runtime."""


@dataclass(frozen=True)
class Variant:
    """One candidate: ``name`` as reported (``int4``, ``int4-r0.8``, ``int8``, ...)."""

    name: str
    precision: str
    ratio: float | None = None


@dataclass(frozen=True)
class EvalSet:
    """The evaluation prompts: messages rendered, the reference tokenization, the answers."""

    examples: list[Any]
    texts: list[str]
    prompt_ids: list[list[int]]
    answer_ids: list[list[int]]
    fingerprint: str


def variants(runtime: str, precision: str) -> list[tuple[Variant, str | None]]:
    """The fallback plan from ``precision`` down: each step with None, or why this runtime skips it."""
    order = [Variant("int4", "int4"), *(Variant(f"int4-r{r}", "int4", r) for r in RATIOS)]
    order += [Variant("int8", "int8"), Variant("fp16", "fp16"), Variant("fp32", "fp32")]
    start = next(i for i, v in enumerate(order) if v.precision == precision)
    supported = EXPORTS.get(runtime, ())
    plan: list[tuple[Variant, str | None]] = []
    for v in order[start:]:
        if v.ratio is not None and runtime != "openvino-genai":
            plan.append((v, f"{runtime} has no INT4/INT8 mix (NNCF ratio): step skipped"))
        elif v.precision not in supported:
            plan.append((v, f"the LM toolchain exports {runtime} as {' or '.join(supported)} only"))
        else:
            plan.append((v, None))
    return plan


def _import(target: str) -> Any:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise DatasetError(f"cannot import {target!r}: {exc}") from exc


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _code_hash(*modules: Path) -> str:
    return hashlib.sha256(b"".join(m.read_bytes() for m in modules)).hexdigest()[:16]


def _ids_fingerprint(rows: Sequence[Sequence[int]]) -> str:
    return hashlib.sha256(json.dumps([list(r) for r in rows]).encode()).hexdigest()


class _LMCompiler:
    def __init__(
        self, card: LMCard, profile: Profile, cache: CompileCache, progress: Progress, work: Path, limit: int | None
    ) -> None:
        self.card, self.profile, self.cache, self.progress, self.work = card, profile, cache, progress, work
        self.limit = limit
        self.checkpoint = card.model_path
        self.source = _tree_digest(self.checkpoint)
        self.template = ChatTemplate(
            card.chat_template_text(), bos_token=card.special_tokens.bos, eos_token=card.special_tokens.eos
        )
        self.max_new = card.generation.max_new_tokens
        self._eval: EvalSet | None = None
        self._reference: llm.Reference | None = None
        self._scorer: Callable[[str, Any], bool] | None = None
        self._reference_figures: dict[str, Any] | None = None

    def _empty(self) -> Path:
        empty = self.work / "empty"
        empty.mkdir(exist_ok=True)
        return empty

    # ---------------------------------------------------------------- data
    def evaluation(self) -> EvalSet:
        """The evaluation prompts (the card's generator), rendered and tokenized by ``tokenizer.json``."""
        if self._eval is not None:
            return self._eval
        data = self.card.data
        if data is None:
            raise DatasetError(
                f"model card {self.card.name!r} names no data: a causal-lm gate needs evaluation prompts"
            )
        generate = _import(data.generator)
        count = data.evaluation.count if self.limit is None else min(self.limit, data.evaluation.count)
        examples = list(generate("evaluation", data.evaluation.seed, count))
        fingerprint_of = _import(data.generator.rsplit(":", 1)[0] + ":fingerprint")
        if count == data.evaluation.count and fingerprint_of(examples) != data.evaluation.fingerprint:
            raise DatasetError(
                f"the evaluation split generated by {data.generator} does not match the card's fingerprint "
                f"(got {fingerprint_of(examples)}): the generator has drifted"
            )
        texts = [self.template.render(list(e.messages), add_generation_prompt=True) for e in examples]
        eos = self.card.special_tokens.eos or ""
        key = cache_key(
            {"kind": "lm-tokenize", "f": CACHE_FORMAT, "checkpoint": self.source, "texts": texts, "eos": eos}
        )
        hit = self.cache.get(key)
        if hit is not None:
            prompt_ids, answer_ids = hit[1]["prompt_ids"], hit[1]["answer_ids"]
        else:
            self.progress("tokenizing the evaluation prompts", 0, 1)
            ids, _ = llm.tokenize(self.checkpoint, [*texts, *(str(e.answer) + eos for e in examples)])
            prompt_ids, answer_ids = ids[: len(texts)], ids[len(texts) :]
            self.cache.put(key, self._empty(), {"prompt_ids": prompt_ids, "answer_ids": answer_ids}, {})
            self.progress("tokenizing the evaluation prompts", 1, 1)
        fingerprint = hashlib.sha256(json.dumps([texts, prompt_ids, answer_ids]).encode()).hexdigest()
        self._eval = EvalSet(examples, texts, prompt_ids, answer_ids, fingerprint)
        return self._eval

    def scorer(self) -> Callable[[str, Any], bool] | None:
        if self.card.metric is None:
            return None
        if self._scorer is None:
            self._scorer = _import(self.card.metric.scorer)
        return self._scorer

    def _scorer_hash(self) -> str | None:
        """The code of the card's scorer (its module's source), which the gate's metric depends on."""
        if self.scorer() is None or self.card.metric is None:  # scorer(): DatasetError when it cannot import
            return None
        module = importlib.import_module(self.card.metric.scorer.partition(":")[0])
        return _code_hash(Path(str(module.__file__))) if module.__file__ else self.card.metric.scorer

    def metric(self, answers: Sequence[str]) -> float | None:
        score = self.scorer()
        if score is None:
            return None
        examples = self.evaluation().examples
        return sum(1 for a, e in zip(answers, examples, strict=True) if score(a, e)) / max(1, len(examples))

    # ---------------------------------------------------------------- reference
    def reference(self) -> llm.Reference:
        """FP32 greedy tokens and per-answer NLL of the checkpoint (transformers), cached."""
        if self._reference is not None:
            return self._reference
        ev = self.evaluation()
        key = cache_key(
            {
                "kind": "lm-reference",
                "f": CACHE_FORMAT,
                "checkpoint": self.source,
                "eval": ev.fingerprint,
                "max_new": self.max_new,
                "tools": llm.tool_versions(),
            }
        )
        hit = self.cache.get(key)
        if hit is not None:
            self._reference = llm.Reference.from_json(hit[1]["reference"])
            return self._reference
        self.progress("FP32 reference (transformers)", 0, 1)
        ref = llm.reference(
            self.checkpoint, ev.prompt_ids, self.max_new, list(zip(ev.prompt_ids, ev.answer_ids, strict=True))
        )
        self.progress("FP32 reference (transformers)", 1, 1)
        self.cache.put(key, self._empty(), {"reference": ref.to_json()}, {})
        self._reference = ref
        return ref

    def reference_figures(self) -> dict[str, Any]:
        """The FP32 task metric (its answers decoded by ``tokenizer.json``) and perplexity."""
        if self._reference_figures is None:
            ref = self.reference()
            _, answers = llm.tokenize(self.checkpoint, ids=ref.tokens)
            self._reference_figures = {
                "metric": self.metric(answers),
                "perplexity": perplexity(ref.nll) if ref.nll else None,
            }
        return self._reference_figures

    # ---------------------------------------------------------------- one candidate
    def export(self, runtime: str, variant: Variant) -> tuple[Path, dict[str, Any], str, bool]:
        """The runtime's export of the checkpoint at ``variant``: (directory, weight format, cache key, cached)."""
        settings = self.profile.llm
        assert settings is not None
        weights: dict[str, Any] = {"precision": variant.precision}
        if variant.precision == "int4":
            weights["group_size"] = llm.group_size(self.checkpoint, settings.group_size)
            weights["ratio"] = variant.ratio if variant.ratio is not None else 1.0
        key = cache_key(
            {
                "kind": "lm-export",
                "f": CACHE_FORMAT,
                "checkpoint": self.source,
                "runtime": runtime,
                "weights": weights,
                "tools": llm.tool_versions(),
                "code": _code_hash(Path(llm.__file__), llm.WORKER),
            }
        )
        hit = self.cache.get(key)
        if hit is not None:
            return hit[0] / "artifacts", weights, key, True
        out = self.work / f"{runtime}-{variant.name}"
        task = f"exporting {runtime} {variant.name}"
        self.progress(task, 0, 1)
        if runtime == "openvino-genai":
            fmt = llm.WeightFormat(variant.precision, weights.get("group_size"), variant.ratio)  # type: ignore[arg-type]
            llm.export_openvino(self.checkpoint, out, fmt)
        else:
            llm.export_onnxruntime(self.checkpoint, out, variant.precision, block_size=weights.get("group_size"))  # type: ignore[arg-type]
        self.progress(task, 1, 1)
        stored = self.cache.put(key, out, {"kind": "lm-export", "weights": weights}, {})
        return (stored / "artifacts" if self.cache.enabled else out), weights, key, False

    def kv(self, runtime: str, model_dir: Path, backend: LMBackend) -> KVPlan:
        settings = self.profile.llm
        assert settings is not None
        context = min(self.card.context_length, settings.context_length or self.card.context_length)
        return kv_plan(
            Architecture.from_dir(model_dir),
            budget_mb=self.profile.memory.budget_mb,
            weights_bytes=model_weights_bytes(model_dir),
            kv_precision=backend.kv_precision(),
            context_length=context,
            max_num_seqs=settings.max_num_seqs,
            overhead_mb=settings.kv_overhead_mb,
            block_size=lm_backend_class(runtime).block_size,
        )

    def evaluate(
        self, entry: LLMRuntimeEntry, variant: Variant, model_dir: Path, export_key: str
    ) -> tuple[LMGateResult, list[list[int]], bool]:
        """The gate's figures for one export (and its greedy outputs), cached by fingerprint."""
        ev, ref = self.evaluation(), self.reference()
        options = runtime_options(entry.parsed_options(), variant.precision)
        # one backend (closed on every path) gives the plan, which keys the cache and opens the runtime
        with lm_create(entry.name, options) as backend:
            plan = self.kv(entry.name, model_dir, backend)
            key = cache_key(
                {
                    "kind": "lm-eval",
                    "f": CACHE_FORMAT,
                    "export": export_key,
                    "runtime": entry.name,
                    "options": options.model_dump(mode="json"),
                    "eval": ev.fingerprint,
                    "reference": _ids_fingerprint(ref.tokens),
                    "max_new": self.max_new,
                    "generation": self.card.generation.model_dump(mode="json"),
                    # the plan's context truncates generations and its max_num_seqs is the batch
                    "kv_plan": plan.to_dict(),
                    "scorer": self._scorer_hash(),
                    "runtime_version": lm_probe(entry.name).version,
                    "code": _code_hash(
                        Path(str(importlib.import_module(lm_backend_class(entry.name).__module__).__file__))
                    ),
                    "edgeds": __version__,
                }
            )
            hit = self.cache.get(key)
            if hit is not None:
                return LMGateResult.from_dict(hit[1]["figures"]), hit[1]["outputs"], True
            task = f"evaluating {entry.name} {variant.name}"
            spec = backend.open(model_dir, plan)
            runtime_ids = [backend.encode(text) for text in ev.texts]
            outputs = _generate(
                backend, ev.prompt_ids, self.max_new, spec.max_num_seqs, spec.eos_token_ids, task, self.progress
            )
            answers = [backend.decode(row) for row in outputs]
        notes = (f"perplexity not measured: the {entry.name} backend exposes no logits",)
        ref_figures = self.reference_figures()
        result = LMGateResult(
            prompts=len(ev.texts),
            token_agreement=token_agreement(ref.tokens, outputs),
            tokenizer_agreement=tokenizer_agreement(ev.prompt_ids, runtime_ids),
            reference_metric=ref_figures["metric"],
            metric=self.metric(answers),
            reference_perplexity=ref_figures["perplexity"],
            perplexity=None,
            notes=notes,
        )
        self.cache.put(key, self._empty(), {"figures": result.as_dict(), "outputs": outputs}, {})
        return result, outputs, False


def _generate(
    backend: LMBackend,
    prompts: Sequence[Sequence[int]],
    max_new: int,
    batch: int,
    eos: frozenset[int],
    task: str,
    progress: Progress,
) -> list[list[int]]:
    """Greedy outputs of ``prompts`` (EOS left out), ``batch`` sequences at a time; the step loop is
    bounded by the tokens it can produce."""
    greedy = GenParams(max_tokens=max_new)
    outputs: list[list[int]] = [[] for _ in prompts]
    batch = max(1, batch)
    for start in range(0, len(prompts), batch):
        index = range(start, min(start + batch, len(prompts)))
        handles = {i: backend.add(i + 1, prompts[i], greedy) for i in index}
        limit = 4 * (max_new + max(len(prompts[i]) for i in index)) + 64
        for _ in range(limit):
            if not backend.has_unfinished():
                break
            backend.step()
            for i, handle in handles.items():
                outputs[i].extend(handle.read())
        else:
            raise BackendError(f"{backend.name}: generation did not finish within {limit} steps")
        for i, handle in handles.items():
            outputs[i].extend(handle.read())
        progress(task, index[-1] + 1, len(prompts))
    return [row[:-1] if row and row[-1] in eos else row for row in outputs]


def compile_lm(
    card: LMCard,
    card_file: Path,
    profile: Profile,
    *,
    precision: str | None = None,
    out: str | Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    key: str | Path | None = None,
    version: int | None = None,
    valid_days: float | None = None,
    evaluation_limit: int | None = None,
    cache_root: Path | None = None,
) -> CompileResult:
    """Compile a causal-lm ``card`` for ``profile`` (see the module docstring) and write a bundle.

    ``precision`` (int4, int8, fp16, fp32) overrides every runtime entry's first precision;
    ``evaluation_limit`` gates on the first N evaluation prompts only (the card's fingerprint is
    then not checked). Raises :class:`CompileError` (a profile without ``llm``),
    :class:`DatasetError`, and :class:`AccuracyGateFailed` (with ``.report``) when no candidate passes.
    """
    started = time.perf_counter()
    progress = progress or (lambda task, done, total: None)
    gate = gate_for(card.task)
    quality = gate.budget(profile)
    settings = profile.llm
    assert settings is not None
    if precision is not None and precision not in ("int4", "int8", "fp16", "fp32"):
        raise CompileError(f"unknown LM precision {precision!r} (int4, int8, fp16 or fp32)")
    cache = CompileCache(cache_root, enabled=use_cache)
    out_path = Path(out) if out is not None else output.default_out(card.name, card.version, profile.name)
    private = load_private_key(key) if key is not None else None
    with tempfile.TemporaryDirectory(prefix="edgeds-compile-lm-") as tmp:
        compiler = _LMCompiler(card, profile, cache, progress, Path(tmp), evaluation_limit)
        ev = compiler.evaluation()
        report = CompileReport(str(card.model_path), compiler.source, profile.name, len(ev.texts), 0, task=card.task)
        chosen: tuple[LLMRuntimeEntry, Variant, Path, dict[str, Any], LMGateResult, list[list[int]]] | None = None
        for entry in settings.runtimes:
            device = getattr(entry.parsed_options(), "device", None)
            why = _unavailable(entry.name)
            if why is not None:
                log.info("compile: %s skipped: %s", entry.name, why)
                report.attempts.append(
                    Attempt(entry.name, entry.precision, entry.precision, "skipped", why, device=device)
                )
                continue
            for variant, skip in variants(entry.name, precision or entry.precision):
                if skip is not None:
                    report.attempts.append(
                        Attempt(entry.name, variant.precision, variant.name, "skipped", skip, device=device)
                    )
                    continue
                t0 = time.perf_counter()
                try:  # what every variant shares: when it fails, no variant of this runtime can be judged
                    compiler.evaluation()
                    compiler.reference()
                except ToolchainError as exc:
                    log.info("compile: %s: the FP32 reference failed", entry.name, exc_info=True)
                    reason = str(exc).splitlines()[0][:300]
                    report.attempts.append(
                        Attempt(entry.name, variant.precision, variant.name, "skipped", reason, device=device)
                    )
                    break
                try:  # one export or evaluation failing (worker error, timeout): the next precision is tried
                    model_dir, weights, export_key, export_cached = compiler.export(entry.name, variant)
                    result, outputs, eval_cached = compiler.evaluate(entry, variant, model_dir, export_key)
                except (CompileError, BackendError, ConfigError) as exc:
                    log.info(
                        "compile: %s/%s failed, trying the next candidate", entry.name, variant.name, exc_info=True
                    )
                    report.attempts.append(
                        Attempt(
                            entry.name,
                            variant.precision,
                            variant.name,
                            "error",
                            str(exc).splitlines()[0][:300],
                            seconds=time.perf_counter() - t0,
                            device=device,
                        )
                    )
                    continue
                result = judge(result, quality)
                attempt = Attempt(
                    entry.name,
                    variant.precision,
                    variant.name,
                    "passed" if result.passed else "failed",
                    "; ".join(result.failures) if result.failures else "; ".join(result.notes) or None,
                    accuracy=result.as_dict(),
                    size_bytes=model_weights_bytes(model_dir),
                    seconds=time.perf_counter() - t0,
                    cached=export_cached and eval_cached,
                    device=device,
                )
                report.attempts.append(attempt)
                if result.passed:
                    report.selected = len(report.attempts) - 1
                    chosen = (entry, variant, model_dir, weights, result, outputs)
                    break
            if chosen is not None:
                break
        if compiler._reference is not None:
            report.reference = compiler.reference_figures()
        report.seconds = time.perf_counter() - started
        if chosen is None:
            error = AccuracyGateFailed(
                f"no LM runtime of profile {profile.name!r} produced a model that passes the quality budget: "
                + "; ".join(f"{a.backend}/{a.variant}: {a.outcome} ({a.reason})" for a in report.attempts)
            )
            error.report = report  # type: ignore[attr-defined]
            raise error
        entry, variant, model_dir, weights, result, outputs = chosen
        output.prepare_out(out_path)
        expires_at = output.expires_at(valid_days)
        _write_bundle(
            out_path,
            compiler,
            card_file,
            entry,
            variant,
            model_dir,
            weights,
            result,
            outputs,
            private,
            version,
            expires_at,
        )
    report.seconds = time.perf_counter() - started
    return CompileResult(out_path, report, entry.name, variant.name, private is not None)


def _unavailable(runtime: str) -> str | None:
    """Why ``runtime`` cannot be compiled and gated here, or None."""
    avail = llm.available()
    if not avail.available:
        return f"toolchain not available: {avail.reason}" + (f" ({avail.hint})" if avail.hint else "")
    probe = lm_probe(runtime)
    if not probe.available:
        return f"runtime not available here to run the quality gate: {probe.reason}"
    return None


def _write_bundle(
    out: Path,
    compiler: _LMCompiler,
    card_file: Path,
    entry: LLMRuntimeEntry,
    variant: Variant,
    model_dir: Path,
    weights: dict[str, Any],
    result: LMGateResult,
    outputs: list[list[int]],
    private: Any,
    version: int | None,
    expires_at: str | None,
) -> None:
    card, profile = compiler.card, compiler.profile
    settings = profile.llm
    assert settings is not None
    ev, ref = compiler.evaluation(), compiler.reference()
    options = runtime_options(entry.parsed_options(), variant.precision)
    with lm_create(entry.name, options) as backend:
        plan = compiler.kv(entry.name, model_dir, backend)
    golden = [
        {
            "prompt": ev.texts[i],
            "prompt_ids": ev.prompt_ids[i],
            "output_ids": outputs[i],
            "reference_ids": ref.tokens[i],
        }
        for i in range(min(GOLDEN_PROMPTS, len(ev.texts)))
    ]
    files: dict[str, Path | bytes] = {
        f"tokenizer/{name}": compiler.checkpoint / name
        for name in TOKENIZER_FILES
        if (compiler.checkpoint / name).is_file() and name != "chat_template.jinja"
    }
    files["tokenizer/chat_template.jinja"] = card.chat_template_text().encode()
    files["golden/prompts.json"] = (json.dumps(golden, indent=1) + "\n").encode()
    artifact = f"{entry.name}-{variant.name}"
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    weights_info = {**weights, "bytes": model_weights_bytes(model_dir)}
    manifest: dict[str, Any] = {
        "task": "causal-lm",
        "model": {"name": card.name, "version": card.version},
        "version": version if version is not None else int(time.time()),
        "expires_at": expires_at,
        "artifacts": [
            {
                "runtime": entry.name,
                "precision": variant.precision,
                "path": artifact,
                "options": options.model_dump(mode="json"),
                "device": getattr(options, "device", None),
                "gated": {
                    "where": "compile-host",
                    "device": getattr(options, "device", None) or "CPU",
                    "figures": result.as_dict(),
                },
                "weights": weights_info,
            }
        ],
        "profile": profile.model_dump(mode="json", by_alias=True),
        "io": {
            "inputs": [{"name": "text_input", "dtype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "text_output", "dtype": "BYTES", "shape": [-1]}],
        },
        "tools": {**llm.tool_versions(), "edgeds": __version__, entry.name: str(lm_probe(entry.name).version)},
        "requirements": {
            "arch": profile.hardware.arch,
            "backends": [entry.name],
            "min_memory_mb": profile.memory.budget_mb,
            "min_disk_mb": max(1, math.ceil(2 * size / 2**20)),
        },
        "llm": {
            "architecture": card.architecture,
            "context_length": plan.context_length,
            "kv_plan": plan.to_dict(),
            "chat_template": "tokenizer/chat_template.jinja",
            "tokenizer": "tokenizer",
            "generation": card.generation.model_dump(mode="json"),
            "special_tokens": card.special_tokens.model_dump(mode="json"),
            "max_num_seqs": plan.max_num_seqs,
            "max_queue": settings.max_queue,
            "golden": {
                "count": len(golden),
                "max_new_tokens": compiler.max_new,
                "min_token_agreement": settings.quality.min_token_agreement,
            },
        },
    }
    build_bundle(
        out, manifest=manifest, artifacts={artifact: model_dir}, card_file=card_file, files=files, private_key=private
    )
