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


def _listed(images: Path, annotations: Path, data: dict[str, Any]) -> tuple[list[Path], dict[Any, int]]:
    """The image files the JSON's ``images`` list names, in its order, and each image id's row."""
    files: list[Path] = []
    rows_of: dict[Any, int] = {}
    for entry in data["images"]:
        try:
            if not isinstance(entry["id"], (int, str)):
                raise TypeError("the id is not a number or a string")
            rows_of[entry["id"]] = len(files)
            files.append(images / str(entry["file_name"]))
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{annotations}: an images entry lacks id or file_name ({entry!r:.80})") from exc
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"{annotations}: {len(missing)} image file(s) not in {images}, e.g. {missing[0]}")
    return files, rows_of


def read_files(images: Path, annotations: Path | None, labels: tuple[str, ...]) -> FileSet:
    """The split's image files and boxes (class indices into ``labels``); :class:`DatasetError`
    (one line) for a missing file, a category that is not a label, or a malformed entry."""
    if annotations is None:
        return FileSet(_image_files(images), None)
    data = _load_json(annotations)
    index = {name: i for i, name in enumerate(labels)}
    classes: dict[Any, int] = {}
    for key in ("categories", "annotations"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise DatasetError(f"{annotations}: '{key}' must be a list, got {type(data[key]).__name__}")
    for category in data.get("categories") or []:
        name = category.get("name") if isinstance(category, dict) else None
        if isinstance(category, dict) and not isinstance(category.get("id"), (int, str)):
            raise DatasetError(f"{annotations}: category {name!r} has no id (a number or a string)")
        if name not in index:
            raise DatasetError(
                f"{annotations}: category {name!r} is not among the card's labels {list(labels)}: "
                "add it to labels or drop its annotations"
            )
        classes[category.get("id")] = index[name]
    files, rows_of = _listed(images, annotations, data)
    if data.get("annotations") is None:
        return FileSet(files, None)
    rows = []
    for n, ann in enumerate(data["annotations"]):
        where = ann.get("id", f"#{n + 1}") if isinstance(ann, dict) else f"#{n + 1}"
        try:
            if not isinstance(ann, dict):
                raise TypeError("not an object")
            x, y, w, h = (float(v) for v in ann["bbox"])
            row, cls = rows_of[ann["image_id"]], classes[ann["category_id"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{annotations}: annotation {where} has an unknown image_id/category_id or a bbox that is not "
                f"[x, y, width, height] ({exc})"
            ) from exc
        rows.append((row, cls, x, y, x + w, y + h, 1.0 if ann.get("iscrowd") else 0.0))
    return FileSet(files, np.asarray(rows, dtype=np.float64).reshape(-1, COLUMNS))


def files_fingerprint(images: Path, annotations: Path | None) -> str:
    """``sha256:<hex>`` of the JSON's bytes (if any) and of each image the split reads: its path
    relative to ``images`` and its content (an edit that keeps a file's size changes it too)."""
    digest = hashlib.sha256()
    if annotations is not None:
        try:
            digest.update(annotations.read_bytes())
        except OSError as exc:
            raise DatasetError(f"{annotations}: cannot read the COCO annotations: {exc}") from exc
    listed = _image_files(images) if annotations is None else _listed(images, annotations, _load_json(annotations))[0]
    for path in listed:
        try:
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read the image: {exc}") from exc
        digest.update(f"{path.relative_to(images).as_posix()}\0{content}\n".encode())
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
