"""Make a video file from images (tests, the demo, and anyone without a camera at hand).

:func:`write_video` uses OpenCV's ``VideoWriter``. The codec follows the suffix unless given:
``.avi`` -> ``HFYU`` (HuffYUV, lossless, fast to decode), ``.mkv`` -> ``FFV1`` (lossless),
``.mp4`` -> ``mp4v``. Lossless is the default on purpose: a decoded frame is then bit-identical
to the image written, so decisions on the video can be compared with offline accuracy on the
images. ``lossless=False`` with ``.avi`` gives ``MJPG`` (small files; frames differ by up to a
few dozen grey levels, enough to flip borderline predictions).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import InspectionError
from .sources import cv2_module

if TYPE_CHECKING:
    from ..modelcard import ModelCard

_LOSSLESS = {".avi": "HFYU", ".mkv": "FFV1"}
_LOSSY = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG"}


def codec_for(path: str | Path, lossless: bool = True) -> str:
    """The FourCC :func:`write_video` uses for ``path``."""
    suffix = Path(path).suffix.lower()
    table = _LOSSLESS if lossless else _LOSSY
    if suffix not in table:
        kind = "lossless" if lossless else "lossy"
        raise InspectionError(f"no {kind} codec for {suffix or 'no suffix'!r}: use one of {sorted(table)}")
    return table[suffix]


def write_video(
    images: Iterable[np.ndarray],
    path: str | Path,
    fps: float = 25.0,
    *,
    codec: str | None = None,
    lossless: bool = True,
) -> int:
    """Write RGB uint8 ``[H, W, 3]`` ``images`` (all one size) to ``path``; returns the frame count."""
    cv2 = cv2_module()
    path = Path(path)
    fourcc = codec or codec_for(path, lossless)
    writer = None
    count = 0
    size: tuple[int, int] | None = None
    try:
        for image in images:
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise InspectionError(f"frame {count}: expected RGB uint8 HxWx3, got {image.dtype} {image.shape}")
            if writer is None:
                size = (image.shape[1], image.shape[0])
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
                if not writer.isOpened():
                    raise InspectionError(f"OpenCV cannot write {fourcc} to {path}")
            elif (image.shape[1], image.shape[0]) != size:
                raise InspectionError(f"frame {count} is {image.shape[1]}x{image.shape[0]}, the video is {size}")
            writer.write(np.ascontiguousarray(image[..., ::-1]))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise InspectionError("no images to write")
    return count


def labelled_video(
    card: ModelCard,
    path: str | Path,
    images: Literal["validation", "samples"] = "validation",
    *,
    fps: float = 25.0,
    limit: int | None = None,
) -> np.ndarray:
    """Write a lossless video of the card's validation split or sample images; returns the truth.

    The returned int64 labels are indexed by frame id (pass them as ``truth`` to
    :func:`edgeds.inspection.run_inspection` for a confusion matrix). Sample images are
    labelled by their file-name prefix (``<label>_<n>.png``) and resized to the model's input
    size when they differ from it.
    """
    if images == "validation":
        from ..datasets import load_split

        frames, labels = load_split(card, "validation")
    else:
        from ..evaluate import load_samples
        from ..preprocess import resize

        samples = load_samples(card)
        if not samples:
            raise InspectionError(f"model card {card.name!r} has no sample images")
        size = (card.input.height, card.input.width)
        frames = np.stack([img if img.shape[:2] == size else resize(img, *size) for _, _, img in samples])
        labels = np.array([card.labels.index(label) for _, label, _ in samples], dtype=np.int64)
    if limit is not None:
        frames, labels = frames[:limit], labels[:limit]
    write_video(frames, path, fps)
    return labels
