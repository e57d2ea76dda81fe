"""Images to model input, as the model card says, into reusable buffers.

:class:`Preprocessor` turns RGB uint8 images ``[H, W, 3]`` (any size) into the model's input
layout and dtype. It owns one output buffer per batch size it has seen: :meth:`batch` returns
a view into that buffer, valid until the next call with the same batch size. Nothing is
allocated per image once a batch size has been seen, except when an image needs resizing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .boxes import geometry

if TYPE_CHECKING:
    from .modelcard import InputSpec


class Preprocessor:
    """Resize, colour order, normalization and layout for one model input."""

    def __init__(self, spec: InputSpec, layout: str | None = None) -> None:
        self.spec = spec
        self.layout = layout or spec.layout
        scale = np.float32(spec.scale)
        std = np.asarray(spec.std, dtype=np.float32)
        # x' = (x * scale - mean) / std  ==  x * mul + add
        self._mul = (scale / std).astype(np.float32)
        self._add = (-np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)
        self._buffers: dict[int, np.ndarray] = {}
        self._work = np.empty((spec.height, spec.width, 3), dtype=np.float32)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        h, w = self.spec.height, self.spec.width
        return (3, h, w) if self.layout == "NCHW" else (h, w, 3)

    def buffer(self, batch: int) -> np.ndarray:
        """The pooled output buffer for ``batch`` images (allocated on first use)."""
        buf = self._buffers.get(batch)
        if buf is None:
            buf = np.empty((batch, *self.sample_shape), dtype=np.dtype(self.spec.dtype))
            self._buffers[batch] = buf
        return buf

    def into(self, image: np.ndarray, out: np.ndarray) -> None:
        """Write one preprocessed ``image`` (RGB uint8 HxWx3) into ``out`` (one sample)."""
        image = self._fit(image)
        if self.spec.color_order == "BGR":
            image = image[..., ::-1]
        work = self._work
        np.multiply(image, self._mul, out=work, casting="unsafe")
        np.add(work, self._add, out=work)
        if self.layout == "NCHW":
            out[...] = work.transpose(2, 0, 1)
        else:
            out[...] = work

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess ``images`` into the pooled buffer for their count; returns that buffer."""
        out = self.buffer(len(images))
        for index, image in enumerate(images):
            self.into(image, out[index])
        return out

    def _fit(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image HxWx3, got shape {image.shape}")
        h, w = self.spec.height, self.spec.width
        if image.shape[:2] == (h, w):
            return image
        return resize(image, h, w, letterbox=self.spec.resize == "letterbox")


def resize(image: np.ndarray, height: int, width: int, letterbox: bool = False) -> np.ndarray:
    """Bilinear resize of a uint8 RGB image; ``letterbox`` keeps the aspect ratio and pads grey."""
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(image))
    if not letterbox:
        return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    # the fit's arithmetic is edgeds.boxes.geometry's: detection boxes are mapped back through it
    fit = geometry(pil.height, pil.width, height, width, letterbox=True)
    new_w, new_h = round(pil.width * fit.rx), round(pil.height * fit.ry)
    canvas = Image.new("RGB", (width, height), (114, 114, 114))
    canvas.paste(pil.resize((new_w, new_h), Image.Resampling.BILINEAR), (int(fit.pad_x), int(fit.pad_y)))
    return np.asarray(canvas)
