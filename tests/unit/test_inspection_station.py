"""The station settings and ground truth of an ``edgeds inspect`` run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.config import LOCAL_TARGET, Target
from edgeds.errors import ConfigError
from edgeds.inspection.station import DEFAULT_STATION, load_truth, station_for_run

TARGET = Target.model_validate(
    {
        "name": "line",
        "profile": "x86-cpu",
        "local": True,
        "inspection": [
            {"name": "cam-a", "source": "rtsp://camera/a", "thresholds": {"crack": 0.3}, "uncertain_below": 0.6},
            {"name": "cam-b", "source": "0"},
        ],
    }
)


def test_default_station_reads_the_source() -> None:
    station = station_for_run(LOCAL_TARGET, "frames/")
    assert station.name == DEFAULT_STATION and station.source == "frames/"
    assert station.thresholds == {} and station.uncertain_below == 0.5


def test_a_target_station_with_overrides() -> None:
    station = station_for_run(TARGET, "clip.mp4", station="cam-a", thresholds={"pit": 0.4}, alarm=3)
    assert station.name == "cam-a" and station.source == "clip.mp4"
    assert station.thresholds == {"crack": 0.3, "pit": 0.4}
    assert station.uncertain_below == 0.6 and station.alarm_consecutive_rejects == 3
    assert station_for_run(TARGET, "x", station="cam-a", uncertain_below=0.2).uncertain_below == 0.2


def test_unknown_station_and_bad_override_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"target 'line' has no station 'cam-z' \['cam-a', 'cam-b'\]"):
        station_for_run(TARGET, "x", station="cam-z")
    with pytest.raises(ConfigError, match=r"^station\.uncertain_below: must be <= 1\.0, got 1\.5$"):
        station_for_run(TARGET, "x", uncertain_below=1.5)


def test_truth_from_a_labels_file(tmp_path: Path) -> None:
    from edgeds.modelcard import load_model_card
    from edgeds.runtime.testing import write_tiny_card

    card = load_model_card(write_tiny_card(tmp_path))
    assert load_truth(None, card) is None
    path = tmp_path / "labels.npy"
    np.save(path, np.array([[0, 1], [2, 3]], dtype=np.int32))
    labels = load_truth(str(path), card)
    assert labels is not None and labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2, 3]
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(ConfigError, match="--truth: cannot read labels from"):
        load_truth(str(tmp_path / "bad.npy"), card)
    with pytest.raises(ConfigError, match="cannot read labels"):
        load_truth(str(tmp_path / "missing.npy"), card)


def test_truth_from_the_validation_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeds.compile.tiny import write_tiny_model
    from edgeds.datasets import load_split
    from edgeds.modelcard import load_model_card

    monkeypatch.setenv("EDGEDS_CACHE_DIR", str(tmp_path / "cache"))
    model = write_tiny_model(tmp_path / "tiny", validation_count=6, calibration_count=2)
    card = load_model_card(model.parent / "tiny.yaml")
    labels = load_truth("validation", card)
    assert labels is not None
    np.testing.assert_array_equal(labels, load_split(card, "validation")[1])
