"""The LM toolchain: its pinned lock, the group-size rule, and exports that the LM runtimes load.

The exports are the shared session fixtures of ``tests/conftest.py`` (cached by fingerprint);
they skip when the ``llm`` toolchain is not installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from edgeds.compile.toolchains import llm, package_version
from edgeds.errors import CompileError, ToolchainError

PROMPT = "Station S3, shift B: inspected"
SHAPE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "tie_word_embeddings",
    "initializer_range",
)


def _config(tmp: Path, hidden: int, intermediate: int) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps({"hidden_size": hidden, "intermediate_size": intermediate}))
    return tmp


def test_the_lock_pins_every_package_once_and_never_torchvision() -> None:
    names = []
    for line in llm.LOCK:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+]*", line), line
        names.append(line.split("==")[0].lower().replace("_", "-"))
    assert len(names) == len(set(names))
    assert not any(n.startswith(("torchvision", "nvidia-", "cuda-")) for n in names)
    pins = dict(line.split("==") for line in llm.LOCK)
    assert pins["torch"] == "2.13.0+cpu"
    assert pins["onnxruntime-genai"] == "0.18.0"
    for name in ("transformers", "tokenizers", "safetensors", "optimum", "optimum-intel", "nncf", "onnx"):
        assert name in pins, name
    runtime = package_version("openvino")  # the exporter's OpenVINO is the runtime's
    if runtime:
        assert pins["openvino"] == runtime and pins["openvino-tokenizers"].startswith(runtime)
    assert llm.lock_hash() == llm.lock_hash() and len(llm.lock_hash()) == 16


def test_the_group_size_is_the_largest_that_divides_the_channels(tmp_path: Path) -> None:
    assert llm.group_size(_config(tmp_path / "a", 896, 4864)) == 128  # Qwen2.5-0.5B
    assert llm.group_size(_config(tmp_path / "b", 192, 512)) == 64
    assert llm.group_size(_config(tmp_path / "c", 96, 288)) == 32
    assert llm.group_size(_config(tmp_path / "b", 192, 512), 32) == 32
    with pytest.raises(CompileError, match="no INT4 group size of 128, 64, 32 divides the hidden_size 40"):
        llm.group_size(_config(tmp_path / "d", 40, 80))


def test_a_group_size_that_does_not_divide_is_one_clear_line(tmp_path: Path) -> None:
    checkpoint = _config(tmp_path / "ckpt", 192, 512)
    with pytest.raises(CompileError) as caught:
        llm.export_openvino(checkpoint, tmp_path / "out", llm.WeightFormat("int4", group_size=128))
    message = str(caught.value)
    assert message == "INT4 group size 128 does not divide the hidden_size 192; 64, 32 would"
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_weight_formats_refuse_what_their_precision_cannot_use() -> None:
    assert llm.WeightFormat("int4", 64, 0.8, sym=True).ratio == 0.8
    with pytest.raises(CompileError, match="group_size and ratio apply to int4 weights only"):
        llm.WeightFormat("int8", group_size=64)
    with pytest.raises(CompileError, match=r"ratio must be in \(0, 1\]"):
        llm.WeightFormat("int4", ratio=1.5)
    with pytest.raises(CompileError, match="unknown LM weight precision 'int2'"):
        llm.WeightFormat("int2")  # type: ignore[arg-type]
    with pytest.raises(CompileError, match="exports int4 or fp32"):
        llm.export_onnxruntime(Path("nowhere"), Path("nowhere"), "fp16")  # type: ignore[arg-type]
    with pytest.raises(CompileError, match="unknown checkpoint shape 'gpt-5'"):
        llm.random_checkpoint("gpt-5", Path("nowhere"), Path("nowhere"))


def test_without_the_toolchain_the_error_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEDS_TOOLCHAINS", str(tmp_path / "none"))
    assert not llm.installed() and not llm.available().available
    assert llm.available().hint == "edgeds toolchain install llm"
    with pytest.raises(ToolchainError, match="run: edgeds toolchain install llm"):
        llm.reference(tmp_path, [[1, 2]], 4)


@pytest.mark.slow
def test_a_failing_export_is_one_line_naming_its_log(llm_toolchain: ModuleType, tmp_path: Path) -> None:
    broken = _config(tmp_path / "broken", 64, 128)  # a config.json and nothing else
    with pytest.raises(ToolchainError) as caught:
        llm.export_onnxruntime(broken, tmp_path / "out", "fp32")
    message = str(caught.value)
    assert message.startswith("llm export-onnxruntime failed: ") and "\n" not in message
    log = Path(message.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and "Traceback" in log.read_text()


@pytest.mark.slow
def test_tool_versions_come_from_the_installed_venv(llm_toolchain: ModuleType) -> None:
    versions = llm.tool_versions()
    assert versions["toolchain_lock"] == llm.lock_hash()
    assert versions["torch"] == "2.13.0+cpu" and versions["onnxruntime-genai"] == "0.18.0"
    assert llm.available().available


@pytest.mark.slow
def test_a_random_checkpoint_is_deterministic_and_covers_the_tokenizer(lm_tiny_checkpoint: Path) -> None:
    config = json.loads((lm_tiny_checkpoint / "config.json").read_text())
    vocab = json.loads((lm_tiny_checkpoint / "tokenizer.json").read_text())["model"]["vocab"]
    assert config["model_type"] == "qwen2" and config["hidden_size"] == 64
    assert config["vocab_size"] >= len(vocab)
    assert (lm_tiny_checkpoint / "model.safetensors").is_file()
    again = llm.random_checkpoint(
        {k: config[k] for k in SHAPE_KEYS},
        lm_tiny_checkpoint.parent / "again-tmp" / "ckpt",
        tokenizer_from=lm_tiny_checkpoint,
        seed=0,
    )
    try:
        assert (again / "model.safetensors").read_bytes() == (lm_tiny_checkpoint / "model.safetensors").read_bytes()
    finally:
        import shutil

        shutil.rmtree(again.parent)


def _ov_generate(model_dir: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    import numpy as np
    import openvino as ov
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(str(model_dir), "CPU")
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens = max_new_tokens
    config.do_sample = False
    ids = ov.Tensor(np.asarray([prompt_ids], dtype=np.int64))
    result = pipe.generate(ids, config)  # token ids in, token ids out (no chat template)
    return [int(t) for t in result.tokens[0]]


def _ort_generate(model_dir: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(str(model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + max_new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt_ids)
    new: list[int] = []
    while not generator.is_done() and len(new) < max_new_tokens:
        generator.generate_next_token()
        new.append(int(generator.get_next_tokens()[0]))
    return new


def _prompt_ids(model_dir: Path) -> list[int]:
    """The prompt tokenized by the export's own tokenizer (openvino_genai's)."""
    import openvino_genai

    tokenizer = openvino_genai.Tokenizer(str(model_dir))
    return [int(t) for t in tokenizer.encode(PROMPT, add_special_tokens=False).input_ids.data[0]]


def _weight_types(model_dir: Path) -> dict[str, int]:
    """How many weight constants of each element type the exported model holds."""
    import openvino as ov

    model = ov.Core().read_model(model_dir / "openvino_model.xml")
    counts: dict[str, int] = {}
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) >= 2:
            kind = op.get_output_element_type(0).get_type_name()
            counts[kind] = counts.get(kind, 0) + 1
    return counts


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "ratio", "sym", "weights"),
    [
        ("int4", None, False, {"u4"}),
        ("int4", 0.5, True, {"i4", "u8"}),
        ("int8", None, False, {"u8"}),
        ("fp16", None, False, {"f16"}),
    ],
)
def test_openvino_exports_load_in_openvino_genai_and_generate(
    lm_openvino_dir: Callable[..., Path], precision: str, ratio: float | None, sym: bool, weights: set[str]
) -> None:
    model_dir = lm_openvino_dir(precision, ratio=ratio, sym=sym)
    for name in ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml"):
        assert (model_dir / name).is_file(), name
    assert weights <= set(_weight_types(model_dir)), _weight_types(model_dir)
    prompt = _prompt_ids(model_dir)
    assert prompt and len(_ov_generate(model_dir, prompt, 8)) >= 1


@pytest.mark.slow
def test_onnxruntime_int4_export_loads_in_onnxruntime_genai_and_generates(
    lm_onnxruntime_dir: Callable[[str], Path],
) -> None:
    model_dir = lm_onnxruntime_dir("int4")
    assert (model_dir / "genai_config.json").is_file() and (model_dir / "model.onnx").is_file()
    import onnx

    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    assert "MatMulNBits" in {node.op_type for node in graph.node}
    assert json.loads((model_dir / "genai_config.json").read_text())["model"]["type"] == "qwen2"
    assert len(_ort_generate(model_dir, [5, 6, 7, 8], 8)) >= 1


@pytest.mark.slow
def test_fp32_exports_reproduce_the_reference_greedy_ids(
    lm_checkpoint: Path,
    lm_tiny_checkpoint: Path,
    lm_openvino_dir: Callable[..., Path],
    lm_onnxruntime_dir: Callable[[str], Path],
) -> None:
    ov_dir = lm_openvino_dir("fp32")
    prompts = [_prompt_ids(ov_dir), [5, 6, 7, 8, 9, 10]]
    want = llm.reference(lm_checkpoint, prompts, 12, [(prompts[0], [11, 12, 13])])
    assert len(want.tokens) == 2 and len(want.nll) == 1 and want.nll[0] > 0
    for prompt, expected, finish in zip(prompts, want.tokens, want.finish, strict=True):
        got = _ov_generate(ov_dir, prompt, 12)
        # the reference leaves out the EOS it stopped at; the pipeline returns it
        assert (got[:-1] if finish == "stop" else got) == expected
    # ONNX Runtime GenAI's export is the tiny checkpoint's (see the lm_onnxruntime_dir fixture)
    tiny = llm.reference(lm_tiny_checkpoint, prompts[1:], 12, [])
    got = _ort_generate(lm_onnxruntime_dir("fp32"), prompts[1], 12)
    assert got[: len(tiny.tokens[0])] == tiny.tokens[0]
