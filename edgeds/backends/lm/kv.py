"""The KV plan: how a memory budget is split between weights, the KV cache and runtime overhead.

Pure arithmetic over the model's architecture (``config.json``); no runtime is imported.

A decoder keeps, per generated or prompt token, one key and one value vector per layer and per
KV head, so one token of context costs::

    bytes_per_token = layers × 2 × kv_heads × head_dim × bytes_per_element

with ``bytes_per_element`` 0.5 for ``u4``, 1 for ``u8``, 2 for ``f16`` and 4 for ``f32`` (the
runtime's KV cache precision). The budget (the profile's ``memory.budget_mb``) is split::

    kv_budget = budget − weights − overhead

``overhead`` is the runtime's scratch (activations, tokenizer, allocator slack) that the plan
keeps out of the KV budget. A quantized cache also stores per-token scales and zero points, which
the formula leaves out: a backend that can measure its cache refits the plan to the measured bytes
per token (:func:`refit`) so the cache stays within ``kv_budget``. The cache is paged in blocks of
``block_size`` tokens (OpenVINO GenAI uses 32 on CPU); each sequence may reach the full context,
so it reserves ``ceil(context / block_size)`` blocks. ``max_num_seqs`` is how many such sequences
fit (capped by the caller's cap); when not even one full-context sequence fits, the context
shrinks to what fits. ``num_blocks`` = ``max_num_seqs`` × blocks per sequence: the engine admits
at most ``max_num_seqs`` sequences, so the runtime never has to preempt or swap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ...errors import ConfigError

__all__ = [
    "BYTES_PER_ELEMENT",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_MAX_NUM_SEQS",
    "KV_PRECISIONS",
    "MB",
    "MIN_CONTEXT",
    "Architecture",
    "KVPlan",
    "KVPrecision",
    "plan",
    "refit",
]

KVPrecision = Literal["u4", "u8", "f16", "f32"]
KV_PRECISIONS: tuple[KVPrecision, ...] = ("u4", "u8", "f16", "f32")
BYTES_PER_ELEMENT: dict[KVPrecision, float] = {"u4": 0.5, "u8": 1.0, "f16": 2.0, "f32": 4.0}
MB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 32  # tokens per KV block (OpenVINO GenAI on CPU)
DEFAULT_MAX_NUM_SEQS = 256  # the cap when the caller gives none (OpenVINO GenAI's default)
MIN_CONTEXT = 16  # tokens: a budget that leaves less than this for one sequence is refused


@dataclass(frozen=True)
class Architecture:
    """The shape of a decoder that the KV plan needs, read from its ``config.json``."""

    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_position: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Architecture:
        """From a Hugging Face ``config.json`` mapping (Qwen2, Llama, Phi-3, Mistral field names).

        Raises :class:`~edgeds.errors.ConfigError` naming the missing field.
        """

        def field(*names: str) -> int:
            for name in names:
                value = config.get(name)
                if isinstance(value, int) and value > 0:
                    return value
            raise ConfigError.single(None, None, names[0], "missing or not a positive integer in config.json")

        hidden = field("hidden_size", "n_embd")
        heads = field("num_attention_heads", "n_head")
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or hidden // heads
        return cls(
            model_type=str(config.get("model_type", "")),
            layers=field("num_hidden_layers", "n_layer"),
            hidden=hidden,
            heads=heads,
            kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            vocab=field("vocab_size"),
            max_position=field("max_position_embeddings", "n_positions", "max_sequence_length"),
        )

    @classmethod
    def from_genai_config(cls, config: Mapping[str, Any]) -> Architecture:
        """From an ONNX Runtime GenAI ``genai_config.json`` mapping (its ``model.decoder`` block)."""
        model = config.get("model")
        decoder = model.get("decoder") if isinstance(model, dict) else None
        if not isinstance(model, dict) or not isinstance(decoder, dict):
            raise ConfigError.single(None, None, "model.decoder", "missing in genai_config.json")
        return cls.from_config(
            {
                "model_type": model.get("type", ""),
                "num_hidden_layers": decoder.get("num_hidden_layers"),
                "hidden_size": decoder.get("hidden_size"),
                "num_attention_heads": decoder.get("num_attention_heads"),
                "num_key_value_heads": decoder.get("num_key_value_heads"),
                "head_dim": decoder.get("head_size"),
                "vocab_size": model.get("vocab_size"),
                "max_position_embeddings": model.get("context_length"),
            }
        )

    @classmethod
    def from_dir(cls, model_dir: Path) -> Architecture:
        """From ``model_dir/config.json`` (Hugging Face, OpenVINO GenAI), else ``genai_config.json``
        (ONNX Runtime GenAI)."""
        path = model_dir / "config.json"
        reader = cls.from_config
        if not path.is_file() and (model_dir / "genai_config.json").is_file():
            path, reader = model_dir / "genai_config.json", cls.from_genai_config
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError.single(path, None, "", f"cannot read: {exc}") from exc
        if not isinstance(config, dict):
            raise ConfigError.single(path, None, "", "not a JSON object")
        try:
            return reader(config)
        except ConfigError as exc:
            raise ConfigError.single(path, None, exc.problems[0][2], exc.problems[0][3]) from exc

    def kv_bytes_per_token(self, precision: KVPrecision) -> int:
        """Bytes of KV cache one token of context takes (rounded up to a whole byte)."""
        return math.ceil(self.layers * 2 * self.kv_heads * self.head_dim * BYTES_PER_ELEMENT[precision])


@dataclass(frozen=True)
class KVPlan:
    """The budget split (all sizes in bytes, lengths in tokens). See the module docstring."""

    kv_precision: KVPrecision
    bytes_per_token: int
    budget_bytes: int
    weights_bytes: int
    overhead_bytes: int
    kv_budget_bytes: int
    context_length: int
    max_num_seqs: int
    block_size: int
    num_blocks: int

    @property
    def kv_bytes(self) -> int:
        """Bytes the planned KV cache takes: ``num_blocks × block_size × bytes_per_token``."""
        return self.num_blocks * self.block_size * self.bytes_per_token

    @property
    def blocks_per_seq(self) -> int:
        """Blocks one sequence of the full context takes."""
        return math.ceil(self.context_length / self.block_size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the manifest's ``llm.kv_plan``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KVPlan:
        """Inverse of :meth:`to_dict`. Raises :class:`~edgeds.errors.ConfigError` on a bad field."""
        try:
            plan = cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise ConfigError.single(None, None, "kv_plan", f"malformed KV plan: {exc}") from exc
        if plan.kv_precision not in KV_PRECISIONS:
            raise ConfigError.single(None, None, "kv_plan.kv_precision", f"unknown {plan.kv_precision!r}")
        return plan

    def describe(self) -> str:
        """One line for logs and reports."""
        return (
            f"budget {self.budget_bytes / MB:.1f} MiB = weights {self.weights_bytes / MB:.1f} + "
            f"KV {self.kv_bytes / MB:.2f} ({self.kv_precision}, {self.bytes_per_token} B/token, "
            f"{self.num_blocks} blocks of {self.block_size}) + overhead {self.overhead_bytes / MB:.1f}; "
            f"{self.max_num_seqs} sequences × {self.context_length} tokens"
        )


def plan(
    arch: Architecture,
    *,
    budget_mb: float,
    weights_bytes: int,
    kv_precision: KVPrecision = "u8",
    context_length: int | None = None,
    max_num_seqs: int | None = None,
    overhead_mb: float = 64.0,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> KVPlan:
    """Split ``budget_mb`` (MiB) into weights, KV cache and overhead; see the module docstring.

    ``context_length`` caps the model's ``max_position`` (None: the model's); ``max_num_seqs``
    caps the sequences (None: :data:`DEFAULT_MAX_NUM_SEQS`). Raises
    :class:`~edgeds.errors.ConfigError` (field ``memory.budget_mb``) with the figures when the
    weights and overhead leave no room for one sequence of :data:`MIN_CONTEXT` tokens.
    """
    if kv_precision not in KV_PRECISIONS:
        raise ConfigError.single(None, None, "kv_cache_precision", f"unknown {kv_precision!r} (one of {KV_PRECISIONS})")
    if block_size < 1:
        raise ConfigError.single(None, None, "block_size", f"must be positive, not {block_size}")
    budget = int(budget_mb * MB)
    overhead = int(overhead_mb * MB)
    context = arch.max_position if context_length is None else min(context_length, arch.max_position)
    cap = DEFAULT_MAX_NUM_SEQS if max_num_seqs is None else max_num_seqs
    if context < 1 or cap < 1:
        raise ConfigError.single(None, None, "llm", f"context_length {context} and max_num_seqs {cap} must be positive")
    return _split(
        kv_precision, arch.kv_bytes_per_token(kv_precision), budget, weights_bytes, overhead, context, cap, block_size
    )


def refit(kv_plan: KVPlan, bytes_per_token: int) -> KVPlan:
    """``kv_plan`` with the bytes per token a runtime was measured to take (a quantized cache
    also stores per-token scales and zero points, which :meth:`Architecture.kv_bytes_per_token`
    leaves out): the same budget, the context and the sequences shrunk until
    ``num_blocks × block_size × bytes_per_token`` fits ``kv_budget_bytes``; never grown.
    :class:`~edgeds.errors.ConfigError` (``memory.budget_mb``) when not one sequence of
    :data:`MIN_CONTEXT` tokens fits."""
    return _split(
        kv_plan.kv_precision,
        max(bytes_per_token, 1),
        kv_plan.budget_bytes,
        kv_plan.weights_bytes,
        kv_plan.overhead_bytes,
        kv_plan.context_length,
        kv_plan.max_num_seqs,
        kv_plan.block_size,
    )


def _split(
    kv_precision: KVPrecision,
    per_token: int,
    budget: int,
    weights_bytes: int,
    overhead: int,
    context: int,
    cap: int,
    block_size: int,
) -> KVPlan:
    kv_budget = budget - weights_bytes - overhead
    block_bytes = per_token * block_size
    budget_mb, overhead_mb = budget / MB, overhead / MB
    blocks_available = max(kv_budget, 0) // block_bytes
    blocks_per_seq = math.ceil(context / block_size)
    if blocks_available < blocks_per_seq:
        context = min(context, blocks_available * block_size)
        if context < MIN_CONTEXT:
            raise ConfigError.single(
                None,
                None,
                "memory.budget_mb",
                f"{budget_mb:g} MiB leaves {kv_budget / MB:.2f} MiB for the KV cache after weights "
                f"{weights_bytes / MB:.1f} MiB and overhead {overhead_mb:g} MiB: not one sequence of "
                f"{MIN_CONTEXT} tokens ({per_token} B/token, {kv_precision})",
            )
        blocks_per_seq = math.ceil(context / block_size)
    seqs = min(cap, blocks_available // blocks_per_seq)
    return KVPlan(
        kv_precision=kv_precision,
        bytes_per_token=per_token,
        budget_bytes=budget,
        weights_bytes=weights_bytes,
        overhead_bytes=overhead,
        kv_budget_bytes=kv_budget,
        context_length=context,
        max_num_seqs=seqs,
        block_size=block_size,
        num_blocks=seqs * blocks_per_seq,
    )
