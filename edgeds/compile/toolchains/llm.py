"""The LM toolchain: exports a Hugging Face causal-LM checkpoint for the LM runtimes, in its own venv.

torch, transformers, optimum-intel, NNCF, openvino-tokenizers and onnxruntime-genai's model
builder live in an isolated, pinned venv (:data:`LOCK`, installed with ``--no-deps`` by
:func:`install` / ``edgeds toolchain install llm``) under ``$EDGEDS_TOOLCHAINS/llm``. Each
function here runs the worker script (``llm_worker.py``, beside this module, importing no edgeds
module) with that venv's python, offline (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, no
telemetry, proxies to a closed port) and with a timeout. A failure raises :class:`ToolchainError`
(or :class:`CompileError` for a request edgeds refuses before running anything) whose first line
is the worker's last meaningful stderr line and which names the log file holding the whole output.

The device needs none of this: only the runtime wheels (``openvino-genai``, ``onnxruntime-genai``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...backends.base import Availability
from ...errors import CompileError, ToolchainError
from . import _venv

LMPrecision = Literal["int4", "int8", "fp16", "fp32"]
OrtPrecision = Literal["int4", "fp32"]
GROUP_SIZES: tuple[int, ...] = (128, 64, 32)
"""INT4 group sizes tried, largest first, when none is given (each must divide the channel counts)."""
EXPORT_TIMEOUT_S = 3600
REFERENCE_TIMEOUT_S = 3600
WORKER = Path(__file__).with_name("llm_worker.py")

# Every package of the toolchain venv, resolved for CPython 3.11 on Linux x86-64 and installed with
# --no-deps. torch is the CPU build (2.13.0+cpu): pip finds it through its configured find-links;
# PyPI's plain torch is a CUDA build. torchvision is left out on purpose (optimum-intel declares it,
# never imports it for LM export, and PyPI's build breaks CPU torch).
LOCK: tuple[str, ...] = (
    "annotated-doc==0.0.7",
    "anyio==4.16.0",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "click==8.5.1",
    "cloudpickle==3.1.3",
    "filelock==4.3.2",
    "flatbuffers==25.12.19",
    "fsspec==2026.9.0",
    "h11==0.16.0",
    "hf-xet==1.8.0",
    "httpcore==1.0.9",
    "httpx==0.29.0",
    "huggingface_hub==1.21.0",
    "idna==3.21",
    "Jinja2==3.1.6",
    "joblib==1.6.0",
    "markdown-it-py==4.3.0",
    "MarkupSafe==3.0.4",
    "mdurl==0.1.2",
    "ml_dtypes==0.7.0",
    "mpmath==1.3.0",
    "narwhals==2.29.0",
    "networkx==3.6.1",
    "ninja==1.13.2",
    "nncf==3.4.0",
    "numpy==2.4.6",
    "onnx==1.23.2",
    "onnx-ir==1.1.0",
    "onnxruntime==1.32.0",
    "onnxruntime-genai==0.18.0",
    "openvino==2026.4.1",
    "openvino-telemetry==2025.2.0",
    "openvino-tokenizers==2026.4.1.0",
    "optimum==2.3.0",
    "optimum-intel==2.2.0",
    "packaging==26.4",
    "protobuf==7.36.2",
    "psutil==7.2.2",
    "pydot==4.0.1",
    "Pygments==2.21.0",
    "pyparsing==3.3.3",
    "PyYAML==6.0.4",
    "regex==2026.12.2",
    "requests==2.34.2",
    "rich==15.0.0",
    "safetensors==0.8.0",
    "scikit-learn==1.9.1",
    "scipy==1.17.1",
    "setuptools==84.2.1",
    "shellingham==1.5.4",
    "sympy==1.14.0",
    "tabulate==0.10.0",
    "threadpoolctl==3.8.0",
    "tokenizers==0.22.2",
    "torch==2.13.0+cpu",
    "tqdm==4.70.1",
    "transformers==5.5.4",
    "typer==0.25.1",
    "typing_extensions==4.16.0",
    "urllib3==2.8.0",
)

_CHECK = (
    "from importlib.metadata import version\n"
    "import torch, transformers, optimum.intel, nncf, openvino_tokenizers, onnxruntime_genai.models.builder\n"
    "assert not torch.version.cuda, 'torch is a CUDA build'\n"
    "print(' '.join(f'{n}={version(n)}' for n in ('torch', 'transformers', 'optimum-intel', 'nncf', 'openvino',"
    " 'openvino-tokenizers', 'onnxruntime-genai', 'onnx')))\n"
)

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "deepseek-r1-distill-qwen-1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 131072,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    },
}
"""Qwen2 shapes of real checkpoints (their config.json), for random stand-ins of the same size."""


@dataclass(frozen=True)
class WeightFormat:
    """How ``export_openvino`` stores the weights.

    ``int4``: NNCF group-wise INT4 (``group_size`` input channels share a scale; ``None`` = the
    largest of :data:`GROUP_SIZES` dividing the hidden and intermediate sizes), ``ratio`` the share
    of the compressible layers in INT4 (the rest INT8, NNCF's mixed precision; ``None`` = 1.0),
    ``sym`` symmetric (no zero point). ``int8``: per-channel INT8 (``sym`` honoured). ``fp16`` /
    ``fp32``: no weight compression.
    """

    precision: LMPrecision
    group_size: int | None = None
    ratio: float | None = None
    sym: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("int4", "int8", "fp16", "fp32"):
            raise CompileError(f"unknown LM weight precision {self.precision!r} (int4, int8, fp16, fp32)")
        if self.precision != "int4" and (self.group_size is not None or self.ratio is not None):
            raise CompileError(f"group_size and ratio apply to int4 weights only, not {self.precision}")
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise CompileError(f"the INT4 ratio must be in (0, 1], got {self.ratio}")
        if self.group_size is not None and self.group_size <= 0:
            raise CompileError(f"the INT4 group size must be positive, got {self.group_size}")


@dataclass(frozen=True)
class Reference:
    """transformers FP32 results: greedy ``tokens`` per prompt (EOS not included; ``finish`` is
    ``"stop"`` when EOS ended it, else ``"length"``) and ``nll`` per example (mean negative
    log-likelihood in nats over the answer tokens; perplexity = exp of their mean)."""

    tokens: list[list[int]]
    finish: list[str]
    nll: list[float]
    eos_token_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "finish": self.finish, "nll": self.nll, "eos_token_ids": self.eos_token_ids}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reference:
        return cls(
            tokens=[[int(t) for t in row] for row in data["tokens"]],
            finish=[str(f) for f in data["finish"]],
            nll=[float(x) for x in data["nll"]],
            eos_token_ids=[int(t) for t in data.get("eos_token_ids", ())],
        )


# -- the venv ------------------------------------------------------------------------------------


def toolchain_dir() -> Path:
    """``$EDGEDS_TOOLCHAINS/llm``, default ``cache_dir()/toolchains/llm``."""
    return _venv.toolchain_dir("llm")


def lock_hash() -> str:
    return _venv.lock_hash(LOCK)


def installed(root: Path | None = None) -> bool:
    """Whether the toolchain venv exists and matches :data:`LOCK`."""
    return _venv.installed(root or toolchain_dir(), LOCK)


def install(root: Path | None = None, python: str | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Create (or re-create) the pinned toolchain venv; a no-op when it is already installed.

    ``python`` must be a CPython 3.11 (the lock's); default: the interpreter running edgeds."""
    return _venv.install("llm", root or toolchain_dir(), LOCK, _CHECK, python=python, log=log)


def available() -> Availability:
    if not installed():
        return Availability(
            "llm",
            False,
            reason=f"the LM toolchain is not installed ({toolchain_dir()})",
            hint="edgeds toolchain install llm",
        )
    versions = tool_versions()
    return Availability("llm", True, version=f"optimum-intel {versions.get('optimum-intel', '?')}")


def tool_versions() -> dict[str, str]:
    """Versions of the exporters (recorded at install) and the lock's hash; part of cache keys."""
    versions: dict[str, str] = {"toolchain_lock": lock_hash()}
    try:
        stamp = json.loads((toolchain_dir() / "installed.json").read_text())
    except (OSError, ValueError):
        return versions
    for item in stamp.get("versions", []):
        name, _, ver = str(item).partition("=")
        if ver:
            versions[name] = ver
    return versions


def offline_env(root: Path | None = None) -> dict[str, str]:
    """The worker's environment: no network, no hub, no telemetry, a private HF cache."""
    root = root or toolchain_dir()
    env = _venv.offline_env()
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        DO_NOT_TRACK="1",
        OPENVINO_TELEMETRY_DISABLE="1",
        HF_HOME=str(root / "hf-home"),
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    return env


# -- running the worker --------------------------------------------------------------------------

_NOISE = re.compile(r"^\s*$|^\S*warn|^\s*warnings\.warn|it/s\]|s/it\]|^\s*\d+%\|", re.IGNORECASE)


def _last_line(stderr: str) -> str:
    """The line that says what failed: the worker's error mark, else the last non-noise line."""
    lines = stderr.splitlines()
    for line in reversed(lines):
        if line.startswith("edgeds-llm-worker: error: "):
            return line.removeprefix("edgeds-llm-worker: error: ").strip()
    for line in reversed(lines):
        if not _NOISE.search(line):
            return line.strip()
    return "no output"


def _log_path(command: str) -> Path:
    logs = toolchain_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}.log"


