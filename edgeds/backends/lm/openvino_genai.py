"""OpenVINO GenAI LM backend: ``ContinuousBatchingPipeline`` with a paged, budgeted KV cache.

The one runtime here with continuous batching on CPU: a sequence added mid-generation joins the
running batch at the next step. The KV cache is ``plan.num_blocks`` blocks of 32 tokens in
``KV_CACHE_PRECISION`` (u8 by default; u4, f16, f32), allocated at :meth:`open`, which then
measures the cache's real size: a u8 or u4 cache also keeps scales and zero points, so when the
cache exceeds the plan's KV budget the pipeline is reopened with the plan refitted to the measured
bytes per token (fewer sequences or a shorter context; ``LMSpec.plan``). The scheduler
holds at most ``plan.max_num_seqs`` sequences and prefills in chunks of
``max_num_batched_tokens`` (``dynamic_split_fuse``). OpenVINO GenAI does not report preemptions
(``LMMetrics.preemptions`` is None); with ``num_blocks`` sized for ``max_num_seqs`` full
contexts it has none to make. Its cache-usage figure is the one of the last step's schedule, so
it trails a cancel by one step; with no sequence left the usage is 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ...errors import BackendError, InferenceError
from ..base import Availability, BackendOptions
from .base import FinishReason, GenParams, LMBackend, LMHandle, LMMetrics, LMSpec
from .kv import Architecture, KVPlan, KVPrecision, refit

log = logging.getLogger(__name__)

_WARM_UP_ID = 2**63 - 1  # the runtime takes unsigned ids; the engine numbers requests from 1
_PRECISION_HINT = {"u4": "u4", "u8": "u8", "f16": "f16", "f32": "f32"}


class OpenVinoGenAIOptions(BackendOptions):
    """``options:`` of an ``openvino-genai`` entry in a profile's ``llm.runtimes``."""

    device: str = Field(default="CPU", description="OpenVINO device; continuous batching is verified on CPU")
    kv_cache_precision: KVPrecision = "u8"
    enable_prefix_caching: bool = True
    dynamic_split_fuse: bool = True
    num_threads: int | None = Field(default=None, ge=1, description="INFERENCE_NUM_THREADS; None = all cores")
    inference_precision: Literal["auto", "f32", "f16", "bf16"] = Field(
        default="auto", description="INFERENCE_PRECISION_HINT; auto = the device default (bf16 on BF16/AMX CPUs)"
    )
    max_num_batched_tokens: int = Field(default=256, ge=16, description="tokens per step (prefill chunk)")


