"""A classifier's calibration or validation split from an ImageFolder directory, fingerprinted.

The layout is torchvision's ``ImageFolder``: ``<root>/<class name>/<image files>``. Every class
folder must be named after one of the card's labels (any order, not every label needs one); the
label's index in the card is the image's class. Images are decoded with Pillow (RGB) and fitted
to the card's input size (stretched or letterboxed as ``input.resize`` says, by
:func:`edgeds.preprocess.resize`), so the split is ``uint8 [N, H, W, 3]`` like a generated one;
the preprocessor then runs on it as on the device.

The fingerprint is sha256 over each image's path relative to the root, its size and its
content, in sorted order (see :func:`read_folder`). Content, not modification times: the files are
read to decode them anyway, so hashing costs one more pass over bytes already in memory, and a
copy or ``touch`` that changes no pixel keeps the compile cache while any edit of a file changes
the fingerprint. Errors are one-line :class:`~edgeds.errors.DatasetError` s naming the folder or
file.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..preprocess import resize
from .coco import IMAGE_SUFFIXES


@dataclass(frozen=True)
class FolderSet:
    """Images ``uint8 [N, H, W, 3]`` (sorted by class folder, then file name), label indices, fingerprint."""

    images: np.ndarray
    labels: np.ndarray
    fingerprint: str


def class_files(root: Path, labels: tuple[str, ...]) -> list[tuple[int, Path]]:
    """``(label index, file)`` of every image under ``root``, sorted by relative path.

    Raises :class:`DatasetError` when ``root`` is not a directory, holds no class folder, a class
    folder is not a label, or a class folder holds no image file.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: no such ImageFolder directory (data_files: images)")
    index = {name: i for i, name in enumerate(labels)}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root}: no class folders: the layout is <root>/<label>/<image files>")
    found: list[tuple[int, Path]] = []
    for folder in folders:
        if folder.name not in index:
            raise DatasetError(
                f"{folder}: class folder {folder.name!r} is not among the card's labels {list(labels)}: "
                "rename it to a label or add it to labels"
            )
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{folder}: class {folder.name!r} holds no image files (png, jpg, ...)")
        found.extend((index[folder.name], f) for f in files)
    return found


def read_folder(
    root: Path, labels: tuple[str, ...], height: int, width: int, *, letterbox: bool = False, limit: int | None = None
) -> FolderSet:
    """The split under ``root`` (its first ``limit`` images in sorted order), fitted to ``height`` x
    ``width``; :class:`DatasetError` (one line, naming the file) for an image Pillow cannot read."""
    from PIL import Image, UnidentifiedImageError

    files = class_files(root, labels)
    if limit is not None:
        files = files[:limit]
    digest = hashlib.sha256()
    images = np.empty((len(files), height, width, 3), dtype=np.uint8)
    classes = np.empty(len(files), dtype=np.int64)
    for row, (label, path) in enumerate(files):
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                image = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read the image ({exc})") from exc
        relative = path.relative_to(root).as_posix()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(hashlib.sha256(data).digest())
        images[row] = image if image.shape[:2] == (height, width) else resize(image, height, width, letterbox)
        classes[row] = label
    return FolderSet(images, classes, "sha256:" + digest.hexdigest())
