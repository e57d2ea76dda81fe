"""Object detection's parts: box geometry and decode, the card, COCO folders, the gate's figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.boxes import Detections, decode, geometry
from edgeds.compile.fit import check_fit
from edgeds.compile.gates import gate_for
from edgeds.compile.gates.detection import DetectionResult, agreement, coco_map, judge
from edgeds.compile.onnxmodel import inspect_model
from edgeds.compile.report import CompileReport
from edgeds.config import AccuracyBudget
from edgeds.datasets.coco import files_fingerprint, read_files, write_coco
from edgeds.datasets.detection import DetectionSet, load_detection_split
from edgeds.datasets.squares import squares
from edgeds.errors import ConfigError, DatasetError, InvalidModel
from edgeds.modelcard import DetectionCard, load_card
from edgeds.preprocess import resize

from ..integration._detection_models import CARD, SIZE, build

LABELS = ("red", "green", "blue")


def test_letterbox_geometry_maps_a_box_back_to_the_image() -> None:
    image = np.full((50, 100, 3), 114, dtype=np.uint8)
    image[10:30, 40:60] = (255, 0, 0)
    fitted = resize(image, 64, 64, letterbox=True)
    fit = geometry(50, 100, 64, 64, letterbox=True)
    ys, xs = np.nonzero(fitted[..., 0] > 200)
    # the red block in the fitted image, mapped back through the geometry, is where it was
    x1, x2 = (xs.min() - fit.pad_x) / fit.rx, (xs.max() + 1 - fit.pad_x) / fit.rx
    y1, y2 = (ys.min() - fit.pad_y) / fit.ry, (ys.max() + 1 - fit.pad_y) / fit.ry
    np.testing.assert_allclose([x1, y1, x2, y2], [40, 10, 60, 30], atol=2.0)
    assert geometry(64, 64, 64, 64, letterbox=True).rx == 1.0


def head(*anchors: tuple[float, float, float, float, int, float], classes: int = 3) -> np.ndarray:
    """A one-image YOLO head ``[1, 4 + classes, len(anchors)]`` from (cx, cy, w, h, class, score)."""
    out = np.zeros((1, 4 + classes, len(anchors)), dtype=np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = score
    return out


def test_decode_keeps_the_best_box_per_object_and_class() -> None:
    output = head(
        (20, 20, 10, 10, 0, 0.9),
        (21, 20, 10, 10, 0, 0.8),  # the same object, same class: suppressed
        (21, 20, 10, 10, 1, 0.7),  # another class at the same place: kept (class-aware NMS)
        (50, 50, 10, 10, 2, 0.1),  # under the score threshold
    )
    fit = geometry(128, 64, 64, 64, letterbox=False)  # stretched: x / 1, y / 0.5
    (found,) = decode(output, [fit], score_threshold=0.25, iou_threshold=0.5, max_detections=10)
    assert found.classes.tolist() == [0, 1]
    np.testing.assert_allclose(found.scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(found.boxes[0], [15, 30, 25, 50])
    (one,) = decode(output, [fit], score_threshold=0.25, iou_threshold=0.5, max_detections=1)
    assert len(one) == 1
    with pytest.raises(ValueError, match=r"\[N, 4 \+ classes, anchors\]"):
        decode(output[0], [fit], 0.25, 0.5, 10)


def test_box_agreement() -> None:
    a = Detections(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0.9, 0.8]), np.array([0, 1]))
    shifted = Detections(a.boxes + 1, a.scores, a.classes)
    other_class = Detections(a.boxes, a.scores, np.array([1, 0]))
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    assert agreement([a], [shifted]) == 1.0
    assert agreement([a], [other_class]) == 0.0
    assert agreement([a, empty], [empty, empty]) == 0.0
    assert agreement([empty], [empty]) == 1.0


def test_gate_judges_the_map_drop_when_labelled_else_the_agreement() -> None:
    budget = AccuracyBudget(max_map_drop=1.0, min_box_agreement=0.9)
    labelled = DetectionResult(True, 0.9, 0.85, 5.0, 1.0, 0.99, 0.5, {"output0": 0.99}, 3.0)
    assert judge(labelled, budget).failures == ("mAP drop 5.00 pts > 1.0 pts",)
    bare = DetectionResult(False, None, None, None, None, None, 0.8, {"output0": 0.99}, 3.0)
    assert judge(bare, budget).failures == ("box agreement 0.8000 < 0.9",)
    restored = gate_for("object-detection").judge(judge(bare, budget).as_dict(), AccuracyBudget(min_box_agreement=0.5))
    assert restored == ()
    report = CompileReport("m.onnx", "0" * 64, "p", 1, 1, task="object-detection")
    assert report.columns()[3:7] == ["mAP %", "mAP50 %", "drop pts", "agreement"]


def test_coco_map_of_the_truth_is_one() -> None:
    pytest.importorskip("pycocotools")
    images, rows = squares(3, 6, SIZE)
    full = np.concatenate([rows, np.zeros((len(rows), 1))], axis=1)
    truth = DetectionSet(images, np.full((6, 2), SIZE), full, "sha256:x")
    found = [
        Detections(full[full[:, 0] == i][:, 2:6], np.ones(int((full[:, 0] == i).sum())), full[full[:, 0] == i][:, 1])
        for i in range(6)
    ]
    assert coco_map(truth, found) == (1.0, 1.0)
    shifted = [Detections(d.boxes + 2, d.scores, d.classes) for d in found]  # IoU 0.62..0.72
    high, at_half = coco_map(truth, shifted)
    assert high < 0.5 and at_half == 1.0


def write_card(directory: Path, extra: str) -> Path:
    build(directory / "detector.onnx")
    path = directory / "detector.yaml"
    path.write_text(CARD.format(size=SIZE) + extra)
    return path


def test_detection_card_loads_and_refuses_mistakes(tmp_path: Path) -> None:
    card = load_card(write_card(tmp_path, ""))
    assert isinstance(card, DetectionCard) and card.output.format == "yolo" and card.labels == LABELS
    assert card.output.iou_threshold == 0.5 and card.input.resize == "letterbox"
    text = (tmp_path / "detector.yaml").read_text()
    (tmp_path / "detector.yaml").write_text(text.replace("format: yolo", "format: yolo, kind: logits"))
    with pytest.raises(ConfigError, match="kind is for classifier outputs"):
        load_card(tmp_path / "detector.yaml")
    both = text + (
        "data: {generator: 'edgeds.datasets.squares:squares', validation: {seed: 1, count: 2, fingerprint: "
        f"'sha256:{'0' * 64}'}}, calibration: {{seed: 2, count: 2, fingerprint: 'sha256:{'0' * 64}'}}}}\n"
        "data_files: {validation: {images: v}, calibration: {images: c}}\n"
    )
    (tmp_path / "detector.yaml").write_text(both)
    with pytest.raises(ConfigError, match="not both"):
        load_card(tmp_path / "detector.yaml")


def test_fit_checks_the_yolo_head_against_the_labels(tmp_path: Path) -> None:
    card = load_card(write_card(tmp_path, ""))
    assert isinstance(card, DetectionCard)
    info = inspect_model(tmp_path / "detector.onnx")
    assert check_fit(info, card).batch is None
    two = card.model_copy(update={"labels": ("red", "green")})
    with pytest.raises(InvalidModel, match=r"7 rows, but 4 box rows \+ 2 labels in the card make 6: fix labels"):
        check_fit(info, two)


def test_coco_folder_round_trip_fingerprint_and_errors(tmp_path: Path) -> None:
    images, rows = squares(4, 5, 32)
    json_path = write_coco(tmp_path, images, rows, LABELS)
    found = read_files(tmp_path / "images", json_path, LABELS)
    assert len(found.files) == 5 and found.annotations is not None
    np.testing.assert_allclose(found.annotations[:, :6], rows)
    bare = read_files(tmp_path / "images", None, LABELS)
    assert bare.annotations is None and len(bare.files) == 5
    before = files_fingerprint(tmp_path / "images", json_path)
    assert files_fingerprint(tmp_path / "images", json_path) == before
    json_path.write_text(json_path.read_text().replace('"name": "blue"', '"name": "yellow"'))
    assert files_fingerprint(tmp_path / "images", json_path) != before
    with pytest.raises(DatasetError, match="category 'yellow' is not among the card's labels"):
        read_files(tmp_path / "images", json_path, LABELS)
    with pytest.raises(DatasetError, match="no such images directory"):
        read_files(tmp_path / "nowhere", None, LABELS)
    # an image edited in place, same size: another fingerprint (the compile cache must miss)
    first = sorted((tmp_path / "images").iterdir())[0]
    data = bytearray(first.read_bytes())
    data[-5] ^= 0xFF
    current = files_fingerprint(tmp_path / "images", json_path)
    first.write_bytes(bytes(data))
    assert files_fingerprint(tmp_path / "images", json_path) != current
    # malformed instances files are one DatasetError line, not a traceback
    import json

    for broken, match in (
        ({"images": [], "annotations": None, "categories": None}, None),
        ({"images": [], "annotations": 3, "categories": []}, "'annotations' must be a list"),
        ({"images": [], "annotations": [], "categories": [{"id": [1], "name": "red"}]}, "has no id"),
        ({"images": [], "annotations": ["x"], "categories": []}, "annotation #1 has an unknown"),
    ):
        json_path.write_text(json.dumps(broken))
        if match is None:
            assert read_files(tmp_path / "images", json_path, LABELS).annotations is None
        else:
            with pytest.raises(DatasetError, match=match):
                read_files(tmp_path / "images", json_path, LABELS)


def test_files_split_is_fitted_and_its_fingerprint_checked(tmp_path: Path) -> None:
    images, rows = squares(5, 4, 48)
    write_coco(tmp_path / "val", images, rows, LABELS)
    data = (
        "data_files:\n  validation: {images: val/images, annotations: val/instances.json, "
        f"fingerprint: 'sha256:{'1' * 64}'}}\n  calibration: {{images: val/images}}\n"
    )
    card = load_card(write_card(tmp_path, data))
    assert isinstance(card, DetectionCard)
    calibration = load_detection_split(card, "calibration", limit=3)
    assert calibration.images.shape == (3, SIZE, SIZE, 3) and calibration.annotations is None
    assert calibration.sizes.tolist() == [[48, 48]] * 3
    with pytest.raises(DatasetError, match="validation data of 'squares-detector' changed: the files hash to sha256:"):
        load_detection_split(card, "validation")
