"""Compile-time values of a card's tensor inputs (``extra_inputs``), per split.

:func:`split_values` gives, for each tensor input, one caller-owned array ``[count, *shape]``
in the input's dtype: the card's constant, a seeded integer range or a seeded normal draw
(:class:`~edgeds.modelcard.TensorValues`). Row ``i`` goes with the split's image ``i``. The
values are a pure function of the card and the split, so :func:`fingerprint` of them keys the
compile cache together with the images' fingerprint.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from ..modelcard import ModelCard, TensorInput


def values(spec: TensorInput, count: int, split: str) -> np.ndarray:
    """``count`` rows of ``spec``'s values for ``split`` (a new array, ``[count, *spec.shape]``)."""
    source = spec.values
    shape = (count, *spec.shape)
    dtype = np.dtype(spec.dtype)
    if source.constant is not None:
        return np.full(shape, source.constant, dtype=dtype)
    rng = np.random.default_rng([source.seed, zlib.crc32(f"{spec.name}/{split}".encode())])
    if source.low is not None and source.high is not None:
        return rng.integers(source.low, source.high, shape).astype(dtype)
    return (rng.standard_normal(shape) * source.std + source.mean).astype(dtype)


def split_values(card: ModelCard, count: int, split: str) -> dict[str, np.ndarray]:
    """Every extra input's values for ``count`` samples of ``split``, by input name."""
    return {spec.name: values(spec, count, split) for spec in card.extra_inputs}


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """A digest of ``arrays`` (names, dtypes, shapes and bytes); empty for none."""
    if not arrays:
        return ""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()
