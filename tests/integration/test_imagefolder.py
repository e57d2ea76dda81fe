"""A classifier's calibration and validation data from the user's own ImageFolder directories.

PNGs written by the test (``<root>/<label>/<file>.png``, the tiny model's labels) compile at INT8
on ONNX Runtime; a second compile with unchanged folders reuses the compile cache; changing
one file changes the split's fingerprint. Each mistake (missing folder, a class folder that is
not a label, an empty class, an unreadable image) is one line naming the folder or file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.compile import compile_model
from edgeds.compile.data import load_images
from edgeds.compile.tiny import write_tiny_model
from edgeds.datasets.surface import LABELS
from edgeds.errors import DatasetError
from edgeds.modelcard import load_model_card

from ._loose_profile import private_cache, write_profile  # noqa: F401 (the cache_env fixture)

pytest.importorskip("onnxruntime")


def write_folder(root: Path, per_class: int, seed: int) -> Path:
    """``per_class`` random 24x32 PNGs under ``root/<label>/`` for the first three labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in LABELS[:3]:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i:03d}.png")
    return root


def folder_card(directory: Path) -> Path:
    """The tiny model with ``data_files:`` naming ``val/`` and ``calib/`` beside it."""
    model = write_tiny_model(directory, with_data=False)
    write_folder(directory / "val", 4, 1)
    write_folder(directory / "calib", 3, 2)
    card = directory / "tiny.yaml"
    card.write_text(card.read_text() + "data_files:\n  validation: {images: val}\n  calibration: {images: calib}\n")
    return model


def test_folder_compiles_and_a_changed_file_changes_the_fingerprint(tmp_path: Path, cache_env: Path) -> None:
    model = folder_card(tmp_path / "m")
    profile = write_profile(tmp_path / "loose.yaml", "loose", "ImageFolder test", "onnxruntime")
    card = load_model_card(model)
    validation = load_images(card, "validation")
    assert validation.images.shape == (12, 160, 160, 3)
    assert sorted(set(validation.labels.tolist())) == [0, 1, 2]
    first = compile_model(model, profile, precision="int8", out=tmp_path / "b1")
    assert first.report.validation_samples == 12 and first.report.calibration_samples == 9
    again = compile_model(model, profile, precision="int8", out=tmp_path / "b2")
    assert all(a.cached for a in again.report.attempts if a.outcome == "passed")

    from PIL import Image

    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(tmp_path / "m" / "val" / LABELS[0] / "000.png")
    assert load_images(card, "validation").fingerprint != validation.fingerprint


def _error(tmp_path: Path, change: str) -> str:
    model = folder_card(tmp_path / change)
    root = tmp_path / change / "val"
    if change == "missing":
        card = tmp_path / change / "tiny.yaml"
        card.write_text(card.read_text().replace("{images: val}", "{images: nowhere}"))
    elif change == "unknown":
        (root / "wrinkle").mkdir()
        (root / "wrinkle" / "a.png").write_bytes((root / LABELS[0] / "000.png").read_bytes())
    elif change == "empty":
        (root / LABELS[4]).mkdir()
    else:
        (root / LABELS[1] / "001.png").write_text("not an image\n")
    with pytest.raises(DatasetError) as caught:
        load_images(load_model_card(model), "validation")
    return str(caught.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("missing", "nowhere: no such ImageFolder directory"),
        ("unknown", "class folder 'wrinkle' is not among the card's labels"),
        ("empty", f"class {LABELS[4]!r} holds no image files"),
        ("unreadable", "001.png: cannot read the image"),
    ],
)
def test_folder_mistakes_are_one_line(tmp_path: Path, change: str, expected: str) -> None:
    message = _error(tmp_path, change)
    assert expected in message and "\n" not in message


def test_annotations_are_refused_for_a_classifier(tmp_path: Path) -> None:
    from edgeds.errors import ConfigError

    model = folder_card(tmp_path / "m")
    card = tmp_path / "m" / "tiny.yaml"
    card.write_text(card.read_text().replace("{images: val}", "{images: val, annotations: a.json}"))
    with pytest.raises(ConfigError, match="ImageFolder directory"):
        load_model_card(model)


def test_the_cli_says_an_unknown_class_folder_in_one_line(tmp_path: Path, cache_env: Path) -> None:
    import os
    import subprocess
    import sys

    model = folder_card(tmp_path / "m")
    (tmp_path / "m" / "val" / "wrinkle").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "edgeds", "compile", str(model), "-p", "x86-cpu", "-o", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "class folder 'wrinkle' is not among the card's labels" in lines[0], proc.stderr
