"""The inputs of a multi-input model from one ``.npz`` file: one array per input name.

What ``edgeds run`` reads for a model whose card has ``extra_inputs`` or is ``task: generic``
(every input a tensor). The image input's array
is an image batch or a preprocessed tensor (as a ``.npy`` for a single-input model); every
other input's array is its tensor ``[N, *shape]`` (or one sample ``shape``), cast to the
model's dtype when that loses no kind (int to int, float to float). Errors are one-line
:class:`~edgeds.errors.RequestError` s naming the file and the input.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..backends.base import TensorSpec
from ..errors import RequestError
from ..modelcard import ModelCard


def load_npz_inputs(path: Path, card: ModelCard, layout: str, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Every model input (``specs``, the opened model's) by name from the ``.npz`` at ``path``.

    Raises :class:`RequestError` when the file is missing or not an ``.npz``, an input has no
    array (the message names it), an array names no input, or the rows or dtypes do not fit.
    """
    from .classify import image_batch

    names = [s.name for s in specs]
    if not path.is_file():
        raise RequestError(f"{path}: no such file")
    if path.suffix.lower() != ".npz":
        raise RequestError(
            f"{path}: the model takes inputs {names}: give an .npz with one array per input name (numpy.savez)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # not a zip, pickled objects, cut
        raise RequestError(f"{path}: not a numpy .npz archive ({str(exc).split('.')[0]})") from exc
    missing = [n for n in names if n not in arrays]
    if missing:
        raise RequestError(
            f"{path}: no array for input(s) {missing} (the model takes {names}; it holds {sorted(arrays)})"
        )
    unknown = sorted(set(arrays) - set(names))
    if unknown:
        raise RequestError(f"{path}: array(s) {unknown} name no model input (the model takes {names})")
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        array = arrays[spec.name]
        shape = tuple(spec.shape[1:])
        source = f"{path}[{spec.name}]"
        if card.task != "generic" and spec.name == card.input.name:  # a generic card has no image input
            feeds[spec.name] = image_batch(array, source, card, layout, shape, spec.dtype)
            continue
        dtype = np.dtype(spec.dtype)
        if shape and array.shape[-len(shape) :] != shape:
            raise RequestError(f"{source}: expected [N, {', '.join(map(str, shape))}], got {list(array.shape)}")
        if not np.can_cast(array.dtype, dtype, "same_kind") or (array.dtype.kind == "f") != (dtype.kind == "f"):
            raise RequestError(f"{source}: is {array.dtype}, the model takes {dtype} (save it as {dtype})")
        feeds[spec.name] = np.ascontiguousarray(array.reshape(-1, *shape).astype(dtype, copy=False))
    rows = {name: len(a) for name, a in feeds.items()}
    if len(set(rows.values())) > 1:
        raise RequestError(f"{path}: the inputs hold different numbers of samples {rows}")
    return feeds
