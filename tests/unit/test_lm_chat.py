"""Chat template rendering in jinja2's sandbox, as transformers renders it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeds.backends.lm.chat import ChatTemplate
from edgeds.errors import ConfigError, RequestError

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rejects on S3?"}]


def test_chatml_renders_as_transformers_does() -> None:
    text = ChatTemplate(CHATML).render(MESSAGES)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nRejects on S3?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert not ChatTemplate(CHATML).render(MESSAGES, add_generation_prompt=False).endswith("assistant\n")


def test_special_tokens_loop_controls_and_raise_exception() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
        "{% if m['role'] == 'assistant' %}{{ raise_exception('no assistant turns') }}{% endif %}"
        "[{{ m['content'] | tojson }}]{{ eos_token }}{% endfor %}"
    )
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    assert template.render(MESSAGES) == '<s>["Rejects on S3?"]</s>'
    with pytest.raises(RequestError, match="no assistant turns"):
        template.render([*MESSAGES, {"role": "assistant", "content": "x"}])


def test_the_sandbox_refuses_python_internals() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__ }}{{ messages.append(1) }}")
    with pytest.raises(RequestError):
        template.render(MESSAGES)


def test_malformed_messages_and_templates() -> None:
    with pytest.raises(RequestError, match=r"messages\[0\].role"):
        ChatTemplate(CHATML).render([{"role": "wizard", "content": "x"}])
    with pytest.raises(RequestError, match=r"messages\[0\].content"):
        ChatTemplate(CHATML).render([{"role": "user", "content": 3}])
    with pytest.raises(ConfigError, match="not a valid Jinja2 template"):
        ChatTemplate("{% for %}")


def test_from_dir(tmp_path: Path) -> None:
    assert ChatTemplate.from_dir(tmp_path) is None
    config = {"chat_template": CHATML, "eos_token": {"content": "<|im_end|>"}, "bos_token": None}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    template = ChatTemplate.from_dir(tmp_path)
    assert template is not None and template.eos_token == "<|im_end|>" and template.bos_token == ""
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    from_file = ChatTemplate.from_dir(tmp_path)
    assert from_file is not None and from_file.render(MESSAGES) == "Be brief."
