"""Session fixtures shared by the language-model tests: the LM toolchain, a checkpoint, its exports.

Everything the ``llm`` toolchain makes is cached by fingerprint under ``cache_dir()/test-lm``
(resolved when this file is imported, before any test points ``EDGEDS_CACHE_DIR`` elsewhere), so
a test session exports each model once and later sessions reuse it. Fixtures that need the
toolchain skip, with the reason, when it is not installed (``edgeds toolchain install llm``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgeds.compile.toolchains import llm
from edgeds.paths import cache_dir

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CHECKPOINT = REPO / "models" / "shift-assistant" / "checkpoint"
LM_CACHE = cache_dir() / "test-lm"
TOOLCHAINS = llm.toolchain_dir().parent

TINY_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
    "initializer_range": 0.2,
}
"""A tiny Qwen2 (about 90k parameters): exports in seconds; group size 64 divides its channels; its
weights are drawn wider than usual so that greedy decoding does not repeat one token forever."""
TOKENIZER_TEXTS = (
    "Station S3, shift B: inspected 1240, rejected 37, scratch 12, pit 9, crack 4, stain 12, alarms 2.",
    "Worst hour 14, status degraded. Station S1, shift A: inspected 980, rejected 5, status ok.",
    "How many cracks were found on station S1 in shift A today? What was the worst hour?",
    "The operator asked for a summary of the shift: counts per class, rejects, alarms and status.",
)


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _tree_digest(root: Path) -> str:
    """sha256 over the names and bytes of every file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _cached(key: str, make: Callable[[Path], object]) -> Path:
    """``LM_CACHE/key``, made by ``make(tmp)`` into a temporary directory and renamed into place."""
    final = LM_CACHE / key
    if (final / ".done").is_file():
        return final
    LM_CACHE.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_TOOLCHAINS", str(TOOLCHAINS))  # a test module may have moved the cache dir
        with tempfile.TemporaryDirectory(prefix=f".{key}-", dir=LM_CACHE) as tmp:
            work = Path(tmp) / "out"
            make(work)
            (work / ".done").write_text("")
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
    return final


