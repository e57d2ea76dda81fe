"""COCO instances JSON: a directory of images with boxes, read and written, and its fingerprint.

:func:`read_files` reads a split given as an images directory and, for a labelled set, a COCO
instances JSON (``images``: ``id``, ``file_name``; ``categories``: ``id``, ``name``;
``annotations``: ``image_id``, ``category_id``, ``bbox`` ``[x, y, width, height]`` in pixels,
``iscrowd``). Category names are matched to the card's labels. Without a JSON every image file
of the directory (sorted by name) is read, unlabelled. :func:`files_fingerprint` hashes the JSON
bytes and every image file's name and size. :func:`write_coco` writes images and boxes in this
layout (what :func:`read_files` reads back).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})
COLUMNS = 7
"""An annotation row: image index, class index, x1, y1, x2, y2 (image pixels), crowd (0/1)."""


@dataclass(frozen=True)
class FileSet:
    """Image files in order, and their boxes (``[M, 7]``, see :data:`COLUMNS`; None: unlabelled)."""

    files: list[Path]
    annotations: np.ndarray | None


def _image_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such images directory (data_files: images)")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"{directory}: no image files (png, jpg, ...)")
    return files


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the COCO annotations: {exc}") from exc
    except ValueError as exc:
        raise DatasetError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO instances file (no 'images' list)")
    return data


def read_files(images: Path, annotations: Path | None, labels: tuple[str, ...]) -> FileSet:
    """The split's image files and boxes (class indices into ``labels``); :class:`DatasetError`
    (one line) for a missing file, a category that is not a label, or a malformed entry."""
    if annotations is None:
        return FileSet(_image_files(images), None)
    data = _load_json(annotations)
    index = {name: i for i, name in enumerate(labels)}
    classes: dict[Any, int] = {}
    for category in data.get("categories") or []:
        name = category.get("name") if isinstance(category, dict) else None
        if name not in index:
            raise DatasetError(
                f"{annotations}: category {name!r} is not among the card's labels {list(labels)}: "
                "add it to labels or drop its annotations"
            )
        classes[category.get("id")] = index[name]
    files: list[Path] = []
    rows_of: dict[Any, int] = {}
    for entry in data["images"]:
        try:
            rows_of[entry["id"]] = len(files)
            files.append(images / str(entry["file_name"]))
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{annotations}: an images entry lacks id or file_name ({entry!r:.80})") from exc
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"{annotations}: {len(missing)} image file(s) not in {images}, e.g. {missing[0]}")
    if "annotations" not in data:
        return FileSet(files, None)
    rows = []
    for ann in data["annotations"]:
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
            row, cls = rows_of[ann["image_id"]], classes[ann["category_id"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{annotations}: annotation {ann.get('id') if isinstance(ann, dict) else ann!r} has an unknown "
                f"image_id/category_id or a bbox that is not [x, y, width, height] ({exc})"
            ) from exc
        rows.append((row, cls, x, y, x + w, y + h, 1.0 if ann.get("iscrowd") else 0.0))
    return FileSet(files, np.asarray(rows, dtype=np.float64).reshape(-1, COLUMNS))


def files_fingerprint(images: Path, annotations: Path | None) -> str:
    """``sha256:<hex>`` of the JSON's bytes (if any) and each image file's name and size, in name order."""
    digest = hashlib.sha256()
    if annotations is not None:
        try:
            digest.update(annotations.read_bytes())
        except OSError as exc:
            raise DatasetError(f"{annotations}: cannot read the COCO annotations: {exc}") from exc
    for path in _image_files(images):
        digest.update(f"{path.name}\0{path.stat().st_size}\n".encode())
    return "sha256:" + digest.hexdigest()


def write_coco(directory: Path, images: np.ndarray, annotations: np.ndarray, labels: tuple[str, ...]) -> Path:
    """Write uint8 RGB ``images`` ``[N, H, W, 3]`` as ``directory/images/NNNNN.png`` and their boxes
    (rows: image index, class, x1, y1, x2, y2[, crowd]) as ``directory/instances.json``; returns the JSON."""
    from PIL import Image

    folder = directory / "images"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, image in enumerate(images):
        name = f"{i:05d}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name)
        entries.append({"id": i + 1, "file_name": name, "height": int(image.shape[0]), "width": int(image.shape[1])})
    anns = []
    for n, row in enumerate(np.asarray(annotations, dtype=np.float64)):
        x1, y1, x2, y2 = (float(v) for v in row[2:6])
        crowd = int(row[6]) if len(row) > 6 else 0
        anns.append(
            {
                "id": n + 1,
                "image_id": int(row[0]) + 1,
                "category_id": int(row[1]) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": crowd,
            }
        )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(labels)]
    path = directory / "instances.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return path
