"""Compiling a causal-lm card: the LM runtime chain behind the causal-lm gate, into a schema-2 bundle."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from edgeds.bundle import load_bundle, verify_bundle
from edgeds.cli import app
from edgeds.compile import compile_model
from edgeds.compile.lm_pipeline import variants
from edgeds.errors import CompileError
from edgeds.modelcard import load_lm_card

LM_CACHE_NAME = "compile"  # under LM_CACHE: where the shared bundle's compile cached its work


def test_the_fallback_plan_per_runtime() -> None:
    ov = [(v.name, skip) for v, skip in variants("openvino-genai", "int4")]
    assert [name for name, _ in ov] == ["int4", "int4-r0.8", "int4-r0.5", "int8", "fp16", "fp32"]
    assert all(skip is None for _, skip in ov)
    ort = {v.name: skip for v, skip in variants("onnxruntime-genai", "int4")}
    assert ort["int4"] is None and ort["fp32"] is None
    assert ort["int4-r0.8"] == "onnxruntime-genai has no INT4/INT8 mix (NNCF ratio): step skipped"
    assert ort["int8"] == "the LM toolchain exports onnxruntime-genai as int4 or fp32 only"
    assert [v.name for v, _ in variants("openvino-genai", "int8")] == ["int8", "fp16", "fp32"]


def test_a_profile_without_an_llm_block_cannot_compile_a_causal_lm(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": 512}))
    (checkpoint / "tokenizer.json").write_text("{}")
    (checkpoint / "chat_template.jinja").write_text("{{ messages }}")
    (tmp_path / "lm.yaml").write_text(
        "schema: 1\nname: lm\nversion: 1.0.0\ntask: causal-lm\nmodel: checkpoint\narchitecture: qwen2\n"
        "context_length: 128\n"
    )
    from edgeds.config import load_profile

    loaded = load_profile("x86-cpu").model_copy(update={"llm": None, "name": "no-llm"})
    with pytest.raises(CompileError, match=r"^profile 'no-llm' has no llm block: it cannot compile a causal-lm model$"):
        compile_model(tmp_path, loaded)


@pytest.mark.slow
def test_the_shared_lm_bundle_carries_what_serving_needs(lm_bundle: Path, lm_card: Path) -> None:
    manifest = verify_bundle(lm_bundle, None)
    assert manifest.schema_version == 2 and manifest.task == "causal-lm"
    primary = manifest.primary
    assert (primary.runtime, primary.precision) == ("openvino-genai", "int4")
    assert primary.gated is not None and primary.gated.where == "compile-host"
    assert primary.weights["group_size"] in (32, 64, 128) and primary.weights["ratio"] == 1.0
    figures = primary.gated.figures
    assert 0.0 <= figures["token_agreement"] <= 1.0 and figures["tokenizer_agreement"] == 1.0
    assert figures["reference_perplexity"] > 0 and figures["perplexity"] is None
    assert figures["notes"] == ["perplexity not measured: the openvino-genai backend exposes no logits"]
    llm = manifest.llm
    assert llm is not None and llm.architecture == "qwen2"
    assert llm.kv_plan["max_num_seqs"] == llm.max_num_seqs >= 1 and llm.kv_plan["kv_precision"] == "u8"
    with load_bundle(lm_bundle) as bundle:
        assert (bundle.artifact_path / "openvino_model.xml").is_file()
        assert (bundle.artifact_path / "openvino_tokenizer.xml").is_file()
        assert (bundle.root / llm.tokenizer / "tokenizer.json").is_file()
        assert (bundle.root / llm.chat_template).read_text() == load_lm_card(lm_card).chat_template_text()
        golden = json.loads((bundle.root / llm.golden.prompts).read_text())
        assert len(golden) == llm.golden.count >= 1
        assert all(row["prompt_ids"] and "output_ids" in row and "reference_ids" in row for row in golden)
        assert bundle.digest.startswith("sha256:")


@pytest.mark.slow
def test_the_evaluation_cache_is_keyed_by_the_kv_plan(
    llm_toolchain: ModuleType,
    lm_card: Path,
    lm_profile: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plan's batch (max_num_seqs) and context change what the gate generates: a profile that
    changes them re-evaluates the cached export instead of reusing the figures and outputs."""
    from edgeds.compile.report import CompileResult
    from tests.conftest import LM_TEST_PROMPTS, TOOLCHAINS

    monkeypatch.setenv("EDGEDS_TOOLCHAINS", str(TOOLCHAINS))
    two = lm_profile(tmp_path, name="lm-two-seqs")
    two.write_text(two.read_text().replace("  max_num_seqs: 4\n", "  max_num_seqs: 2\n"))
    four = lm_profile(tmp_path)
    results = [
        compile_model(
            lm_card,
            profile,
            out=tmp_path / f"bundle-{i}",
            validation_limit=LM_TEST_PROMPTS,
            cache_root=tmp_path / "cache",
        )
        for i, profile in enumerate((four, four, two))
    ]
    assert all(isinstance(r, CompileResult) for r in results)
    first, same, other = (r.report.attempts[0] for r in results)
    assert not first.cached and same.cached  # the same profile: export and evaluation reused
    assert not other.cached  # the export is reused, its evaluation under the new plan is not


