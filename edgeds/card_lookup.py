"""Finding the model card file of a model: by name or by its ``model:`` field, never by guessing.

For an ONNX file the card is ``<stem>.yaml`` beside it, else the one card in its folder whose
``model:`` names the file. For a directory it is the one card in it: a YAML mapping with
``schema:`` and ``task:``; other YAML files (parameters, configs, profiles) are ignored. A YAML
path is the card itself. No card, or several, is one :class:`~edgeds.errors.ConfigError` line
naming the files looked at and saying to pass ``--card``. This module only locates the file;
:mod:`edgeds.modelcard` reads and validates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .yamlio import display_path, load_yaml

YAML_SUFFIXES = (".yaml", ".yml")


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())


def _mapping(path: Path) -> dict[str, Any] | None:
    """The YAML's top-level mapping, or None for a file that does not parse as one."""
    try:
        data, _ = load_yaml(path)
    except ConfigError:
        return None  # not a card (a broken card is reported when it is loaded by name)
    return data if isinstance(data, dict) else None


def is_card(path: Path) -> bool:
    """Whether ``path`` is a YAML mapping with ``task:`` and ``model:`` (what every model card has;
    ``schema:`` is optional in a card, so it does not count)."""
    data = _mapping(path)
    return data is not None and "task" in data and "model" in data


def names_model(card: Path, model: Path) -> bool:
    """Whether the YAML ``card`` is a card (``task:``) whose ``model:`` is the file ``model``."""
    data = _mapping(card)
    named = data.get("model") if data is not None and "task" in data else None
    return isinstance(named, str) and (card.parent / named).resolve() == model.resolve()


def _listed(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths) if paths else "no *.yaml"


def _card_in_directory(directory: Path) -> Path:
    looked = _yaml_files(directory)
    cards = [p for p in looked if is_card(p)]
    if len(cards) == 1:
        return cards[0]
    shown = display_path(directory)
    if not cards:
        message = f"no model card (a YAML with schema: and task:) among {_listed(looked)}: pass --card"
    else:
        message = f"{len(cards)} model cards ({_listed(cards)}): pass the one to use with --card"
    raise ConfigError.single(shown, None, "", message)


def _card_beside_onnx(model: Path) -> Path:
    by_name = model.with_suffix(".yaml")
    if by_name.is_file():
        return by_name
    looked = _yaml_files(model.parent) if model.parent.is_dir() else []
    claiming = [p for p in looked if names_model(p, model)]
    if len(claiming) == 1:
        return claiming[0]
    shown = display_path(model)
    if not claiming:
        message = (
            f"no model card: neither {by_name.name} nor a card whose model: names {model.name} "
            f"(looked at {_listed(looked)}): pass --card"
        )
    else:
        message = f"{len(claiming)} cards name {model.name} as their model ({_listed(claiming)}): pass --card"
    raise ConfigError.single(shown, None, "", message)


def card_path(path: Path) -> Path:
    """The card file for ``path``: the YAML itself, the one card of a directory, or the card of
    an ONNX file (``<stem>.yaml``, else the one card whose ``model:`` names it)."""
    if path.is_dir():
        return _card_in_directory(path)
    if path.suffix == ".onnx":
        return _card_beside_onnx(path)
    return path
