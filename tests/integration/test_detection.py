"""A detector with an Ultralytics YOLO export's output layout compiles at INT8 behind the detection
gate and serves boxes.

The fixture (``_detection_models``: ``[N, 4 + 3, 144]``, fixed weights that find the squares of
the synthetic set) compiles on ONNX Runtime for an x86-cpu profile: on a labelled set the gate
judges the mAP drop (INT8 passes a loose budget, falls back to FP32 under a strict one); on a set
of images without boxes it judges the agreement with the FP32 model's boxes. The bundle is served
over loopback and ``tritonclient`` gets the raw head, which decodes to the true boxes; ``edgeds
run`` prints the boxes in the original image's pixels (a letterboxed 192x128 image).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds.boxes import decode, geometry, iou_matrix
from edgeds.bundle import load_bundle
from edgeds.compile import compile_model
from edgeds.datasets.coco import write_coco
from edgeds.datasets.squares import squares
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.detect import detect_file
from edgeds.runtime.engine import thread_options

from ._detection_models import SIZE, squares_detector
from ._loose_profile import private_cache  # noqa: F401 (the cache_env fixture)

pytest.importorskip("pycocotools")
ort = pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")

VALIDATION = 40
CALIBRATION = 16
PROFILE = """schema: 1
name: {name}
description: detection test profile
extends: x86-cpu
backends:
  - name: onnxruntime
    options: {{intra_op_num_threads: 1}}
