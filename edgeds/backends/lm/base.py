"""The LM backend contract: a generative runtime behind one small, step-driven interface.

Lifecycle: ``LMBackend(options)`` is free (imports no runtime). :meth:`LMBackend.open` loads a
model directory (an OpenVINO GenAI or ONNX Runtime GenAI export) and allocates the KV cache the
:class:`~edgeds.backends.lm.kv.KVPlan` sets; :meth:`LMBackend.close` releases it and is idempotent.

Threads: ``open``, ``add``, ``step``, ``has_unfinished``, ``metrics``, ``close`` and every
:class:`LMHandle` method are called from one and the same thread (the engine's step loop opens
and owns the backend; ONNX Runtime GenAI's Engine refuses any other thread). ``encode`` and
``decode`` may be called from any thread at any time after ``open``.

Serving loop: ``add`` queues a sequence in the runtime's own scheduler (it never runs the
model); each ``step`` runs one scheduler iteration (prefill chunks and/or one decode token for the
sequences the runtime schedules); :meth:`LMHandle.read` then returns the tokens generated since
the previous read. The caller keeps at most ``LMSpec.max_num_seqs`` unfinished sequences in the
runtime (the engine's admission does; not every runtime enforces it itself). A handle is
``finished`` once its last tokens are read; ``cancel`` ends it at once and frees its KV blocks
at the runtime's next step. Batching is the runtime's: a backend with ``continuous_batching``
lets a sequence added mid-generation join the running batch; one without it (static batching)
runs it once the current batch has finished.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal

from pydantic import ValidationError

from ...errors import ConfigError
from ..base import Availability, BackendOptions
from .kv import KVPlan, KVPrecision

FinishReason = Literal["stop", "length", "abort", "timeout"]


@dataclass(frozen=True)
class GenParams:
    """How one sequence is generated. ``temperature == 0`` is greedy decoding.

    ``top_k == 0`` and ``top_p == 1`` disable those filters; ``seed`` fixes sampling (None: the
    runtime's); ``stop_token_ids`` end the sequence like EOS (finish reason ``stop``);
    ``ignore_eos`` generates exactly ``max_tokens`` tokens.
    """

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False


@dataclass(frozen=True)
class LMSpec:
    """What an opened model serves: the limits the engine admits against.

    ``kv_bytes`` is the KV cache the runtime holds for ``max_num_seqs`` full sequences (bytes);
    ``kv_bytes_per_token`` what one token of it takes, as measured after opening where the runtime
    reports its cache's size (else the plan's figure); ``plan`` the KV plan the runtime was opened
    with: the one given, or, when the measured cache did not fit its KV budget, that plan refitted
    (:func:`~edgeds.backends.lm.kv.refit`) to the measured bytes per token.
    """

    context_length: int
    max_num_seqs: int
    kv_bytes: int
    eos_token_ids: frozenset[int]
    vocab_size: int
    continuous_batching: bool
    kv_bytes_per_token: int
    plan: KVPlan


@dataclass(frozen=True)
class LMMetrics:
    """A snapshot of the runtime's scheduler.

    ``running``: sequences being generated; ``waiting``: added but not yet scheduled; ``kv_usage``:
    share of the KV cache in use (0..1); ``kv_bytes``: the cache's size; ``preemptions``: how often
    the runtime evicted a sequence's KV to make room, or None when the runtime does not report it.
    """

    running: int
    waiting: int
    kv_usage: float
    kv_bytes: int
    preemptions: int | None


class LMHandle(abc.ABC):
    """One sequence in the runtime. See the module docstring for the threading rule."""

    @abc.abstractmethod
    def read(self) -> list[int]:
        """Token ids generated since the last read (empty when none); never blocks."""

    @property
    @abc.abstractmethod
    def finished(self) -> bool:
        """True once the sequence has ended and its last tokens have been read (or it was cancelled)."""

    @property
    @abc.abstractmethod
    def finish_reason(self) -> FinishReason | None:
        """``stop`` (EOS or a stop token), ``length`` (max_tokens or the context), ``abort`` (cancelled)."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """End the sequence now; its KV blocks are freed at the runtime's next step. Idempotent."""


class LMBackend(abc.ABC):
    """One generative runtime. See the module docstring for the lifecycle and threading rule."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]]
    continuous_batching: ClassVar[bool]
    kv_precisions: ClassVar[tuple[KVPrecision, ...]]
    block_size: ClassVar[int]
    install_hint: ClassVar[str] = "pip install 'edgeds[llm]'"

    def __init__(self, options: BackendOptions | Mapping[str, Any] | None = None) -> None:
        """:class:`~edgeds.errors.ConfigError` (one line, naming the option) when ``options``
        do not validate."""
        if options is None:
            options = self.Options()
        elif not isinstance(options, BackendOptions):
            try:
                options = self.Options.model_validate(dict(options))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                field = f"{self.name} options" + (f".{where}" if where else "")
                raise ConfigError.single(None, None, field, first["msg"]) from exc
        self.options = options

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> Availability:
        """Whether the runtime imports here, its version, and how it batches (in ``devices``)."""

    @abc.abstractmethod
    def kv_precision(self) -> KVPrecision:
        """The KV cache precision this backend will use with its options (what the plan assumes)."""

    @abc.abstractmethod
    def open(self, model_dir: Path, plan: KVPlan) -> LMSpec:
        """Load ``model_dir`` with the KV cache of ``plan``. BackendError when it cannot."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, adding no special token (a chat template adds those)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens skipped. A trailing incomplete UTF-8 sequence decodes as U+FFFD."""

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """:meth:`decode` of each id list, in one runtime call where the runtime has one (its cost
        is per call, so the engine decodes a whole step's sequences at once)."""
        return [self.decode(ids) for ids in batch]

    @abc.abstractmethod
    def add(self, request_id: int, prompt_ids: Sequence[int], params: GenParams) -> LMHandle:
        """Queue one sequence in the runtime's scheduler; never runs the model."""

    @abc.abstractmethod
    def step(self) -> None:
        """Run one scheduler iteration. InferenceError when the runtime fails."""

    @abc.abstractmethod
    def has_unfinished(self) -> bool:
        """Whether any added sequence has not finished (or been cancelled and dropped)."""

    @abc.abstractmethod
    def metrics(self) -> LMMetrics:
        """The scheduler's current state."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the model and its KV cache. Idempotent."""

    def __enter__(self) -> LMBackend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def model_weights_bytes(model_dir: Path) -> int:
    """Bytes of the weight files in an exported model directory (``*.bin``, ``*.onnx``, ``*.onnx.data``).

    The tokenizer models (``openvino_tokenizer.bin``, ``openvino_detokenizer.bin``) count too:
    they are loaded beside the weights.
    """
    total = 0
    for path in model_dir.iterdir():
        if path.is_file() and (path.suffix in (".bin", ".onnx") or path.name.endswith(".onnx.data")):
            total += path.stat().st_size
    return total


__all__ = [
    "Availability",
    "FinishReason",
    "GenParams",
    "LMBackend",
    "LMHandle",
    "LMMetrics",
    "LMSpec",
    "model_weights_bytes",
]
