"""Calibration and validation data for compiling, from the model card.

Images come from :func:`edgeds.datasets.load_split` (fingerprint-checked; an object-detection
card's from :func:`edgeds.datasets.detection.load_detection_split`, with their boxes; a
classifier's ``data_files:`` from :func:`edgeds.datasets.imagefolder.read_folder`) and go through
:class:`edgeds.preprocess.Preprocessor` exactly as on the device. Batches returned here are
owned by the caller (copies, not the preprocessor's pooled buffers).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..backends.base import TensorDict
from ..datasets import Split, load_split
from ..datasets.detection import DetectionSet, load_detection_split
from ..datasets.imagefolder import read_folder
from ..datasets.tensors import read_npz
from ..errors import DatasetError
from ..modelcard import DetectionCard, GenericCard, ModelCard
from ..preprocess import Preprocessor
from . import tensor_inputs


@dataclass(frozen=True)
class ImageSet:
    """Raw images (uint8 [N,H,W,3] RGB), labels and a fingerprint that keys caches.

    ``extra`` holds the card's tensor inputs (``extra_inputs``), one array ``[N, ...]`` per
    input name, row ``i`` going with image ``i``; the fingerprint covers them. ``truth`` is an
    object-detection split's original sizes and boxes (``labels`` are then zeros). A generic
    card's set has no images: ``images`` is ``[N, 0, 0, 3]`` (it counts the rows) and every
    input is in ``extra``.
    """

    images: np.ndarray
    labels: np.ndarray
    fingerprint: str
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    truth: DetectionSet | None = None

    def __len__(self) -> int:
        return len(self.images)


def images_fingerprint(images: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(repr(images.shape).encode())
    return "sha256:" + digest.hexdigest()


def load_images(card: ModelCard, split: Split, limit: int | None = None) -> ImageSet:
    """The card's ``split`` (first ``limit`` images). :class:`DatasetError` when the card has none."""
    if isinstance(card, GenericCard):
        return _tensor_set(card, split, limit)
    if isinstance(card, DetectionCard):
        found = load_detection_split(card, split, limit)
        return ImageSet(found.images, np.zeros(len(found), dtype=np.int64), found.fingerprint, truth=found)
    if card.data_files is not None:
        return _from_folder(card, split, limit)
    if card.data is None:
        raise DatasetError(
            f"model card {card.name!r} has no data: section (nor data_files:), so there is no {split} data "
            "(INT8 calibration and the accuracy gate need it)"
        )
    images, labels = load_split(card, split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if len(images) == 0:
        raise DatasetError(f"the {split} split of {card.name!r} is empty")
    spec = getattr(card.data, split)
    fp = spec.fingerprint if limit is None or limit >= spec.count else images_fingerprint(images)
    return ImageSet(images, labels, fp)


def _tensor_set(card: GenericCard, split: Split, limit: int | None) -> ImageSet:
    """A generic card's ``split``: its ``.npz`` (``data_files:``) or rows generated from the
    inputs' ``values:``. Every input is in ``extra``; ``images`` is ``[N, 0, 0, 3]`` (no image)."""
    if card.data_files is not None:
        extra, fp = read_npz(card.directory / getattr(card.data_files, split), card.extra_inputs)
        if limit is not None and limit < len(next(iter(extra.values()))):
            extra = {k: v[:limit] for k, v in extra.items()}
            fp = tensor_inputs.fingerprint(extra)
    else:
        count = getattr(card.samples_per_split, split)
        count = min(count, limit) if limit is not None else count
        extra = tensor_inputs.split_values(card, count, split)
        fp = tensor_inputs.fingerprint(extra)
    rows = len(next(iter(extra.values())))
    return ImageSet(np.zeros((rows, 0, 0, 3), np.uint8), np.zeros(rows, np.int64), fp, extra=extra)


def _from_folder(card: ModelCard, split: Split, limit: int | None) -> ImageSet:
    """A classifier's ``split`` from its ImageFolder directory (:mod:`edgeds.datasets.imagefolder`)."""
    assert card.data_files is not None
    spec = getattr(card.data_files, split)
    spec_input = card.input
    found = read_folder(
        card.directory / spec.images,
        card.labels,
        spec_input.height,
        spec_input.width,
        letterbox=spec_input.resize == "letterbox",
        limit=limit,
    )
    if spec.fingerprint is not None and limit is None and found.fingerprint != spec.fingerprint:
        raise DatasetError(
            f"{split} data of {card.name!r} changed: {spec.images} hashes to {found.fingerprint}, the model card "
            f"records {spec.fingerprint[:19]}...: record the new fingerprint if the change is intended"
        )
    if len(found.images) == 0:
        raise DatasetError(f"the {split} split of {card.name!r} is empty")
    return ImageSet(found.images, found.labels, found.fingerprint)


def custom_images(images: np.ndarray, labels: np.ndarray | None = None) -> ImageSet:
    """An :class:`ImageSet` from arrays the caller supplies (e.g. a calibration override)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DatasetError(f"calibration images must be uint8 [N,H,W,3], got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise DatasetError("calibration images are empty")
    lab = labels if labels is not None else np.zeros(len(images), dtype=np.int64)
    return ImageSet(images, lab, images_fingerprint(images))


def with_extra_inputs(card: ModelCard, images: ImageSet, split: str) -> ImageSet:
    """``images`` with the card's tensor inputs' values for ``split`` (as is when it has none)."""
    if not card.extra_inputs or isinstance(card, GenericCard):
        return images  # a generic set holds its inputs already
    extra = tensor_inputs.split_values(card, len(images), split)
    fp = f"{images.fingerprint}+{tensor_inputs.fingerprint(extra)}"
    return dataclasses.replace(images, extra=extra, fingerprint=fp)


def preprocess_all(card: ModelCard, images: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """Every image preprocessed, one new array ``[N, ...]`` in ``layout``."""
    pre = Preprocessor(card.input, layout)
    out = np.empty((len(images), *pre.sample_shape), dtype=np.dtype(card.input.dtype))
    for index, image in enumerate(images):
        pre.into(image, out[index])
    return out


def batches(
    card: ModelCard,
    images: np.ndarray,
    batch: int = 8,
    layout: str = "NCHW",
    *,
    exact: bool = False,
    extra: Mapping[str, np.ndarray] | None = None,
) -> list[TensorDict]:
    """Preprocessed ``{input name: [b, ...]}`` batches, caller-owned; ``extra`` are further
    inputs (rows matching ``images``) sliced into the same batches.

    The last batch may be smaller, unless ``exact`` (a model with a fixed batch): then it is
    filled up with samples from the start of the set, repeated, so every batch has exactly
    ``batch`` real samples (calibration statistics see only real data, no zero rows).
    """
    feeds = dict(extra or {})
    if not isinstance(card, GenericCard):  # a generic card's inputs are all in ``extra``
        feeds[card.input.name] = preprocess_all(card, images, layout)
    count = len(images)
    if exact and count and count % batch:
        for name, data in feeds.items():
            fill = np.resize(data, (batch - count % batch, *data.shape[1:]))
            feeds[name] = np.concatenate([data, fill])
    total = len(next(iter(feeds.values())))
    return [{name: data[i : i + batch] for name, data in feeds.items()} for i in range(0, total, batch)]
