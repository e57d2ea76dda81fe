"""Calibration and validation data of an object-detection card: images with boxes, fingerprinted.

Two sources, as the card says:

- ``data:`` names a generator ``module:function(seed, count, size)`` returning uint8 RGB images
  ``[N, size, size, 3]`` and their boxes, a float array ``[M, 6]`` (or ``[M, 7]``) of rows
  ``image index, class index, x1, y1, x2, y2[, crowd]`` in image pixels. A split is generated
  once, cached under ``$EDGEDS_CACHE_DIR/datasets`` and checked against the card's fingerprint
  (sha256 of the image bytes, then the rows as little-endian float64 ``[M, 7]``).
- ``data_files:`` names an images directory and a COCO instances JSON per split
  (:mod:`.coco`); its fingerprint is the JSON's bytes and each image file's name and size,
  checked when the card records one.

Every image is fitted to the model input here (stretched or letterboxed as the card's
``input.resize`` says, by :func:`edgeds.preprocess.resize`, as serving does) and its original
size kept, so boxes decoded from the model map back to the original image's pixels.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..boxes import Geometry, geometry
from ..errors import DatasetError
from ..paths import cache_dir
from ..preprocess import resize
from .coco import COLUMNS, files_fingerprint, read_files

if TYPE_CHECKING:
    from ..modelcard import DetectionCard

Split = Literal["validation", "calibration"]


@dataclass(frozen=True)
class DetectionSet:
    """A split ready for the model: ``images`` uint8 ``[N, H, W, 3]`` fitted to the model input,
    ``sizes`` int64 ``[N, 2]`` (each original height, width), ``annotations`` float64 ``[M, 7]``
    (rows as in the module docstring, original pixels; None: the set is unlabelled) and the
    split's fingerprint."""

    images: np.ndarray
    sizes: np.ndarray
    annotations: np.ndarray | None
    fingerprint: str

    def __len__(self) -> int:
        return len(self.images)

    def geometries(self, input_height: int, input_width: int, letterbox: bool) -> list[Geometry]:
        """How each original image was fitted to the input (to map boxes back)."""
        return [geometry(int(h), int(w), input_height, input_width, letterbox) for h, w in self.sizes]


def boxes_fingerprint(images: np.ndarray, annotations: np.ndarray) -> str:
    """``sha256:<hex>`` of a generated split (see the module docstring)."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(_rows(annotations), dtype="<f8").tobytes())
    return "sha256:" + digest.hexdigest()


def _rows(annotations: np.ndarray) -> np.ndarray:
    rows = np.asarray(annotations, dtype=np.float64).reshape(len(annotations), -1)
    if rows.shape[1] == COLUMNS - 1:
        rows = np.concatenate([rows, np.zeros((len(rows), 1))], axis=1)
    if rows.shape[1] != COLUMNS:
        raise DatasetError(f"detection boxes are rows of image, class, x1, y1, x2, y2[, crowd]; got {rows.shape}")
    return rows


def _generated(card: DetectionCard, split: Split) -> tuple[np.ndarray, np.ndarray]:
    assert card.data is not None
    spec = getattr(card.data, split)
    size = card.input.height
    path = cache_dir() / "datasets" / f"{card.name}-boxes-{split}-{spec.seed}-{spec.count}-{size}.npz"
    try:
        with np.load(path) as cached:
            images, rows = cached["images"], cached["boxes"]
    except (OSError, ValueError, KeyError):
        images = rows = None
    if images is None or rows is None or boxes_fingerprint(images, rows) != spec.fingerprint:
        # no cache, a torn one, or one an older generator wrote: generate afresh
        module_name, _, func_name = card.data.generator.partition(":")
        try:
            generate = getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise DatasetError(f"data generator {card.data.generator!r} cannot be imported: {exc}") from exc
        images, raw = generate(spec.seed, spec.count, size)
        rows = _rows(raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, boxes=rows)
        os.replace(tmp, path)
    actual = boxes_fingerprint(images, rows)
    if actual != spec.fingerprint:
        raise DatasetError(
            f"{split} data of {card.name!r} drifted: the generator produced {actual}, the model card "
            f"records {spec.fingerprint[:19]}...: record the new fingerprint if the generator changed on purpose"
        )
    return images, rows


def _fit(card: DetectionCard, image: np.ndarray) -> np.ndarray:
    h, w = card.input.height, card.input.width
    if image.shape[:2] == (h, w):
        return image
    return resize(image, h, w, letterbox=card.input.resize == "letterbox")


def _from_files(card: DetectionCard, split: Split, limit: int | None) -> DetectionSet:
    from PIL import Image, UnidentifiedImageError

    assert card.data_files is not None
    spec = getattr(card.data_files, split)
    images_dir = card.directory / spec.images
    annotations = card.directory / spec.annotations if spec.annotations else None
    fp = files_fingerprint(images_dir, annotations)
    if spec.fingerprint is not None and fp != spec.fingerprint:
        raise DatasetError(
            f"{split} data of {card.name!r} changed: the files hash to {fp}, the model card records "
            f"{spec.fingerprint[:19]}...: record the new fingerprint if the change is intended"
        )
    found = read_files(images_dir, annotations, card.labels)
    files = found.files[:limit] if limit is not None else found.files
    fitted, sizes = [], []
    for path in files:
        try:
            with Image.open(path) as img:
                image = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"{path}: cannot read the image: {exc}") from exc
        sizes.append(image.shape[:2])
        fitted.append(_fit(card, image))
    rows = found.annotations
    if rows is not None and limit is not None:
        rows = rows[rows[:, 0] < len(files)]
    if limit is not None and limit < len(found.files):
        fp = "sha256:" + hashlib.sha256(f"{fp}[:{limit}]".encode()).hexdigest()
    return DetectionSet(np.stack(fitted), np.asarray(sizes, dtype=np.int64).reshape(-1, 2), rows, fp)


def load_detection_split(card: DetectionCard, split: Split, limit: int | None = None) -> DetectionSet:
    """The card's ``split`` (its first ``limit`` images), fitted to the input, fingerprint-checked.
    :class:`DatasetError` when the card names no data or the split is empty."""
    if card.data_files is not None:
        found = _from_files(card, split, limit)
    elif card.data is not None:
        images, rows = _generated(card, split)
        fp = card.data.validation.fingerprint if split == "validation" else card.data.calibration.fingerprint
        if limit is not None and limit < len(images):
            images, rows = images[:limit], rows[rows[:, 0] < limit]
            fp = boxes_fingerprint(images, rows)
        sizes = np.asarray([im.shape[:2] for im in images], dtype=np.int64).reshape(-1, 2)
        found = DetectionSet(np.stack([_fit(card, im) for im in images]), sizes, rows, fp)
    else:
        raise DatasetError(
            f"model card {card.name!r} has no data: or data_files: section, so there is no {split} data "
            "(INT8 calibration and the accuracy gate need it)"
        )
    if len(found) == 0:
        raise DatasetError(f"the {split} split of {card.name!r} is empty")
    return found