@pytest.mark.slow
def test_a_budget_int4_cannot_meet_ships_the_next_precision_and_says_why(
    llm_toolchain: ModuleType,
    lm_tiny_card: Path,
    lm_profile: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tiny random-init checkpoint: INT4 of untrained weights leaves FP32's greedy path within
    a few tokens, while the unquantized export with an f32 KV cache follows it token for token; a
    budget of full agreement so fails INT4 and ships a later link of the chain, saying why."""
    from edgeds.compile.report import CompileResult
    from tests.conftest import LM_CACHE, LM_TEST_PROMPTS, TOOLCHAINS

    monkeypatch.setenv("EDGEDS_TOOLCHAINS", str(TOOLCHAINS))
    profile = lm_profile(tmp_path, min_token_agreement=1.0, name="lm-strict", kv_cache_precision="f32")

    def compile_once() -> CompileResult:
        result = compile_model(
            lm_tiny_card,
            profile,
            out=tmp_path / "bundle",
            validation_limit=LM_TEST_PROMPTS,
            cache_root=LM_CACHE / "compile-tiny",
        )
        assert isinstance(result, CompileResult)
        return result

    result = compile_once()
    attempts = result.report.attempts
    first = attempts[0]
    assert (first.variant, first.outcome) == ("int4", "failed")
    assert first.accuracy is not None and first.accuracy["token_agreement"] < 1.0
    assert first.reason == f"token agreement {first.accuracy['token_agreement']:.4f} < 1.0"
    winner = result.report.winner
    assert winner is not None and winner.variant != "int4" and winner.outcome == "passed"
    assert winner.accuracy is not None and winner.accuracy["token_agreement"] == 1.0
    assert all(a.outcome == "failed" for a in attempts[: attempts.index(winner)])
    manifest = verify_bundle(result.bundle, None)
    assert manifest.primary.precision == winner.precision
    rows = result.report.rows()
    assert rows[0][2] == "failed" and rows[0][-1].startswith("token agreement")

    again = compile_once()  # everything cached: no export, no inference
    assert all(a.cached for a in again.report.attempts)
    assert again.report.winner is not None and again.report.winner.variant == winner.variant


@pytest.mark.slow
def test_edgeds_compile_a_model_directory(
    llm_toolchain: ModuleType,
    lm_card: Path,
    lm_bundle: Path,
    lm_profile: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgeds.modelcard import load_lm_card
    from tests.conftest import LM_CACHE, LM_TEST_PROMPTS, TOOLCHAINS

    data_source = load_lm_card(lm_card).data
    if data_source is None or data_source.evaluation.count > LM_TEST_PROMPTS:
        pytest.skip("the card's whole evaluation split is a benchmark's job, not a unit test's")
    monkeypatch.setenv("EDGEDS_TOOLCHAINS", str(TOOLCHAINS))
    monkeypatch.setenv("EDGEDS_CACHE_DIR", str(LM_CACHE))  # the compile cache the shared bundle filled
    del lm_bundle  # built first: the CLI run below finds every attempt cached
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app, ["compile", str(lm_card), "--profile", str(lm_profile(tmp_path)), "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"]["task"] == "causal-lm" and data["backend"] == "openvino-genai"
    assert data["report"]["selected"]["variant"] == "int4"
    assert verify_bundle(out, None).task == "causal-lm"
