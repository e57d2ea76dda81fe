"""Detection boxes: an Ultralytics-style YOLO output decoded, filtered by NMS, mapped back to the image.

The head this reads is what an Ultralytics YOLOv8/YOLO11 ONNX export produces: one output
``[N, 4 + classes, anchors]`` whose rows are the box centre x, centre y, width and height in
model-input pixels, then one score per class (already a probability: no objectness row, no NMS
in the graph). :func:`decode` keeps, per anchor, its best class when that score reaches the
threshold, runs class-aware greedy NMS, keeps the ``max_detections`` best, and maps the boxes
from model-input pixels back to the original image's pixels (x1, y1, x2, y2; clipped to the image)
through the :class:`Geometry` with which the image was fitted to the input (:func:`geometry`: the
same arithmetic as :func:`edgeds.preprocess.resize`). Numpy only; the caller owns the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CANDIDATES = 30000
"""At most this many boxes (the best-scoring) go into NMS per image, as Ultralytics caps ``max_nms``."""


@dataclass(frozen=True)
class Geometry:
    """How an image of ``height`` x ``width`` was fitted to the model input: input pixel
    ``x' = x * rx + pad_x`` (and likewise for y)."""

    height: int
    width: int
    rx: float
    ry: float
    pad_x: float
    pad_y: float


def geometry(height: int, width: int, input_height: int, input_width: int, letterbox: bool) -> Geometry:
    """The fit of a ``height`` x ``width`` image to ``input_height`` x ``input_width``: stretched to
    the input, or letterboxed (aspect kept, scaled by ``min`` of the two ratios, centred, padded)."""
    if (height, width) == (input_height, input_width):
        return Geometry(height, width, 1.0, 1.0, 0.0, 0.0)
    if not letterbox:
        return Geometry(height, width, input_width / width, input_height / height, 0.0, 0.0)
    ratio = min(input_width / width, input_height / height)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    return Geometry(
        height,
        width,
        new_w / width,
        new_h / height,
        float((input_width - new_w) // 2),
        float((input_height - new_h) // 2),
    )


@dataclass(frozen=True)
class Detections:
    """One image's detections, best first: ``boxes`` float64 ``[k, 4]`` (x1, y1, x2, y2 in the
    image's pixels), ``scores`` ``[k]``, ``classes`` int64 ``[k]`` (indices into the card's labels)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``box`` with each row of ``others`` ``[k, 4]``."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every row of ``a`` ``[n, 4]`` with every row of ``b`` ``[m, 4]``: ``[n, m]``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.stack([iou(box, b) for box in a])


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps (best score first, at most ``limit``): a box is
    dropped when it overlaps a kept box of the same class by more than ``iou_threshold``."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order) and len(keep) < limit:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        overlap = iou(boxes[best], boxes[rest])
        order = rest[(overlap <= iou_threshold) | (classes[rest] != classes[best])]
    return np.asarray(keep, dtype=np.int64)


def decode_one(
    head: np.ndarray, fit: Geometry, score_threshold: float, iou_threshold: float, max_detections: int
) -> Detections:
    """The detections of one image's head ``[4 + classes, anchors]`` (see the module docstring)."""
    scores_all = np.asarray(head[4:], dtype=np.float64)
    if scores_all.shape[0] == 0:
        raise ValueError(f"a YOLO head has 4 box rows and at least one class row, got {head.shape[0]} rows")
    classes = scores_all.argmax(axis=0)
    scores = scores_all[classes, np.arange(scores_all.shape[1])]
    chosen = np.flatnonzero(scores >= score_threshold)
    if len(chosen) > MAX_CANDIDATES:
        chosen = chosen[np.argsort(-scores[chosen], kind="stable")[:MAX_CANDIDATES]]
    cx, cy, w, h = (np.asarray(head[i, chosen], dtype=np.float64) for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kept = nms(boxes, scores[chosen], classes[chosen], iou_threshold, max_detections)
    boxes = boxes[kept]
    boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - fit.pad_x) / fit.rx, 0, fit.width)
    boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - fit.pad_y) / fit.ry, 0, fit.height)
    return Detections(boxes, scores[chosen][kept], classes[chosen][kept].astype(np.int64))


def decode(
    output: np.ndarray,
    fits: list[Geometry],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> list[Detections]:
    """The detections of every image of a batch: ``output`` ``[N, 4 + classes, anchors]``, ``fits``
    one :class:`Geometry` per image (row ``i`` of the output goes with ``fits[i]``)."""
    if output.ndim != 3 or output.shape[1] < 5:
        raise ValueError(f"a YOLO output is [N, 4 + classes, anchors], got {list(output.shape)}")
    return [decode_one(output[i], fit, score_threshold, iou_threshold, max_detections) for i, fit in enumerate(fits)]
