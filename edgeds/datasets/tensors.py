"""A generic model's split from an ``.npz`` file: one array ``[N, *shape]`` per input name.

:func:`read_npz` checks the file against the card's inputs (every input present, no other
array, the shape without the batch dimension, the dtype kind: integer for integer inputs,
float for float ones, cast to the input's dtype) and returns the arrays with their fingerprint:
sha256 over the file's bytes (the arrays are read whole anyway). Errors are one-line
:class:`~edgeds.errors.DatasetError` s naming the file and the input.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError

if TYPE_CHECKING:
    from ..modelcard import TensorInput


def read_npz(path: Path, specs: Sequence[TensorInput]) -> tuple[dict[str, np.ndarray], str]:
    """``({input name: array [N, *shape]}, "sha256:...")`` of the ``.npz`` at ``path``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the .npz ({exc.strerror or exc})") from exc
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not a numpy .npz archive ({str(exc).split('.')[0]})") from exc
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    unknown = sorted(set(arrays) - set(names))
    if missing or unknown:
        raise DatasetError(
            f"{path}: holds {sorted(arrays)}, the card's inputs are {names}: one array [N, *shape] per input name"
        )
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        array, dtype = arrays[spec.name], np.dtype(spec.dtype)
        if array.shape[1:] != spec.shape:
            raise DatasetError(f"{path}[{spec.name}]: is {list(array.shape)}, the card says [N, {list(spec.shape)}]")
        if dtype.kind != "b" and (array.dtype.kind == "f") != (dtype.kind == "f"):
            raise DatasetError(f"{path}[{spec.name}]: is {array.dtype}, the card says {dtype}")
        out[spec.name] = np.ascontiguousarray(array.astype(dtype, copy=False))
    rows = {name: len(a) for name, a in out.items()}
    if len(set(rows.values())) != 1 or not next(iter(rows.values())):
        raise DatasetError(f"{path}: the inputs need the same number of samples, at least one: {rows}")
    return out, "sha256:" + hashlib.sha256(data).hexdigest()
