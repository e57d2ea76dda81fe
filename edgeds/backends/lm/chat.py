"""Chat template rendering: chat messages -> the prompt text a model was trained on.

Renders a Hugging Face chat template (Jinja2) the way ``transformers`` does: in jinja2's
``ImmutableSandboxedEnvironment`` (a template cannot reach Python objects or mutate its inputs),
with ``trim_blocks``/``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter and a
``raise_exception`` global, given ``messages``, ``add_generation_prompt``, ``bos_token`` and
``eos_token``. Templates are compiled once per :class:`ChatTemplate`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from ...errors import ConfigError, RequestError

ROLES = frozenset({"system", "user", "assistant", "tool"})


def _raise_exception(message: str) -> NoReturn:
    raise RequestError(f"chat template: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template with the model's special tokens."""

    def __init__(self, source: str, *, bos_token: str | None = None, eos_token: str | None = None) -> None:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ConfigError.single(None, None, "chat_template", f"not a valid Jinja2 template: {exc}") from exc
        self.source = source
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (each a mapping with ``role`` and ``content``).

        Raises :class:`~edgeds.errors.RequestError` for a malformed message or when the template
        refuses the conversation (its ``raise_exception``).
        """
        from jinja2 import TemplateError

        checked: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            role = message.get("role")
            content = message.get("content")
            if role not in ROLES:
                raise RequestError(f"messages[{index}].role must be one of {sorted(ROLES)}, not {role!r}")
            if not isinstance(content, str):
                raise RequestError(f"messages[{index}].content must be a string")
            checked.append(dict(message))
        try:
            return self._template.render(
                messages=checked,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except RequestError:
            raise
        except TemplateError as exc:
            raise RequestError(f"chat template failed: {exc}") from exc

    @classmethod
    def from_dir(cls, model_dir: Path) -> ChatTemplate | None:
        """The template of a model directory: ``chat_template.jinja``, else ``tokenizer_config.json``'s
        ``chat_template``; None when it has neither. Special tokens come from ``tokenizer_config.json``."""
        config: dict[str, Any] = {}
        config_path = model_dir / "tokenizer_config.json"
        if config_path.is_file():
            try:
                loaded = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError.single(config_path, None, "", f"cannot read: {exc}") from exc
            if isinstance(loaded, dict):
                config = loaded
        jinja_path = model_dir / "chat_template.jinja"
        source: Any = jinja_path.read_text(encoding="utf-8") if jinja_path.is_file() else config.get("chat_template")
        if isinstance(source, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
        if not isinstance(source, str):
            return None
        return cls(
            source, bos_token=_token_text(config.get("bos_token")), eos_token=_token_text(config.get("eos_token"))
        )


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # {"content": "<|im_end|>", ...} (AddedToken as saved by transformers)
        value = value.get("content")
    return value if isinstance(value, str) else None
