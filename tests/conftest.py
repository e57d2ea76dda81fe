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
def lm_onnxruntime_dir(llm_toolchain: ModuleType, lm_checkpoint: Path) -> Callable[[str], Path]:
    """``lm_onnxruntime_dir(precision)``: the checkpoint's ONNX Runtime GenAI export (int4 | fp32),
    made once per fingerprint."""
    source = _tree_digest(lm_checkpoint)

    def export(precision: str) -> Path:
        key = _fingerprint("onnxruntime", source, precision, llm.lock_hash())
        return _cached(
            f"onnxruntime-{precision}-{key}",
            lambda out: llm.export_onnxruntime(lm_checkpoint, out, precision),  # type: ignore[arg-type]
        )

    return export
