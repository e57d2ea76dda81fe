"""ONNX Runtime GenAI LM backend: ``og.Engine`` as it is, with **static batching on CPU**.

On CPU, ONNX Runtime GenAI 0.18's ``Engine`` schedules statically: it starts a batch of up to
``max_batch_size`` (= ``plan.max_num_seqs``) requests and runs it until every one of them has
finished; a request added meanwhile waits and starts with the next batch (paged attention and
dynamic batching are CUDA/WebGPU features there). edgeds uses it as it is and does not schedule
on top. Its KV cache is the model's own dtype (``f32`` for the CPU exports), one buffer of
``context_length`` tokens per batch slot, so ``kv_usage`` is the share of slots in use and there
are no preemptions (``0``). Stop token ids other than EOS end the sequence through
``cancel_turn`` (finish reason ``stop``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from ...errors import BackendError, InferenceError
from ..base import Availability, BackendOptions
from .base import FinishReason, GenParams, LMBackend, LMHandle, LMMetrics, LMSpec
from .kv import Architecture, KVPlan, KVPrecision

log = logging.getLogger(__name__)

STATIC_BATCHING = "CPU (static batching: a request added mid-batch waits for the next batch)"


class OnnxRuntimeGenAIOptions(BackendOptions):
    """``options:`` of an ``onnxruntime-genai`` entry in a profile's ``llm.runtimes``."""

    num_threads: int | None = Field(default=None, ge=1, description="intra-op threads; None = all cores")
    event_buffer: int = Field(default=256, ge=8, description="engine events read per step")


class _OrtHandle(LMHandle):
    __slots__ = ("_backend", "_cancelled_stop", "_done", "_ended", "_pending", "_reason", "_request", "_stops", "_turn")

    def __init__(self, backend: OnnxRuntimeGenAIBackend, request: Any, turn: int, stops: frozenset[int]) -> None:
        self._backend = backend
        self._request = request
        self._turn = turn
        self._stops = stops
        self._pending: list[int] = []
        self._reason: FinishReason | None = None
        self._ended = False  # the runtime finished the turn (tokens may still be unread)
        self._done = False
        self._cancelled_stop = False

    def _event(self, token: int | None, finished: bool, reason: FinishReason | None) -> None:
        if self._ended:
            return
        if token is not None:
            self._pending.append(token)
            if token in self._stops and not finished:
                self._cancelled_stop = True
                self._request.cancel_turn(self._turn)
                finished, reason = True, "stop"
        if finished:
            self._ended = True
            self._reason = "stop" if self._cancelled_stop else reason
            self._backend._finish(self)

    def read(self) -> list[int]:
        tokens = self._pending
        if tokens:
            self._pending = []
        if self._ended and not self._done:
            self._done = True
        return tokens

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._reason

    def cancel(self) -> None:
        if not self._ended:
            self._request.cancel_turn(self._turn)
            self._ended = True
            self._reason = "abort"
            self._backend._finish(self)
        self._pending = []
        self._done = True


