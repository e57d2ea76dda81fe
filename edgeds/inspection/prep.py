"""Camera frames of any size into one sample of the model input, without per-frame allocation.

:class:`FramePreprocessor` fits a frame to the card's ``height x width`` (``stretch`` or
``letterbox`` with grey padding) with OpenCV into buffers it owns (``INTER_AREA`` when
shrinking, ``INTER_LINEAR`` when enlarging), then normalizes it straight into the caller's
output sample (colour order, scale/mean/std, NCHW/NHWC) with a 256-entry lookup table per
channel (``cv2.LUT`` + ``cv2.split``). The table's values are computed exactly as
:class:`edgeds.preprocess.Preprocessor` computes them, so a frame already at the model's size
gives a bit-identical input to the offline preprocessing (decisions match offline accuracy),
about ten times faster. Without OpenCV, or for a float16/uint8 model input, it falls back to
the Preprocessor itself (Pillow resize, which allocates).

Frames may be BGR buffers viewed reversed (``buf[..., ::-1]``, what the sources yield): the
resize and the lookup run on the contiguous BGR buffer and the channel order is fixed by the
table and the plane order, with no copy. Not thread-safe: one per station.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..preprocess import Preprocessor

if TYPE_CHECKING:
    from ..modelcard import InputSpec


def _contiguous_base(image: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """``(array, reversed)``: ``image`` itself if C-contiguous, its BGR buffer if it is a reversed view."""
    if image.flags.c_contiguous:
        return image, False
    flipped = image[..., ::-1]
    if flipped.flags.c_contiguous:
        return flipped, True
    return None


class FramePreprocessor:
    """Fit + normalize one frame into one sample of the model input (see the module docstring)."""

    def __init__(self, spec: InputSpec, layout: str | None = None) -> None:
        self.spec = spec
        self.pre = Preprocessor(spec, layout)
        self.layout = self.pre.layout
        h, w = spec.height, spec.width
        self._canvas = np.empty((h, w, 3), dtype=np.uint8)
        self._work = np.empty((h, w, 3), dtype=np.float32)
        self._inner: dict[tuple[int, int], np.ndarray] = {}
        try:
            import cv2
        except ImportError:
            self._cv2: Any = None
        else:
            self._cv2 = cv2
        # x * mul[k] + add[k] for every uint8 x and model channel k, in float32 exactly as the
        # Preprocessor computes it: the table lookup gives bit-identical values, ~10x faster.
        values = np.arange(256, dtype=np.float32)[:, None]
        table = (values * self.pre._mul[None, :]).astype(np.float32) + self.pre._add[None, :]
        self._lut = {
            False: np.ascontiguousarray(table.reshape(256, 1, 3), dtype=np.float32),  # source in model order
            True: np.ascontiguousarray(table[:, ::-1].reshape(256, 1, 3), dtype=np.float32),  # reversed
        }

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.pre.sample_shape

    def buffer(self, count: int) -> np.ndarray:
        """A new input array for ``count`` samples (allocate once, reuse forever)."""
        return np.empty((count, *self.sample_shape), dtype=np.dtype(self.spec.dtype))

    def into(self, image: np.ndarray, out: np.ndarray) -> None:
        """Write RGB uint8 ``image`` (any size; may be a reversed BGR view) into sample ``out``."""
        based = _contiguous_base(image) if image.ndim == 3 and image.shape[2] == 3 else None
        if self._cv2 is None or based is None or image.dtype != np.uint8 or self.spec.dtype != "float32":
            self.pre.into(image, out)  # the generic path (Pillow resize, numpy arithmetic)
            return
        src, flipped = based
        if src.shape[:2] != (self.spec.height, self.spec.width):
            src = self._fit(src)
        # the buffer's channel order relative to the model's: RGB image viewed from BGR memory is
        # "flipped"; a BGR model flips once more
        reverse = flipped != (self.spec.color_order == "BGR")
        cv2 = self._cv2
        if self.layout == "NCHW":
            cv2.LUT(src, self._lut[reverse], dst=self._work)
            planes = [out[2], out[1], out[0]] if reverse else [out[0], out[1], out[2]]
            cv2.split(self._work, planes)
        elif not reverse and out.flags.c_contiguous:
            cv2.LUT(src, self._lut[False], dst=out)
        else:
            cv2.LUT(src, self._lut[reverse], dst=self._work)
            out[...] = self._work[..., ::-1] if reverse else self._work

    def _fit(self, src: np.ndarray) -> np.ndarray:
        """Resize contiguous ``src`` (any channel order, kept) into the canvas."""
        cv2 = self._cv2
        h, w = self.spec.height, self.spec.width
        ih, iw = src.shape[:2]
        canvas = self._canvas
        if self.spec.resize == "letterbox":
            ratio = min(w / iw, h / ih)
            nw, nh = max(1, round(iw * ratio)), max(1, round(ih * ratio))
            inner = self._inner.get((nh, nw))
            if inner is None:
                inner = self._inner[(nh, nw)] = np.empty((nh, nw, 3), dtype=np.uint8)
            interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
            cv2.resize(src, (nw, nh), dst=inner, interpolation=interp)
            canvas.fill(114)
            top, left = (h - nh) // 2, (w - nw) // 2
            canvas[top : top + nh, left : left + nw] = inner
        else:
            interp = cv2.INTER_AREA if (iw > w and ih > h) else cv2.INTER_LINEAR
            cv2.resize(src, (w, h), dst=canvas, interpolation=interp)
        return canvas