def _first_reason(exc: BaseException) -> str:
    """The first line of an OpenVINO error that says something: its messages open with lines of
    source locations (``Exception from src/...cpp:117:``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not (line.startswith("Exception from ") and line.endswith(":"))]
    return (said or lines or [type(exc).__name__])[0]


class _OvHandle(LMHandle):
    __slots__ = ("_backend", "_done", "_handle", "_reason")

    def __init__(self, backend: OpenVinoGenAIBackend, handle: Any) -> None:
        self._backend = backend
        self._handle = handle
        self._reason: FinishReason | None = None
        self._done = False

    def read(self) -> list[int]:
        if self._done:
            return []
        handle = self._handle
        if not handle.can_read():
            status = handle.get_status()
            if status != self._backend._running:
                self._end("abort" if status != self._backend._finished else "stop")
            return []
        output = handle.read()[0]
        reason = self._backend._reasons.get(output.finish_reason)
        if reason is not None:
            self._end(reason)
        return list(output.generated_ids)

    def _end(self, reason: FinishReason) -> None:
        self._reason = reason
        self._done = True
        self._backend._live -= 1

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._reason

    def cancel(self) -> None:
        if not self._done:
            self._handle.cancel()
            self._end("abort")


class OpenVinoGenAIBackend(LMBackend):
    """OpenVINO GenAI's ``ContinuousBatchingPipeline`` (continuous batching, paged KV cache)."""

    name = "openvino-genai"
    Options = OpenVinoGenAIOptions
    continuous_batching: ClassVar[bool] = True
    kv_precisions: ClassVar[tuple[KVPrecision, ...]] = ("u4", "u8", "f16", "f32")
    block_size: ClassVar[int] = 32

    def __init__(self, options: OpenVinoGenAIOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._pipe: Any = None
        self._tokenizer: Any = None
        self._plan: KVPlan | None = None
        self._eos: frozenset[int] = frozenset()
        self._live = 0
        self._reasons: dict[Any, FinishReason] = {}
        self._running: Any = None
        self._finished: Any = None

    @property
    def opts(self) -> OpenVinoGenAIOptions:
        assert isinstance(self.options, OpenVinoGenAIOptions)
        return self.options

    @classmethod
    def probe(cls) -> Availability:
        try:
            import openvino_genai
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        return Availability(
            cls.name,
            True,
            version=openvino_genai.__version__,
            devices=("CPU (continuous batching, paged KV cache)",),
        )

    def kv_precision(self) -> KVPrecision:
        return self.opts.kv_cache_precision

    def open(self, model_dir: Path, plan: KVPlan) -> LMSpec:
        if plan.block_size != self.block_size:
            raise BackendError(
                f"openvino-genai pages the KV cache in blocks of {self.block_size}, plan has {plan.block_size}"
            )
        arch = Architecture.from_dir(model_dir)
        kv_bytes = self._open(model_dir, plan)
        per_token = math.ceil(kv_bytes / (plan.num_blocks * plan.block_size))
        if kv_bytes > plan.kv_budget_bytes:  # the quantized cache's scales and zero points
            fitted = refit(plan, per_token)
            log.info(
                "openvino-genai: the KV cache takes %d B/token, not %d: %s",
                per_token,
                plan.bytes_per_token,
                fitted.describe(),
            )
            self.close()
            plan = fitted
            kv_bytes = self._open(model_dir, plan)
            per_token = math.ceil(kv_bytes / (plan.num_blocks * plan.block_size))
        return LMSpec(
            context_length=plan.context_length,
            max_num_seqs=plan.max_num_seqs,
            kv_bytes=kv_bytes,
            eos_token_ids=self._eos,
            vocab_size=arch.vocab,
            continuous_batching=True,
            kv_bytes_per_token=per_token,
            plan=plan,
        )

    def _open(self, model_dir: Path, plan: KVPlan) -> int:
        """Build the pipeline with ``plan``'s cache and warm it up; the cache's size in bytes."""
        import openvino_genai as genai

        opts = self.opts
        scheduler = genai.SchedulerConfig()
        scheduler.num_kv_blocks = plan.num_blocks
        scheduler.max_num_seqs = plan.max_num_seqs
        scheduler.enable_prefix_caching = opts.enable_prefix_caching
        scheduler.dynamic_split_fuse = opts.dynamic_split_fuse
        batched = opts.max_num_batched_tokens
        scheduler.max_num_batched_tokens = batched if opts.dynamic_split_fuse else max(batched, plan.context_length)
        properties: dict[str, Any] = {"KV_CACHE_PRECISION": _PRECISION_HINT[plan.kv_precision]}
        if opts.num_threads is not None:
            properties["INFERENCE_NUM_THREADS"] = opts.num_threads
        if opts.inference_precision != "auto":
            properties["INFERENCE_PRECISION_HINT"] = opts.inference_precision
        try:
            pipe = genai.ContinuousBatchingPipeline(str(model_dir), scheduler, opts.device, properties)
            tokenizer = pipe.get_tokenizer()
            eos = {int(tokenizer.get_eos_token_id())} | {int(i) for i in pipe.get_config().stop_token_ids}
        except RuntimeError as exc:
            raise BackendError(f"openvino-genai cannot open {model_dir}: {_first_reason(exc)}") from exc
        self._pipe, self._tokenizer, self._plan = pipe, tokenizer, plan
        self._eos = frozenset(i for i in eos if i >= 0)
        self._reasons = {
            genai.GenerationFinishReason.STOP: "stop",
            genai.GenerationFinishReason.LENGTH: "length",
            genai.GenerationFinishReason.TOOL_CALL: "stop",
        }
        self._running = genai.GenerationStatus.RUNNING
        self._finished = genai.GenerationStatus.FINISHED
        return self._warm_up()

    def _warm_up(self) -> int:
        """Generate one token (compiles the model, allocates the cache); the cache's size in bytes."""
        handle = self.add(_WARM_UP_ID, [next(iter(self._eos), 0)], GenParams(max_tokens=1, ignore_eos=True))
        for _ in range(8):
            if not self.has_unfinished():
                break
            self.step()
            handle.read()
        if not handle.finished:
            handle.cancel()
            self.step()
        return int(self._pipe.get_metrics().kv_cache_size_in_bytes) or self._require_plan().kv_bytes

    def _require_plan(self) -> KVPlan:
        if self._plan is None:
            raise BackendError("openvino-genai: used before open()")
        return self._plan

    def encode(self, text: str) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=False).input_ids
        return [int(i) for i in ids.data[0]]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        if len(batch) == 1:
            return [self.decode(batch[0])]
        return [str(text) for text in self._tokenizer.decode([list(ids) for ids in batch], skip_special_tokens=True)]

    def add(self, request_id: int, prompt_ids: Sequence[int], params: GenParams) -> LMHandle:
        import openvino as ov
        import openvino_genai as genai

        if self._pipe is None:
            raise BackendError("openvino-genai: add() before open()")
        config = genai.GenerationConfig()
        try:  # the bindings raise TypeError/OverflowError for a value their C++ type cannot hold
            config.max_new_tokens = params.max_tokens
            config.ignore_eos = params.ignore_eos
            config.stop_token_ids = set(self._eos | params.stop_token_ids)
            if self._eos:
                config.eos_token_id = min(self._eos)
            if params.temperature > 0:
                config.do_sample = True
                config.temperature = params.temperature
                config.top_p = params.top_p
                if params.top_k > 0:
                    config.top_k = params.top_k
            if params.seed is not None:
                config.rng_seed = params.seed
            tensor = ov.Tensor(np.asarray([prompt_ids], dtype=np.int64))
            handle = self._pipe.add_request(request_id, tensor, config)
        except (RuntimeError, TypeError, ValueError, OverflowError) as exc:
            raise InferenceError(f"openvino-genai refused request {request_id}: {_first_reason(exc)}") from exc
        self._live += 1
        return _OvHandle(self, handle)

    def step(self) -> None:
        try:
            self._pipe.step()
        except RuntimeError as exc:
            raise InferenceError(f"openvino-genai step failed: {exc}") from exc

    def has_unfinished(self) -> bool:
        return bool(self._pipe.has_non_finished_requests())

    def metrics(self) -> LMMetrics:
        live = self._live
        if self._pipe is None:
            return LMMetrics(0, 0, 0.0, 0, None)
        raw = self._pipe.get_metrics()
        running = min(int(raw.scheduled_requests), live)
        usage = float(raw.cache_usage) / 100.0 if live else 0.0
        return LMMetrics(
            running=running,
            waiting=live - running,
            kv_usage=min(max(usage, 0.0), 1.0),
            kv_bytes=int(raw.kv_cache_size_in_bytes),
            preemptions=None,
        )

    def close(self) -> None:
        self._pipe = None
        self._tokenizer = None
        self._live = 0
