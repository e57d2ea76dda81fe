"""The object-detection gate: a compiled candidate's boxes against the FP32 model's and the labels.

Both models' heads are decoded the way serving decodes them (:mod:`edgeds.boxes`, boxes in the
original images' pixels). On a labelled validation set the figures are COCO mAP@0.5:0.95 and
mAP@0.5 of the reference and of the candidate (pycocotools, every box scoring at least
:data:`MAP_SCORE_THRESHOLD`, at most the card's ``max_detections`` per image), and the drop in
percentage points; the profile's ``accuracy.max_map_drop`` bounds the drop. On an unlabelled set
the bound is ``accuracy.min_box_agreement`` on the box agreement: the candidate's served boxes
(the card's ``score_threshold``) matched one to one to the reference's at IoU >= 0.5 with the same
class, as a share of the larger of the two counts (1.0 when neither has a box). Agreement, the
output cosine and the max abs error are always reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...boxes import Detections, decode, iou_matrix
from ...config import AccuracyBudget, Profile
from ...errors import CompileError
from .image import Outputs, cosine_rows

if TYPE_CHECKING:
    from ...datasets.detection import DetectionSet
    from ...modelcard import DetectionCard, ModelCard
    from ..data import ImageSet

MAP_SCORE_THRESHOLD = 0.001
"""Boxes down to this score count for mAP (the COCO evaluation convention)."""
MATCH_IOU = 0.5


@dataclass(frozen=True)
class DetectionResult:
    """The figures of one candidate; mAP as fractions (None on an unlabelled set), drop in points."""

    labelled: bool
    reference_map: float | None
    map: float | None
    map_drop: float | None
    reference_map50: float | None
    map50: float | None
    box_agreement: float
    cosine: dict[str, float]
    max_abs_error: float
    passed: bool = True
    failures: tuple[str, ...] = field(default_factory=tuple)

    @property
    def min_cosine(self) -> float:
        return min(self.cosine.values()) if self.cosine else 1.0

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failures"] = list(self.failures)
        data["min_cosine"] = self.min_cosine
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectionResult:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["failures"] = tuple(values.get("failures") or ())
        values["cosine"] = {str(k): float(v) for k, v in (values.get("cosine") or {}).items()}
        return cls(**values)

    def manifest_accuracy(self) -> dict[str, Any]:
        """The manifest's ``accuracy`` block (the mAP figures are in the artifact's ``gated``)."""
        return {"agreement": self.box_agreement, "cosine": self.min_cosine, "max_abs_error": self.max_abs_error}


def judge(result: DetectionResult, budget: AccuracyBudget) -> DetectionResult:
    """``result`` judged against ``budget``: the mAP drop on a labelled set, else the box agreement."""
    failures = []
    if result.labelled and result.map_drop is not None and result.map_drop > budget.max_map_drop:
        failures.append(f"mAP drop {result.map_drop:.2f} pts > {budget.max_map_drop} pts")
    if not result.labelled and result.box_agreement < budget.min_box_agreement:
        failures.append(f"box agreement {result.box_agreement:.4f} < {budget.min_box_agreement}")
    return dataclasses.replace(result, passed=not failures, failures=tuple(failures))


def agreement(reference: list[Detections], candidate: list[Detections]) -> float:
    """Share of boxes matched one to one (IoU >= 0.5, same class), of the larger count per image."""
    matched = total = 0
    for ref, cand in zip(reference, candidate, strict=True):
        total += max(len(ref), len(cand))
        if not len(ref) or not len(cand):
            continue
        overlaps = iou_matrix(ref.boxes, cand.boxes)
        overlaps[ref.classes[:, None] != cand.classes[None, :]] = 0.0
        taken = np.zeros(len(cand), dtype=bool)
        for row in overlaps:  # reference boxes, best score first
            row = np.where(taken, 0.0, row)
            best = int(row.argmax())
            if row[best] >= MATCH_IOU:
                taken[best] = True
                matched += 1
    return 1.0 if total == 0 else matched / total


def coco_map(truth: DetectionSet, found: list[Detections]) -> tuple[float, float]:
    """``(mAP@0.5:0.95, mAP@0.5)`` of ``found`` against ``truth``'s boxes (pycocotools)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise CompileError("the object-detection gate needs pycocotools: pip install 'edgeds[detection]'") from exc
    assert truth.annotations is not None
    images = [{"id": i + 1, "height": int(h), "width": int(w)} for i, (h, w) in enumerate(truth.sizes)]
    annotations = [
        {
            "id": n + 1,
            "image_id": int(row[0]) + 1,
            "category_id": int(row[1]) + 1,
            "bbox": [row[2], row[3], row[4] - row[2], row[5] - row[3]],
            "area": float((row[4] - row[2]) * (row[5] - row[3])),
            "iscrowd": int(row[6]),
        }
        for n, row in enumerate(truth.annotations.tolist())
    ]
    classes = int(truth.annotations[:, 1].max()) + 1 if len(truth.annotations) else 1
    for d in found:
        classes = max(classes, int(d.classes.max()) + 1 if len(d) else 0)
    results = [
        {
            "image_id": i + 1,
            "category_id": int(c) + 1,
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": float(s),
        }
        for i, d in enumerate(found)
        for b, s, c in zip(d.boxes.tolist(), d.scores, d.classes, strict=True)
    ]
    if not results or not annotations:
        return 0.0, 0.0
    quiet = io.StringIO()  # pycocotools prints its progress and summary
    with contextlib.redirect_stdout(quiet):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)],
        }
        gt.createIndex()
        dt = gt.loadRes(results)
        run = COCOeval(gt, dt, "bbox")
        run.params.maxDets = [1, 10, max(100, max(len(d) for d in found))]
        run.evaluate()
        run.accumulate()
        run.summarize()
    return max(0.0, float(run.stats[0])), max(0.0, float(run.stats[1]))