def run_worker(command: str, request: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """Run one worker command in the toolchain venv; its JSON result, or :class:`ToolchainError`."""
    root = toolchain_dir()
    if not installed(root):
        raise ToolchainError(f"the llm toolchain is not installed ({root}); run: edgeds toolchain install llm")
    log = _log_path(command)
    with tempfile.TemporaryDirectory(prefix=f"edgeds-llm-{command}-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        cmd = [str(_venv.venv_python(root)), "-P", str(WORKER), command, str(req), str(res)]
        try:
            proc = subprocess.run(
                cmd, cwd=tmp, env=offline_env(root), capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            log.write_text(out + err)
            raise ToolchainError(f"llm {command} timed out after {timeout_s:.0f} s; log: {log}") from exc
        log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0 or not res.is_file():
            raise ToolchainError(f"llm {command} failed: {_last_line(proc.stderr)} (log: {log})")
        result: dict[str, Any] = json.loads(res.read_text())
        return result


# -- checkpoints ---------------------------------------------------------------------------------


def _config(checkpoint: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CompileError(f"{checkpoint} is not a Hugging Face checkpoint (config.json: {exc})") from exc
    return config


def group_size(checkpoint: Path, requested: int | None = None) -> int:
    """The INT4 group size for ``checkpoint``: ``requested`` if it divides the hidden and
    intermediate sizes (else :class:`CompileError`), or the largest of :data:`GROUP_SIZES` that does."""
    config = _config(checkpoint)
    channels = {k: int(config[k]) for k in ("hidden_size", "intermediate_size") if k in config}
    if not channels:
        raise CompileError(f"{checkpoint / 'config.json'} names no hidden_size")
    if requested is not None:
        bad = [f"{k} {v}" for k, v in channels.items() if v % requested]
        if bad:
            fits = [g for g in GROUP_SIZES if all(v % g == 0 for v in channels.values())]
            hint = f"; {', '.join(map(str, fits))} would" if fits else ""
            raise CompileError(f"INT4 group size {requested} does not divide the {' and '.join(bad)}{hint}")
        return requested
    for size in GROUP_SIZES:
        if all(v % size == 0 for v in channels.values()):
            return size
    sizes = " and ".join(f"{k} {v}" for k, v in channels.items())
    raise CompileError(f"no INT4 group size of {', '.join(map(str, GROUP_SIZES))} divides the {sizes}")


# -- exporters -----------------------------------------------------------------------------------


def export_openvino(checkpoint: Path, out: Path, weights: WeightFormat, *, timeout_s: float = EXPORT_TIMEOUT_S) -> Path:
    """An OpenVINO GenAI model directory in ``out`` (replaced if present): openvino_model.xml/.bin
    (stateful, text-generation-with-past), openvino_tokenizer/detokenizer.xml/.bin, config,
    generation_config and the tokenizer files. Returns ``out``."""
    checkpoint, out = Path(checkpoint).resolve(), Path(out).resolve()
    request: dict[str, Any] = {"checkpoint": str(checkpoint), "out": str(out), "precision": weights.precision}
    if weights.precision == "int4":
        request["group_size"] = group_size(checkpoint, weights.group_size)
        request["ratio"] = 1.0 if weights.ratio is None else weights.ratio
    request["sym"] = weights.sym
    _fresh(out)
    run_worker("export-openvino", request, timeout_s=timeout_s)
    return out


def export_onnxruntime(
    checkpoint: Path,
    out: Path,
    precision: OrtPrecision = "int4",
    *,
    block_size: int | None = None,
    timeout_s: float = EXPORT_TIMEOUT_S,
) -> Path:
    """An ONNX Runtime GenAI model directory in ``out`` (replaced if present): model.onnx(.data),
    genai_config.json and the tokenizer files, for the CPU execution provider. INT4 is MatMulNBits
    with ``block_size`` (default: :func:`group_size`'s pick). Returns ``out``."""
    if precision not in ("int4", "fp32"):
        raise CompileError(f"onnxruntime-genai exports int4 or fp32, not {precision!r}")
    checkpoint, out = Path(checkpoint).resolve(), Path(out).resolve()
    request: dict[str, Any] = {"checkpoint": str(checkpoint), "out": str(out), "precision": precision}
    if precision == "int4":
        request["block_size"] = group_size(checkpoint, block_size)
    _fresh(out)
    with tempfile.TemporaryDirectory(prefix="edgeds-ortgenai-cache-") as cache:
        request["cache_dir"] = cache
        run_worker("export-onnxruntime", request, timeout_s=timeout_s)
    return out


def _fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)


def reference(
    checkpoint: Path,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    texts_for_ppl: Sequence[tuple[Sequence[int], Sequence[int]]] = (),
    *,
    timeout_s: float = REFERENCE_TIMEOUT_S,
) -> Reference:
    """transformers FP32 greedy token ids for each prompt (up to ``max_new_tokens``, stopping at
    EOS) and the mean NLL over the answer tokens of each ``(prompt_ids, answer_ids)``."""
    request = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "prompts": [list(map(int, p)) for p in prompts],
        "max_new_tokens": int(max_new_tokens),
        "texts_for_ppl": [[list(map(int, p)), list(map(int, a))] for p, a in texts_for_ppl],
    }
    return Reference.from_json(run_worker("reference", request, timeout_s=timeout_s))


def random_checkpoint(
    shape: str | Mapping[str, Any],
    out: Path,
    tokenizer_from: Path,
    *,
    seed: int = 0,
    timeout_s: float = EXPORT_TIMEOUT_S,
) -> Path:
    """A random-init Qwen2 checkpoint in ``out``: ``shape`` is a name of :data:`SHAPES` or a dict of
    Qwen2Config fields; the tokenizer files come from ``tokenizer_from`` and the vocabulary is at
    least the tokenizer's. Same shape + seed + tokenizer = the same weights. Returns ``out``."""
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise CompileError(f"unknown checkpoint shape {shape!r} (known: {', '.join(SHAPES)})")
        config = dict(SHAPES[shape])
    else:
        config = dict(shape)
    out = Path(out).resolve()
    _fresh(out)
    request = {"config": config, "out": str(out), "tokenizer_from": str(Path(tokenizer_from).resolve()), "seed": seed}
    run_worker("random-checkpoint", request, timeout_s=timeout_s)
    return out


def train_tokenizer(texts: Sequence[str], out: Path, vocab_size: int = 300, *, timeout_s: float = 600) -> Path:
    """A byte-level BPE tokenizer (ChatML specials, eos ``<|im_end|>``, a chat template) trained on
    ``texts`` and saved in Hugging Face layout in ``out``; for tests and stand-in checkpoints."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_worker(
        "train-tokenizer", {"texts": list(texts), "out": str(out), "vocab_size": vocab_size}, timeout_s=timeout_s
    )
    return out