batching: {{max_batch_size: 8, preferred_batch_sizes: [4, 8], max_queue_delay_us: 2000, max_queue_size: 64}}
accuracy: {{max_map_drop: {drop}, min_box_agreement: 0.9}}
"""


def profile(directory: Path, name: str, drop: float) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(PROFILE.format(name=name, drop=drop))
    return path


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Path:
    return squares_detector(tmp_path_factory.mktemp("detector"), VALIDATION, CALIBRATION)


def truth_of(rows: np.ndarray, image: int) -> tuple[np.ndarray, np.ndarray]:
    mine = rows[rows[:, 0] == image]
    return mine[:, 2:6], mine[:, 1].astype(np.int64)


def assert_found(boxes: np.ndarray, classes: np.ndarray, want_boxes: np.ndarray, want_classes: np.ndarray) -> int:
    """Every true box is found with its class at IoU >= 0.8; returns how many boxes are extra."""
    overlaps = iou_matrix(want_boxes, boxes)
    overlaps[want_classes[:, None] != classes[None, :]] = 0.0
    assert (overlaps.max(axis=1, initial=0.0) >= 0.8).all(), (boxes, want_boxes)
    return len(boxes) - len(want_boxes)


def test_int8_passes_the_map_gate_and_serves_boxes(detector: Path, tmp_path: Path) -> None:
    result = compile_model(detector, profile(tmp_path, "det-loose", 8.0), out=tmp_path / "bundle")
    report = result.report
    assert (result.backend, result.precision) == ("onnxruntime", "int8")
    assert report.task == "object-detection"
    first = report.attempts[0]
    assert (first.variant, first.outcome) == ("int8", "passed"), report.as_dict()
    figures = first.accuracy
    assert figures is not None and figures["labelled"] is True
    assert figures["reference_map"] > 0.99 and figures["reference_map50"] > 0.99
    assert 0.9 < figures["map"] <= figures["reference_map"] and figures["map50"] > 0.97
    assert 0 <= figures["map_drop"] <= 8.0
    assert any("decode in float" in note for note in report.notes)
    assert report.columns()[3:7] == ["mAP %", "mAP50 %", "drop pts", "agreement"]
    assert report.rows()[0][3] == f"{figures['map'] * 100:.2f}"

    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["task"] == "object-detection" and manifest["labels"] == ["red", "green", "blue"]
    assert manifest["artifacts"][0]["gated"]["figures"]["map"] == figures["map"]
    assert manifest["accuracy"]["agreement"] == figures["box_agreement"]

    with load_bundle(result.bundle, verify=False) as bundle:
        engine = Engine.from_bundle(bundle, options=thread_options("onnxruntime", 1))
        engine.start()
    server = InferenceServer(engine, port=0).start()
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        images, rows = squares(7, 6, SIZE)
        x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        tensor = httpclient.InferInput("images", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        wanted = [httpclient.InferRequestedOutput("output0", binary_data=True)]
        head = client.infer("squares-detector", [tensor], outputs=wanted).as_numpy("output0")
        assert head.shape == (6, 7, 144)  # the raw YOLO head, as the model outputs it
        fits = [geometry(SIZE, SIZE, SIZE, SIZE, letterbox=True)] * len(x)
        found = decode(head, fits, score_threshold=0.25, iou_threshold=0.5, max_detections=50)
        extra = sum(assert_found(d.boxes, d.classes, *truth_of(rows, i)) for i, d in enumerate(found))
        assert 0 <= extra <= len(rows) // 4  # INT8 may add a stray box now and then, not many
    finally:
        client.close()
        server.stop(close_engines=True)


def test_a_strict_map_budget_falls_back_to_fp32(detector: Path, tmp_path: Path) -> None:
    result = compile_model(detector, profile(tmp_path, "det-strict", 0.5), out=tmp_path / "bundle")
    outcomes = [(a.variant, a.outcome) for a in result.report.attempts]
    assert outcomes[0] == ("int8", "failed") and outcomes[-1] == ("fp32", "passed"), outcomes
    assert result.report.attempts[0].reason is not None
    assert result.report.attempts[0].reason.startswith("mAP drop ")
    assert result.precision == "fp32"


def letterboxed_set(directory: Path, count: int, seed: int, labelled: bool) -> dict[str, Any]:
    """Squares images at 192x128 (2x, cropped to rows 32..160 of the 2x image: the model sees them
    letterboxed back to 96x96), written as a COCO folder; returns the images and boxes."""
    images, rows = squares(seed, count * 8, SIZE)
    keep = [i for i in range(len(images)) if all(r[3] >= 16 and r[5] <= 80 for r in rows[rows[:, 0] == i])][:count]
    big = images[keep].repeat(2, axis=1).repeat(2, axis=2)[:, 32:160]
    boxes = []
    for new, old in enumerate(keep):
        for r in rows[rows[:, 0] == old]:
            boxes.append((new, r[1], 2 * r[2], 2 * r[3] - 32, 2 * r[4], 2 * r[5] - 32))
    table = np.asarray(boxes, dtype=np.float64)
    json_path = write_coco(directory, big, table, ("red", "green", "blue"))
    if not labelled:
        json_path.unlink()
    return {"images": big, "boxes": table, "dir": directory}


def test_coco_folders_letterboxed_agreement_gate_and_run(detector: Path, tmp_path: Path) -> None:
    """Images with COCO JSON (labelled) then without (unlabelled): the gate's mAP is measured in the
    original images' pixels, the unlabelled set is gated on box agreement; ``edgeds run`` prints boxes."""
    work = detector.parent
    val = letterboxed_set(tmp_path / "val", 16, 11, labelled=True)
    letterboxed_set(tmp_path / "cal", 8, 12, labelled=False)
    card = (work / "detector.yaml").read_text().split("data:")[0]
    labelled = card + (
        f"data_files:\n  validation: {{images: {tmp_path}/val/images, annotations: {tmp_path}/val/instances.json}}\n"
        f"  calibration: {{images: {tmp_path}/cal/images}}\n"
    )
    (work / "files.yaml").write_text(labelled)
    result = compile_model(detector, profile(tmp_path, "det-files", 8.0), out=tmp_path / "b1", card=work / "files.yaml")
    figures = result.report.attempts[0].accuracy
    assert figures is not None and figures["labelled"] is True and figures["reference_map"] > 0.9, figures
    assert result.precision == "int8"

    (tmp_path / "val" / "instances.json").unlink()
    unlabelled = labelled.replace(f", annotations: {tmp_path}/val/instances.json", "")
    (work / "bare.yaml").write_text(unlabelled)
    result = compile_model(detector, profile(tmp_path, "det-bare", 8.0), out=tmp_path / "b2", card=work / "bare.yaml")
    first = result.report.attempts[0]
    assert first.accuracy is not None and first.accuracy["labelled"] is False and first.accuracy["map"] is None
    assert first.outcome == "passed" and first.accuracy["box_agreement"] >= 0.9
    assert result.report.rows()[0][3:7] == ["", "", "", f"{first.accuracy['box_agreement']:.4f}"]

    image = val["dir"] / "images" / "00000.png"
    run = detect_file(result.bundle, image, threads=1)
    want = val["boxes"][val["boxes"][:, 0] == 0]
    got = run.detections[0]
    assert_found(
        np.array([d.box for d in got]).reshape(-1, 4), np.array([d.index for d in got]), want[:, 2:6], want[:, 1]
    )
    cli = subprocess.run(
        [sys.executable, "-m", "edgeds", "run", str(result.bundle), "--input", str(image), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)["detections"][0]
    assert [d["label"] for d in printed] == [d.label for d in got]
    np.testing.assert_allclose([d["box"] for d in printed], [d.box for d in got], atol=1e-6)