class OnnxRuntimeGenAIBackend(LMBackend):
    """ONNX Runtime GenAI's ``Engine``: static batching on CPU (see the module docstring)."""

    name = "onnxruntime-genai"
    Options = OnnxRuntimeGenAIOptions
    continuous_batching: ClassVar[bool] = False
    kv_precisions: ClassVar[tuple[KVPrecision, ...]] = ("f32",)
    block_size: ClassVar[int] = 1

    def __init__(self, options: OnnxRuntimeGenAIOptions | dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self._model: Any = None
        self._engine: Any = None
        self._tokenizer: Any = None
        self._buffer: Any = None
        self._plan: KVPlan | None = None
        self._by_request: dict[Any, _OrtHandle] = {}
        self._started: set[_OrtHandle] = set()
        self._reasons: dict[Any, FinishReason] = {}
        self._token_flag = 0
        self._finished_flag = 0
        self._failed_flag = 0

    @property
    def opts(self) -> OnnxRuntimeGenAIOptions:
        assert isinstance(self.options, OnnxRuntimeGenAIOptions)
        return self.options

    @classmethod
    def probe(cls) -> Availability:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            return Availability(cls.name, False, reason=str(exc), hint=cls.install_hint)
        return Availability(cls.name, True, version=og.__version__, devices=(STATIC_BATCHING,))

    def kv_precision(self) -> KVPrecision:
        return "f32"

    def open(self, model_dir: Path, plan: KVPlan) -> LMSpec:
        import onnxruntime_genai as og

        arch = Architecture.from_dir(model_dir)
        overlay: dict[str, Any] = {
            "engine": {"static_batching": {"max_batch_size": plan.max_num_seqs}},
            "search": {"max_length": plan.context_length},
        }
        if self.opts.num_threads is not None:
            overlay["model"] = {"decoder": {"session_options": {"intra_op_num_threads": self.opts.num_threads}}}
        try:
            config = og.Config(str(model_dir))
            config.overlay(json.dumps(overlay))
            config.clear_providers()
            self._model = og.Model(config)
            self._tokenizer = og.Tokenizer(self._model)
            self._engine = og.Engine(self._model)
            self._buffer = self._engine.create_event_buffer(self.opts.event_buffer)
            eos = frozenset(int(i) for i in self._tokenizer.eos_token_ids)
        except RuntimeError as exc:
            self.close()
            raise BackendError(
                f"onnxruntime-genai cannot open {model_dir}: {str(exc).strip().splitlines()[0]}"
            ) from exc
        self._plan = plan
        reason = og.FinishReason
        self._reasons = {
            reason.EOS: "stop",
            reason.STOP_STRING: "stop",
            reason.MAX_GENERATED_TOKENS: "length",
            reason.MAX_SESSION_TOKENS: "length",
            reason.CANCELLED: "abort",
        }
        self._token_flag = int(og.EngineEventFlags.TOKEN.value)
        self._finished_flag = int(og.EngineEventFlags.TURN_FINISHED.value)
        self._failed_flag = int(og.EngineEventFlags.FAILED.value)
        return LMSpec(
            context_length=plan.context_length,
            max_num_seqs=plan.max_num_seqs,
            kv_bytes=plan.max_num_seqs * plan.context_length * plan.bytes_per_token,
            eos_token_ids=eos,
            vocab_size=arch.vocab,
            continuous_batching=False,
            kv_bytes_per_token=plan.bytes_per_token,
            plan=plan,
        )

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._tokenizer.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(np.asarray(ids, dtype=np.int32)))

    def add(self, request_id: int, prompt_ids: Sequence[int], params: GenParams) -> LMHandle:
        import onnxruntime_genai as og

        if self._engine is None:
            raise BackendError("onnxruntime-genai: add() before open()")
        try:
            request = self._engine.create_request()
            turn = og.TurnOptions(request)
            turn.set_max_generated_tokens(params.max_tokens)
            if params.ignore_eos:
                turn.set_min_generated_tokens(params.max_tokens)
            if params.temperature > 0:
                turn.set_do_sample(True)
                turn.set_temperature(params.temperature)
                turn.set_top_p(params.top_p)
                turn.set_top_k(params.top_k)
            else:
                turn.set_do_sample(False)
            if params.seed is not None:
                turn.set_seed(params.seed)
            turn_id = request.begin_turn(np.asarray(prompt_ids, dtype=np.int32), turn)
        except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # also a value its C++ type cannot hold
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InferenceError(f"onnxruntime-genai refused request {request_id}: {reason}") from exc
        handle = _OrtHandle(self, request, turn_id, params.stop_token_ids)
        self._by_request[request] = handle
        return handle

    def _finish(self, handle: _OrtHandle) -> None:
        self._started.discard(handle)
        self._by_request.pop(handle._request, None)

    def step(self) -> None:
        try:
            events = self._engine.run(self._buffer)
        except RuntimeError as exc:
            raise InferenceError(f"onnxruntime-genai step failed: {exc}") from exc
        token_flag, finished_flag, failed_flag = self._token_flag, self._finished_flag, self._failed_flag
        for event in events:
            handle = self._by_request.get(event.request)
            if handle is None:
                continue
            flags = int(event.flags.value)
            if flags & failed_flag:
                log.error("onnxruntime-genai: request failed: %s", event.error_code.name)
            self._started.add(handle)
            finished = bool(flags & (finished_flag | failed_flag))
            reason = self._reasons.get(event.finish_reason, "abort") if finished else None
            handle._event(int(event.token) if flags & token_flag else None, finished, reason)

    def has_unfinished(self) -> bool:
        return bool(self._engine is not None and self._engine.has_pending_requests())

    def metrics(self) -> LMMetrics:
        plan = self._plan
        if plan is None:
            return LMMetrics(0, 0, 0.0, 0, 0)
        running = len(self._started)
        return LMMetrics(
            running=running,
            waiting=len(self._by_request) - running,
            kv_usage=running / plan.max_num_seqs,
            kv_bytes=plan.max_num_seqs * plan.context_length * plan.bytes_per_token,
            preemptions=0,
        )

    def close(self) -> None:
        self._by_request.clear()
        self._started.clear()
        self._buffer = None
        self._engine = None
        self._tokenizer = None
        self._model = None