@pytest.fixture(scope="session")
def llm_toolchain() -> Iterator[ModuleType]:
    """The ``llm`` toolchain module; skips when its venv is not installed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_TOOLCHAINS", str(TOOLCHAINS))
        if not llm.installed():
            pytest.skip(f"the llm toolchain is not installed ({llm.toolchain_dir()}): edgeds toolchain install llm")
    yield llm


@pytest.fixture(scope="session")
def lm_tiny_checkpoint(llm_toolchain: ModuleType) -> Path:
    """A tiny random-init Qwen2 with a BPE tokenizer trained on a few lines (cached by fingerprint)."""
    key = _fingerprint("tiny-checkpoint", TINY_SHAPE, TOKENIZER_TEXTS, llm.lock_hash())

    def make(out: Path) -> None:
        tokenizer = llm.train_tokenizer(TOKENIZER_TEXTS, out.parent / "tokenizer", vocab_size=300)
        llm.random_checkpoint(TINY_SHAPE, out, tokenizer_from=tokenizer, seed=0)

    return _cached(f"checkpoint-{key}", make)


@pytest.fixture(scope="session")
def lm_checkpoint(request: pytest.FixtureRequest) -> Path:
    """The shipped ``models/shift-assistant/checkpoint``; until it lands, the tiny random Qwen2."""
    if (SHIPPED_CHECKPOINT / "config.json").is_file():
        return SHIPPED_CHECKPOINT
    path: Path = request.getfixturevalue("lm_tiny_checkpoint")
    return path


@pytest.fixture(scope="session")
def lm_openvino_dir(llm_toolchain: ModuleType, lm_checkpoint: Path) -> Callable[..., Path]:
    """``lm_openvino_dir(precision, group_size=None, ratio=None, sym=False)``: the checkpoint's
    OpenVINO GenAI export, made once per fingerprint (checkpoint bytes, weight format, lock)."""
    source = _tree_digest(lm_checkpoint)

    def export(precision: str, group_size: int | None = None, ratio: float | None = None, sym: bool = False) -> Path:
        weights = llm.WeightFormat(precision, group_size, ratio, sym)  # type: ignore[arg-type]
        key = _fingerprint("openvino", source, weights, llm.lock_hash())
        return _cached(f"openvino-{precision}-{key}", lambda out: llm.export_openvino(lm_checkpoint, out, weights))

    return export


@pytest.fixture(scope="session")
def lm_onnxruntime_dir(llm_toolchain: ModuleType, lm_tiny_checkpoint: Path) -> Callable[[str], Path]:
    """``lm_onnxruntime_dir(precision)``: the tiny checkpoint's ONNX Runtime GenAI export (int4 |
    fp32), made once per fingerprint. Not the shipped LM's: ONNX Runtime GenAI 0.18's tokenizer
    refuses its pre-tokenizer split (``Invalid regex:  ?\\p{N}+``, a number as one piece), and
    accepts the tiny one's (Qwen2's, a digit per piece)."""
    source = _tree_digest(lm_tiny_checkpoint)

    def export(precision: str) -> Path:
        key = _fingerprint("onnxruntime", source, precision, llm.lock_hash())
        return _cached(
            f"onnxruntime-{precision}-{key}",
            lambda out: llm.export_onnxruntime(lm_tiny_checkpoint, out, precision),  # type: ignore[arg-type]
        )

    return export


SHIPPED_CARD = REPO / "models" / "shift-assistant" / "shift-assistant.yaml"
LM_TEST_PROMPTS = 4
"""Evaluation prompts the LM compile tests gate on (the first N of the card's split)."""


def _tiny_card(checkpoint: Path, directory: Path) -> Path:
    """A causal-lm card for a stand-in ``checkpoint`` in ``directory``: the shift-reports data and
    metric, the first LM_TEST_PROMPTS evaluation prompts, answers cut at 16 tokens."""
    from edgeds.datasets import shift_reports

    evaluation = shift_reports.generate("evaluation", 20261201, LM_TEST_PROMPTS)
    calibration = shift_reports.generate("calibration", 20261202, 2)
    fp_eval, fp_cal = shift_reports.fingerprint(evaluation), shift_reports.fingerprint(calibration)
    card = directory / "tiny-lm.yaml"
    card.write_text(
        "schema: 1\nname: tiny-lm\nversion: 1.0.0\ntask: causal-lm\n"
        f"model: {checkpoint}\narchitecture: qwen2\ncontext_length: 512\n"
        'special_tokens: {eos: "<|im_end|>"}\ngeneration: {max_new_tokens: 16, temperature: 0.0}\n'
        "data:\n  generator: edgeds.datasets.shift_reports:generate\n"
        f'  evaluation: {{seed: 20261201, count: {LM_TEST_PROMPTS}, fingerprint: "{fp_eval}"}}\n'
        f'  calibration: {{seed: 20261202, count: 2, fingerprint: "{fp_cal}"}}\n'
        "metric: {name: facts-exact, scorer: edgeds.datasets.shift_reports:score}\n"
    )
    return card


@pytest.fixture(scope="session")
def lm_tiny_card(lm_tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A causal-lm card for :func:`lm_tiny_checkpoint` (see :func:`_tiny_card`)."""
    return _tiny_card(lm_tiny_checkpoint, tmp_path_factory.mktemp("lm-tiny-card"))


@pytest.fixture(scope="session")
def lm_card(lm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A causal-lm model card for :func:`lm_checkpoint`: the shipped card beside the shipped
    checkpoint, else a card written for the tiny stand-in (short answers, so tests stay quick)."""
    if lm_checkpoint == SHIPPED_CHECKPOINT and SHIPPED_CARD.is_file():
        return SHIPPED_CARD
    return _tiny_card(lm_checkpoint, tmp_path_factory.mktemp("lm-card"))


def _lm_profile(
    directory: Path, *, min_token_agreement: float = 0.0, name: str = "lm-test", kv_cache_precision: str = "u8"
) -> Path:
    """A profile file (x86-cpu with one OpenVINO GenAI INT4 link, 2 threads) whose quality budget
    is loose except for ``min_token_agreement``."""
    path = directory / f"{name}.yaml"
    path.write_text(
        f"schema: 1\nname: {name}\nextends: x86-cpu\ndescription: LM compile tests\n"
        "llm:\n  runtimes:\n    - name: openvino-genai\n      precision: int4\n"
        f"      options: {{device: CPU, kv_cache_precision: {kv_cache_precision}, num_threads: 2}}\n"
        "  max_num_seqs: 4\n"
        f"  quality: {{max_metric_drop: 100, min_token_agreement: {min_token_agreement}, "
        "max_perplexity_ratio: 100, min_tokenizer_agreement: 1.0}\n"
    )
    return path


@pytest.fixture(scope="session")
def lm_profile() -> Callable[..., Path]:
    """``lm_profile(directory, min_token_agreement=0.0, name="lm-test", kv_cache_precision="u8")``:
    a profile file (x86-cpu with one OpenVINO GenAI INT4 link) whose quality budget is loose except
    for token agreement."""
    return _lm_profile


@pytest.fixture(scope="session")
def lm_bundle(llm_toolchain: ModuleType, lm_card: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One causal-lm bundle per test session: the card compiled for :func:`lm_profile` (OpenVINO
    GenAI INT4), its exports and evaluations cached by fingerprint under ``cache_dir()/test-lm``."""
    from edgeds.backends.lm import lm_probe
    from edgeds.compile import compile_model

    if not lm_probe("openvino-genai").available:
        pytest.skip("openvino-genai is not installed: pip install 'edgeds[llm]'")
    directory = tmp_path_factory.mktemp("lm-bundle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDS_TOOLCHAINS", str(TOOLCHAINS))
        result = compile_model(
            lm_card,
            _lm_profile(directory),
            out=directory / "bundle",
            validation_limit=LM_TEST_PROMPTS,
            cache_root=LM_CACHE / "compile",
        )
    return result.bundle
