"""The sampling fields of a generation request body, checked: shared by the OpenAI API and the
generate extension.

Pure functions of a decoded JSON object; a bad field raises :class:`BadField` with one line naming
the field and what it may be (the protocol modules shape it into their own error body). Absent
fields stay None in :class:`Sampling` so the engine's generation defaults (the bundle's) apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_STOP_STRINGS = 16  # stop sequences per request (OpenAI allows 4; vLLM any number)
MAX_STOP_CHARS = 256  # length of one stop sequence
MAX_SEED = 2**63 - 1  # the largest seed taken: what every runtime's generator holds
MAX_INT = 2**31 - 1  # the largest top_k taken (the engine treats one at or over the vocabulary as off)


class BadField(ValueError):
    """A request field has a value this server does not take; ``param`` names the field."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Sampling:
    """How to sample one generation, as the request asked (None: the engine's default).

    ``max_tokens``: new tokens at most; ``temperature`` 0 is greedy; ``top_k`` 0 is off; ``stop``:
    strings that end the text (not included in it); ``ignore_eos``: go on past the end-of-sequence
    token (benchmarks).
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


def read_sampling(body: Mapping[str, Any], max_tokens_names: tuple[str, ...] = ("max_tokens",)) -> Sampling:
    """The sampling fields of ``body``: the first of ``max_tokens_names`` present, ``temperature``
    (0 to 2), ``top_p`` (over 0, at most 1), ``top_k`` (0 or -1: off; at most :data:`MAX_INT`),
    ``seed`` (0 to :data:`MAX_SEED`: a runtime's generator takes an unsigned 64-bit seed, and
    OpenAI documents no meaning for a negative one, so it is refused rather than mapped), ``stop``
    (a string or a list of strings) and ``ignore_eos``. Raises :class:`BadField`."""
    max_tokens = None
    for name in max_tokens_names:
        if body.get(name) is not None:
            max_tokens = integer(body, name, low=1)
            break
    top_k = integer(body, "top_k", low=-1, high=MAX_INT)
    return Sampling(
        max_tokens=max_tokens,
        temperature=number(body, "temperature", 0.0, 2.0),
        top_p=number(body, "top_p", 0.0, 1.0, low_open=True),
        top_k=None if top_k is None else max(top_k, 0),
        seed=integer(body, "seed", low=0, high=MAX_SEED),
        stop=stop_strings(body.get("stop"), "stop"),
        ignore_eos=flag(body, "ignore_eos"),
    )


def number(body: Mapping[str, Any], name: str, low: float, high: float, low_open: bool = False) -> float | None:
    """``body[name]`` as a float within [low, high] (``low`` excluded with ``low_open``); None when absent."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadField(name, f"{name} must be a number, not {_shown(value)}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise BadField(name, f"{name} must be in {bracket}{low:g}, {high:g}], not {value!r}")
    return float(value)


def integer(body: Mapping[str, Any], name: str, low: int | None = None, high: int | None = None) -> int | None:
    """``body[name]`` as an int of at least ``low`` and at most ``high``; None when absent."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadField(name, f"{name} must be an integer, not {_shown(value)}")
    if low is not None and value < low:
        raise BadField(name, f"{name} must be at least {low}, not {value}")
    if high is not None and value > high:
        raise BadField(name, f"{name} must be at most {high}, not {value}")
    return value


def flag(body: Mapping[str, Any], name: str) -> bool:
    """``body[name]`` as a bool (absent or null: False)."""
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadField(name, f"{name} must be true or false, not {_shown(value)}")
    return value


def stop_strings(value: Any, name: str) -> tuple[str, ...]:
    """A stop field: a string or a list of non-empty strings (none: empty)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise BadField(name, f"{name} must be a string or a list of strings, not {_shown(value)}")
    if len(items) > MAX_STOP_STRINGS:
        raise BadField(name, f"{name} takes at most {MAX_STOP_STRINGS} strings, not {len(items)}")
    for item in items:
        if not item or len(item) > MAX_STOP_CHARS:
            raise BadField(name, f"each {name} string must have 1 to {MAX_STOP_CHARS} characters")
    return tuple(dict.fromkeys(items))


def _shown(value: Any) -> str:
    """A short rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["MAX_INT", "MAX_SEED", "BadField", "Sampling", "flag", "integer", "number", "read_sampling", "stop_strings"]