def _decode(card: DetectionCard, head: np.ndarray, truth: DetectionSet, score: float) -> list[Detections]:
    fits = truth.geometries(card.input.height, card.input.width, card.input.resize == "letterbox")
    out = card.output
    return decode(head, fits, score, out.iou_threshold, out.max_detections)


def evaluate(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    truth: DetectionSet,
    card: DetectionCard,
    budget: AccuracyBudget,
) -> DetectionResult:
    """The candidate's figures (same samples, same order as ``truth``), judged against ``budget``."""
    name = card.output.name
    ref_head, cand_head = reference[name], candidate[name]
    served = card.output.score_threshold
    agree = agreement(_decode(card, ref_head, truth, served), _decode(card, cand_head, truth, served))
    labelled = truth.annotations is not None and len(truth.annotations) > 0
    ref_map = cand_map = drop = ref_50 = cand_50 = None
    if labelled:
        ref_map, ref_50 = coco_map(truth, _decode(card, ref_head, truth, MAP_SCORE_THRESHOLD))
        cand_map, cand_50 = coco_map(truth, _decode(card, cand_head, truth, MAP_SCORE_THRESHOLD))
        drop = round((ref_map - cand_map) * 100.0, 4)
    cosine: dict[str, float] = {}
    max_abs = 0.0
    for key, ref in reference.items():
        cand = candidate[key].astype(np.float64)
        cosine[key] = float(cosine_rows(ref, cand).mean())
        max_abs = max(max_abs, float(np.abs(ref.astype(np.float64) - cand).max(initial=0.0)))
    result = DetectionResult(labelled, ref_map, cand_map, drop, ref_50, cand_50, agree, cosine, max_abs)
    return judge(result, budget)


class DetectionGate:
    """The ``object-detection`` gate for the registry (:func:`evaluate` / :func:`judge`)."""

    task = "object-detection"

    def budget(self, profile: Profile) -> AccuracyBudget:
        return profile.accuracy

    def judge(self, figures: Mapping[str, Any], budget: AccuracyBudget) -> tuple[str, ...]:
        return judge(DetectionResult.from_dict(figures), budget).failures

    def cells(self, figures: Mapping[str, Any]) -> dict[str, str]:
        def pct(key: str) -> str:
            value = figures.get(key)
            return f"{value * 100:.2f}%" if isinstance(value, (int, float)) else ""

        drop = figures.get("map_drop")
        agree = figures.get("box_agreement")
        return {
            "mAP": pct("map"),
            "mAP50": pct("map50"),
            "drop pts": f"{drop:+.2f}" if isinstance(drop, (int, float)) else "",
            "agreement": f"{agree:.4f}" if isinstance(agree, (int, float)) else "",
        }

    def evaluate(
        self, reference: Outputs, candidate: Outputs, validation: ImageSet, card: ModelCard, profile: Profile
    ) -> DetectionResult:
        from ...modelcard import DetectionCard

        if validation.truth is None or not isinstance(card, DetectionCard):
            raise CompileError("the object-detection gate needs a detection card and its validation boxes")
        return evaluate(reference, candidate, validation.truth, card, profile.accuracy)

    def restore(self, figures: Mapping[str, Any], profile: Profile) -> DetectionResult:
        return judge(DetectionResult.from_dict(figures), profile.accuracy)
