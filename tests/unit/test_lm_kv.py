"""Property tests of the KV plan (pure arithmetic over the architecture)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeds.backends.lm.kv import BYTES_PER_ELEMENT, KV_PRECISIONS, MB, MIN_CONTEXT, Architecture, KVPlan, plan, refit
from edgeds.errors import ConfigError

QWEN25_05B = {
    "model_type": "qwen2",
    "num_hidden_layers": 24,
    "hidden_size": 896,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
}


@st.composite
def architectures(draw: st.DrawFn) -> Architecture:
    heads = draw(st.sampled_from([1, 2, 4, 8, 14, 16, 32]))
    return Architecture(
        model_type="qwen2",
        layers=draw(st.integers(1, 48)),
        hidden=heads * 64,
        heads=heads,
        kv_heads=draw(st.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0] or [1])),
        head_dim=draw(st.sampled_from([16, 32, 64, 128])),
        vocab=1000,
        max_position=draw(st.sampled_from([128, 512, 2048, 32768])),
    )


def test_bytes_per_token_is_the_formula() -> None:
    arch = Architecture.from_config(QWEN25_05B)
    assert (arch.layers, arch.kv_heads, arch.head_dim) == (24, 2, 64)
    assert arch.kv_bytes_per_token("f16") == 24 * 2 * 2 * 64 * 2 == 12288
    assert arch.kv_bytes_per_token("u8") == 6144
    assert arch.kv_bytes_per_token("u4") == 3072
    assert arch.kv_bytes_per_token("f32") == 24576


def test_the_worked_example() -> None:
    arch = Architecture.from_config(QWEN25_05B)
    p = plan(arch, budget_mb=1024, weights_bytes=400 * MB, kv_precision="u8", context_length=2048, max_num_seqs=8)
    assert p.kv_budget_bytes == (1024 - 400 - 64) * MB
    assert (p.context_length, p.max_num_seqs, p.num_blocks) == (2048, 8, 8 * 64)
    assert p.kv_bytes == 8 * 2048 * 6144 <= p.kv_budget_bytes
    # 550 - 400 - 64 = 86 MiB of KV; one 2048-token sequence takes 12 MiB at u8: 7 fit
    tight = plan(arch, budget_mb=550, weights_bytes=400 * MB, kv_precision="u8", context_length=2048, max_num_seqs=8)
    assert (tight.max_num_seqs, tight.context_length) == (7, 2048)
    # 470 - 400 - 64 = 6 MiB: not one full sequence, so the context shrinks to 1024 tokens
    small = plan(arch, budget_mb=470, weights_bytes=400 * MB, kv_precision="u8", context_length=2048)
    assert (small.max_num_seqs, small.context_length) == (1, 1024)
    assert KVPlan.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert "8 sequences × 2048 tokens" in p.describe()


@given(
    architectures(),
    st.sampled_from(KV_PRECISIONS),
    st.integers(1, 4096),
    st.integers(0, 2000),
    st.one_of(st.none(), st.integers(1, 64)),
    st.one_of(st.none(), st.integers(1, 40000)),
    st.sampled_from([1, 16, 32]),
)
def test_the_plan_fits_its_budget(
    arch: Architecture,
    precision: str,
    budget_mb: int,
    weights_mb: int,
    max_seqs: int | None,
    context: int | None,
    block_size: int,
) -> None:
    try:
        p = plan(
            arch,
            budget_mb=budget_mb,
            weights_bytes=weights_mb * MB,
            kv_precision=precision,  # type: ignore[arg-type]
            context_length=context,
            max_num_seqs=max_seqs,
            overhead_mb=16,
            block_size=block_size,
        )
    except ConfigError as exc:
        assert "memory.budget_mb" in str(exc)
        per_token = math.ceil(arch.layers * 2 * arch.kv_heads * arch.head_dim * BYTES_PER_ELEMENT[precision])  # type: ignore[index]
        blocks = max(budget_mb * MB - weights_mb * MB - 16 * MB, 0) // (per_token * block_size)
        assert blocks * block_size < MIN_CONTEXT
        return
    # what is planned fits: weights + KV + overhead within the budget
    assert p.weights_bytes + p.kv_bytes + p.overhead_bytes <= p.budget_bytes
    assert p.bytes_per_token == arch.kv_bytes_per_token(p.kv_precision)
    wanted = min(context or arch.max_position, arch.max_position)
    assert min(MIN_CONTEXT, wanted) <= p.context_length <= wanted
    assert 1 <= p.max_num_seqs <= (max_seqs or 256)
    assert p.num_blocks == p.max_num_seqs * p.blocks_per_seq
    assert p.blocks_per_seq * p.block_size >= p.context_length
    # maximal: one more sequence would not fit (unless the cap binds), and the context shrank only when needed
    if (max_seqs is None or p.max_num_seqs < max_seqs) and p.max_num_seqs < 256:
        assert (p.max_num_seqs + 1) * p.blocks_per_seq * p.block_size * p.bytes_per_token > p.kv_budget_bytes
    if p.context_length < wanted:
        assert p.max_num_seqs == 1


def test_a_budget_without_room_is_refused_with_the_figures() -> None:
    arch = Architecture.from_config(QWEN25_05B)
    with pytest.raises(ConfigError, match=r"memory.budget_mb: 450 MiB leaves -14.00 MiB for the KV cache"):
        plan(arch, budget_mb=450, weights_bytes=400 * MB)


def test_architecture_from_configs(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN25_05B))
    assert Architecture.from_dir(tmp_path).head_dim == 64
    llama = {**QWEN25_05B, "model_type": "llama", "head_dim": 128}
    assert Architecture.from_config(llama).head_dim == 128
    no_kv = {k: v for k, v in QWEN25_05B.items() if k != "num_key_value_heads"}
    assert Architecture.from_config(no_kv).kv_heads == 14  # multi-head attention
    genai = tmp_path / "ort"
    genai.mkdir()
    decoder = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_size": 16,
    }
    (genai / "genai_config.json").write_text(
        json.dumps({"model": {"type": "qwen2", "vocab_size": 300, "context_length": 512, "decoder": decoder}})
    )
    assert Architecture.from_dir(genai) == Architecture("qwen2", 2, 64, 4, 2, 16, 300, 512)
    with pytest.raises(ConfigError, match="vocab_size"):
        Architecture.from_config({k: v for k, v in QWEN25_05B.items() if k != "vocab_size"})
    with pytest.raises(ConfigError, match="cannot read"):
        Architecture.from_dir(tmp_path / "missing")


@given(
    budget_mb=st.floats(min_value=2, max_value=4096),
    context=st.integers(min_value=MIN_CONTEXT, max_value=8192),
    cap=st.integers(min_value=1, max_value=64),
    factor=st.floats(min_value=1.0, max_value=8.0),
)
def test_refit_to_measured_bytes_fits_the_same_kv_budget(
    budget_mb: float, context: int, cap: int, factor: float
) -> None:
    """A runtime whose cache measures ``factor`` × the formula: the refitted plan's cache, at the
    measured bytes per token, fits the KV budget, and it never grows the context or sequences."""
    arch = Architecture("qwen2", 24, 896, 14, 2, 64, 151936, 32768)
    try:
        base = plan(
            arch, budget_mb=budget_mb, weights_bytes=MB, context_length=context, max_num_seqs=cap, overhead_mb=1
        )
    except ConfigError:
        return
    measured = math.ceil(base.bytes_per_token * factor)
    try:
        fitted = refit(base, measured)
    except ConfigError as exc:
        assert exc.problems[0][2] == "memory.budget_mb"
        assert base.kv_budget_bytes // (measured * base.block_size) * base.block_size < MIN_CONTEXT  # whole blocks
        return
    assert fitted.bytes_per_token == measured and fitted.kv_bytes <= fitted.kv_budget_bytes == base.kv_budget_bytes
    assert fitted.context_length <= base.context_length and fitted.max_num_seqs <= base.max_num_seqs
    assert (fitted.budget_bytes, fitted.weights_bytes, fitted.overhead_bytes) == (
        base.budget_bytes,
        base.weights_bytes,
        base.overhead_bytes,
    )
    if factor == 1.0:
        assert fitted == base
