"""Calibration and validation data named by a model card, generated once and cached.

A model card's ``data:`` names a generator (``module:function`` taking ``seed, count, size``
and returning ``(uint8 images [N,H,W,3] RGB, int64 labels [N])``) and, per split, the seed,
the count and the sha256 fingerprint of the result. :func:`load_split` generates a split on
first use, caches it under ``$EDGEDS_CACHE_DIR/datasets`` (default ``~/.cache/edgeds``), and
checks the fingerprint every time: a generator that drifts raises :class:`DatasetError`
instead of silently feeding different data to the accuracy gate.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import DatasetError
from ..paths import cache_dir

if TYPE_CHECKING:
    from ..modelcard import ModelCard

Split = Literal["validation", "calibration"]
Generator = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """``sha256:<hex>`` of the uint8 images' bytes followed by the labels as little-endian int64."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return "sha256:" + digest.hexdigest()


def _generator(spec: str) -> Generator:
    module_name, _, func_name = spec.partition(":")
    try:
        func: Generator = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise DatasetError(f"data generator {spec!r} cannot be imported: {exc}") from exc
    return func


def _cached(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    try:
        with np.load(path) as cached:
            return cached["images"], cached["labels"]
    except (OSError, ValueError, KeyError):
        return None, None


def load_split(card: ModelCard, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N,H,W,3] RGB, labels int64 [N])`` of ``split``, fingerprint-checked."""
    if card.data is None:
        raise DatasetError(f"model card {card.name!r} names no {split} data (data: is missing)")
    spec = getattr(card.data, split)
    size = card.input.height
    path = cache_dir() / "datasets" / f"{card.name}-{split}-{spec.seed}-{spec.count}-{size}.npz"
    images, labels = _cached(path)
    if images is None or labels is None or fingerprint(images, labels) != spec.fingerprint:
        # No cache, a torn one, or one written by an older generator: generate afresh.
        images, labels = _generator(card.data.generator)(spec.seed, spec.count, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, path)
    actual = fingerprint(images, labels)
    if actual != spec.fingerprint:
        raise DatasetError(
            f"{split} data of {card.name!r} drifted: the generator produced {actual[:19]}..., "
            f"the model card records {spec.fingerprint[:19]}... "
            "Regenerate the card with the model's train.py if the generator changed on purpose."
        )
    return images, labels.astype(np.int64)
