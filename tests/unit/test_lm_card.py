"""The causal-lm model card and the profile's ``llm:`` block: schema, checkpoint checks, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeds import config, modelcard
from edgeds.errors import ConfigError

CARD = """\
schema: 1
name: tiny-lm
version: 1.0.0
task: causal-lm
model: checkpoint
architecture: qwen2
context_length: 256
special_tokens: {eos: "<|im_end|>", pad: "<|endoftext|>"}
generation: {max_new_tokens: 32, temperature: 0.0}
data:
  generator: edgeds.datasets.shift_reports:generate
  evaluation: {seed: 1, count: 10, fingerprint: "sha256:ZERO"}
  calibration: {seed: 2, count: 4, fingerprint: "sha256:ONE"}
metric: {name: facts-exact, scorer: edgeds.datasets.shift_reports:score}
reference: {fp32_task_metric: 0.93, fp32_perplexity: 1.08}
""".replace("ZERO", "0" * 64).replace("ONE", "1" * 64)


def _checkpoint(root: Path, model_type: str = "qwen2", max_positions: int = 512, template: bool = True) -> Path:
    ckpt = root / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "config.json").write_text(
        json.dumps({"model_type": model_type, "max_position_embeddings": max_positions, "hidden_size": 64})
    )
    (ckpt / "tokenizer.json").write_text("{}")
    tok_config: dict[str, object] = {"eos_token": "<|im_end|>"}
    if template:
        tok_config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (ckpt / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return ckpt


def _card(tmp_path: Path, text: str = CARD, **checkpoint: object) -> Path:
    _checkpoint(tmp_path, **checkpoint)  # type: ignore[arg-type]
    path = tmp_path / "tiny-lm.yaml"
    path.write_text(text)
    return path


def test_a_causal_lm_card_loads_through_the_same_loader(tmp_path: Path) -> None:
    path = _card(tmp_path)
    card = modelcard.load_card(path)
    assert isinstance(card, modelcard.LMCard)
    assert card.architecture == "qwen2" and card.context_length == 256
    assert card.model_path == tmp_path / "checkpoint"
    assert card.special_tokens.eos == "<|im_end|>" and card.generation.max_new_tokens == 32
    assert card.chat_template_text().startswith("{% for m")
    assert modelcard.load_lm_card(tmp_path) == card  # the directory finds its one card


def test_the_image_loader_refuses_a_causal_lm_card_in_one_line(tmp_path: Path) -> None:
    path = _card(tmp_path)
    with pytest.raises(ConfigError) as info:
        modelcard.load_model_card(path)
    assert str(info.value).count("\n") == 0
    assert "causal-lm card, expected image-classification" in str(info.value)


def test_an_unknown_task_is_one_line_with_the_known_tasks(tmp_path: Path) -> None:
    path = _card(tmp_path, CARD.replace("task: causal-lm", "task: speech"))
    with pytest.raises(ConfigError) as info:
        modelcard.load_card(path)
    known = "image-classification, object-detection, generic, causal-lm"
    assert str(info.value).endswith(f":4: task: unknown task 'speech' (known: {known})")
    assert str(info.value).count("\n") == 0


def test_an_unknown_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = _card(tmp_path, CARD + "temperature: 0.7\n")
    with pytest.raises(ConfigError, match=r"tiny-lm.yaml:\d+: temperature: unknown field$"):
        modelcard.load_card(path)


def test_an_unsupported_architecture_is_refused_with_the_list(tmp_path: Path) -> None:
    path = _card(tmp_path, CARD.replace("architecture: qwen2", "architecture: gpt2"))
    with pytest.raises(ConfigError, match=r":6: architecture: must be one of 'qwen2', 'llama' or 'phi3', got 'gpt2'"):
        modelcard.load_card(path)


def test_the_architecture_must_match_the_checkpoint(tmp_path: Path) -> None:
    path = _card(tmp_path, model_type="llama")
    with pytest.raises(ConfigError) as info:
        modelcard.load_card(path)
    assert ":6: architecture: config.json says model_type 'llama' (supported: qwen2, llama, phi3)" in str(info.value)


def test_the_context_must_fit_the_model(tmp_path: Path) -> None:
    path = _card(tmp_path, max_positions=128)
    with pytest.raises(ConfigError, match=r":7: context_length: 256 > the model's max_position_embeddings 128"):
        modelcard.load_card(path)


def test_a_missing_chat_template_and_checkpoint_are_named(tmp_path: Path) -> None:
    path = _card(tmp_path, template=False)
    with pytest.raises(ConfigError, match=r"chat_template: .*has no chat_template"):
        modelcard.load_card(path)
    (tmp_path / "checkpoint" / "config.json").unlink()
    with pytest.raises(ConfigError, match=r"model: .*has no config\.json"):
        modelcard.load_card(path)


def test_a_template_file_beside_the_card(tmp_path: Path) -> None:
    path = _card(tmp_path, CARD + "chat_template: chat.jinja\n", template=False)
    with pytest.raises(ConfigError, match=r"chat_template: no file 'chat\.jinja' beside the card"):
        modelcard.load_card(path)
    (tmp_path / "chat.jinja").write_text("{{ messages }}")
    card = modelcard.load_lm_card(path)
    assert card.chat_template_text() == "{{ messages }}"


def test_the_lm_loader_refuses_an_image_card(tmp_path: Path) -> None:
    from edgeds.runtime.testing import write_tiny_card

    with pytest.raises(ConfigError, match="image-classification card, expected causal-lm"):
        modelcard.load_lm_card(write_tiny_card(tmp_path))


@pytest.mark.parametrize("name", sorted(config.list_profiles()))
def test_every_shipped_profile_has_an_llm_block(name: str) -> None:
    llm = config.load_profile(name).llm
    assert llm is not None and llm.runtimes
    assert all(r.parsed_options() is not None for r in llm.runtimes)
    assert 0 < llm.quality.min_token_agreement <= 1 and llm.quality.max_perplexity_ratio >= 1


def test_the_llm_block_is_validated_with_file_line_field(tmp_path: Path) -> None:
    base = config.load_profile("x86-cpu").model_dump(mode="json", by_alias=True, exclude={"llm"})
    import yaml

    base["llm"] = {"runtimes": [{"name": "llama.cpp"}], "max_num_seqs": 0}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        config.load_profile(path)
    text = str(info.value)
    assert "llm.runtimes[0].name: unknown LM runtime 'llama.cpp' (known: openvino-genai, onnxruntime-genai)" in text
    assert "llm.max_num_seqs: must be >= 1, got 0" in text
    del base["llm"]
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    assert config.load_profile(path).llm is None


def test_llm_runtime_options_are_checked_by_the_runtime(tmp_path: Path) -> None:
    import yaml

    base = config.load_profile("x86-cpu").model_dump(mode="json", by_alias=True, exclude={"llm"})
    base["llm"] = {"runtimes": [{"name": "onnxruntime-genai", "options": {"device": "cuda"}}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    with pytest.raises(ConfigError, match=r"llm\.runtimes\[0\]: options\.device: unknown field \(onnxruntime-genai\)"):
        config.load_profile(path)
