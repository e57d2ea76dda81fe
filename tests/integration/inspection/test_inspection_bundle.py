"""Inspection through a compiled, signed bundle: decisions on a video of the validation images
equal the bundle's own offline accuracy (manifest ``accuracy.top1``) within 0.1 points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeds.bundle import generate_keypair, load_bundle
from edgeds.cli import app
from edgeds.compile.pipeline import compile_model
from edgeds.compile.tiny import write_tiny_model
from edgeds.datasets import load_split
from edgeds.inspection import write_video
from edgeds.modelcard import load_model_card
from tests.unit.test_inspection_pipeline import shipped_card

pytestmark = pytest.mark.integration
pytest.importorskip("cv2")


@pytest.mark.slow
def test_bundle_decisions_match_the_bundles_offline_accuracy(tmp_path: Path) -> None:
    shipped = shipped_card()
    if shipped is not None:
        model = shipped.model_path
    else:
        model = write_tiny_model(tmp_path / "tiny", validation_count=200, calibration_count=16)
    private, public = generate_keypair(tmp_path / "keys")
    compile_model(model, "x86-cpu", out=tmp_path / "bundle", use_cache=False, key=private)
    bundle = load_bundle(tmp_path / "bundle", public)
    expected = bundle.manifest.accuracy.top1
    images, _ = load_split(load_model_card(model), "validation")
    write_video(images, tmp_path / "validation.avi")
    result = CliRunner().invoke(
        app,
        [
            "inspect",
            "--source",
            str(tmp_path / "validation.avi"),
            "--bundle",
            str(tmp_path / "bundle"),
            "--public-key",
            str(public),
            "--truth",
            "validation",
            "--state-dir",
            str(tmp_path / "state"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["processed"] == len(images) and summary["dropped"] == 0
    assert abs(summary["accuracy"] - expected) * 100 <= 0.1, (summary["accuracy"], expected)
    assert np.asarray(summary["confusion"]).sum() == len(images)
