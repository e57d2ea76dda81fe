"""Open a language model to serve: a runtime's model directory as a started :class:`LMEngine`.

What ``edgeds serve``, ``edgeds run --prompt`` and ``edgeds chat`` open in process. A directory
with ``genai_config.json`` is ONNX Runtime GenAI's, one with ``openvino_model.xml`` OpenVINO
GenAI's (``runtime`` overrides). The KV cache is planned from ``budget_mb`` (weights + KV cache +
the runtime's overhead, MiB); at most ``max_num_seqs`` sequences run at once (8 unless given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import BundleError
from .engine import LMEngine

DEFAULT_BUDGET_MB = 1024.0  # a 4 GB device's share for one small model
DEFAULT_MAX_NUM_SEQS = 8  # the profiles' llm.max_num_seqs default: the KV budget may allow fewer


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


def open_engine(
    path: Path,
    *,
    runtime: str | None = None,
    threads: int | None = None,
    budget_mb: float | None = None,
    max_num_seqs: int | None = None,
    max_queue: int | None = None,
    name: str | None = None,
) -> LMEngine:
    """A started engine for the model directory ``path`` (the caller closes it)."""
    runtime = runtime or runtime_of(path)
    options: dict[str, Any] = {} if threads is None else {"num_threads": threads}
    engine = LMEngine.from_dir(
        path,
        runtime,
        budget_mb=budget_mb if budget_mb is not None else DEFAULT_BUDGET_MB,
        max_num_seqs=max_num_seqs if max_num_seqs is not None else DEFAULT_MAX_NUM_SEQS,
        max_queue=max_queue if max_queue is not None else 64,
        options=options,
        name=name,
    )
    return engine.start()


__all__ = ["DEFAULT_BUDGET_MB", "DEFAULT_MAX_NUM_SEQS", "open_engine", "runtime_of"]
