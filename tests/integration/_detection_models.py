"""A detection model with an Ultralytics YOLO export's layout, built with ``onnx.helper``.

``squares_detector`` finds the squares of :func:`edgeds.datasets.squares.squares` (96x96
images) with fixed weights: input ``images`` ``[batch, 3, 96, 96]`` (RGB scaled to 0..1), output
``output0`` ``[batch, 4 + 3, 144]`` (centre x, centre y, width, height in input pixels, then the
red, green and blue scores, one column per cell of a stride-8 12x12 grid), as a YOLOv8 export is.

How: a 1x1 convolution gives per-pixel colour differences, their minimum per colour clipped to
0..1 is a mask per class (the grey noise has none). A 32x32 window per cell (stride 8) sums the
mask, the mask times x and times y (three convolutions: each sum is quantized with its own
scale): the mask's area and centroid, so a cell whose window holds a
whole square regresses its exact box (centre = centroid, side = sqrt(area)). A class's score is
its mask at the cell's centre times ``exp(-d^2 / 36)`` for the distance ``d`` from the cell's
centre to the box centre, so the cell nearest the square scores best and NMS removes the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeds.datasets.detection import boxes_fingerprint
from edgeds.datasets.squares import LABELS, squares

SIZE = 96
STRIDE = 8
GRID = SIZE // STRIDE
WINDOW = 32
CLASSES = len(LABELS)


def build(path: Path, batch: int | str = "batch") -> Path:
    """Write the detector to ``path`` (batch dimension ``batch``: a name for dynamic, or an int)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    diff = np.zeros((6, 3, 1, 1), dtype=np.float32)
    for row, (a, b) in enumerate([(0, 1), (1, 2), (2, 0), (0, 2), (1, 0), (2, 1)]):
        diff[row, a], diff[row, b] = 1.0, -1.0
    centres = np.arange(SIZE, dtype=np.float32) + 0.5
    xs = np.broadcast_to(centres[None, :], (SIZE, SIZE))[None, None].astype(np.float32)
    ys = np.broadcast_to(centres[:, None], (SIZE, SIZE))[None, None].astype(np.float32)
    anchors = np.arange(GRID, dtype=np.float32) * STRIDE + STRIDE / 2
    ax = np.broadcast_to(anchors[None, :], (GRID, GRID))[None, None].astype(np.float32)
    ay = np.broadcast_to(anchors[:, None], (GRID, GRID))[None, None].astype(np.float32)
    centre = np.zeros((CLASSES, 1, STRIDE, STRIDE), dtype=np.float32)
    centre[:, :, 3:5, 3:5] = 0.25
    inits: dict[str, np.ndarray] = {
        "diff.weight": diff,
        "split": np.array([3, 3], dtype=np.int64),
        "three": np.array(3.0, dtype=np.float32),
        "minus_half": np.array(-0.5, dtype=np.float32),
        "zero": np.array(0.0, dtype=np.float32),
        "one": np.array(1.0, dtype=np.float32),
        "any.weight": np.ones((1, CLASSES, 1, 1), dtype=np.float32),
        "xs": xs,
        "ys": ys,
        "window.weight": np.ones((1, 1, WINDOW, WINDOW), dtype=np.float32),
        "centre.weight": centre,
        "ax": ax,
        "ay": ay,
        "falloff": np.array(-1.0 / 36.0, dtype=np.float32),
        "shape": np.array([0, 4 + CLASSES, -1], dtype=np.int64),
    }
    pad = (WINDOW - STRIDE) // 2
    n = helper.make_node
    nodes = [
        n("Conv", ["images", "diff.weight"], ["diffs"], name="diff"),
        n("Split", ["diffs", "split"], ["d1", "d2"], name="pair", axis=1),
        n("Min", ["d1", "d2"], ["lead"], name="lead"),
        n("Mul", ["lead", "three"], ["lead3"], name="gain"),
        n("Add", ["lead3", "minus_half"], ["lead_off"], name="offset"),
        n("Clip", ["lead_off", "zero", "one"], ["masks"], name="masks"),
        n("Conv", ["masks", "any.weight"], ["mask"], name="any"),
        n("Mul", ["mask", "xs"], ["mask_x"], name="moment_x"),
        n("Mul", ["mask", "ys"], ["mask_y"], name="moment_y"),
        *(
            n("Conv", [x, "window.weight"], [y], name=f"window_{y}", strides=[STRIDE, STRIDE], pads=[pad] * 4)
            for x, y in (("mask", "area"), ("mask_x", "sum_x"), ("mask_y", "sum_y"))
        ),
        n("Max", ["area", "one"], ["area1"], name="area_floor"),
        n("Div", ["sum_x", "area1"], ["cx"], name="cx"),
        n("Div", ["sum_y", "area1"], ["cy"], name="cy"),
        n("Sqrt", ["area"], ["side"], name="side"),
        n("Conv", ["masks", "centre.weight"], ["centred"], name="centre", group=CLASSES, strides=[STRIDE, STRIDE]),
        n("Sub", ["cx", "ax"], ["dx"], name="dx"),
        n("Sub", ["cy", "ay"], ["dy"], name="dy"),
        n("Mul", ["dx", "dx"], ["dx2"], name="dx2"),
        n("Mul", ["dy", "dy"], ["dy2"], name="dy2"),
        n("Add", ["dx2", "dy2"], ["dist2"], name="dist2"),
        n("Mul", ["dist2", "falloff"], ["logfall"], name="logfall"),
        n("Exp", ["logfall"], ["fall"], name="fall"),
        n("Mul", ["centred", "fall"], ["scores"], name="scores"),
        n("Concat", ["cx", "cy", "side", "side", "scores"], ["head"], name="head", axis=1),
        n("Reshape", ["head", "shape"], ["output0"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "squares_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 4 + CLASSES, GRID * GRID])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeds-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


CARD = """schema: 1
name: squares-detector
version: 1.0.0
task: object-detection
model: detector.onnx
input: {{name: images, layout: NCHW, height: {size}, width: {size}, scale: 0.00392156862745098, resize: letterbox}}
output: {{name: output0, format: yolo, score_threshold: 0.25, iou_threshold: 0.5, max_detections: 50}}
labels: [red, green, blue]
"""


def generated_data(validation: int, calibration: int) -> str:
    """The card's ``data:`` block for the squares generator with these split sizes."""
    lines = ["data:", "  generator: edgeds.datasets.squares:squares"]
    for split, seed, count in (("validation", 1, validation), ("calibration", 2, calibration)):
        images, rows = squares(seed, count, SIZE)
        lines.append(f"  {split}: {{seed: {seed}, count: {count}, fingerprint: '{boxes_fingerprint(images, rows)}'}}")
    return "\n".join(lines) + "\n"


def squares_detector(directory: Path, validation: int, calibration: int, *, data: str | None = None) -> Path:
    """The detector and its card in ``directory`` (data: the generator, or the ``data`` block given)."""
    model = build(directory / "detector.onnx")
    card = CARD.format(size=SIZE) + (data if data is not None else generated_data(validation, calibration))
    (directory / "detector.yaml").write_text(card)
    return model
