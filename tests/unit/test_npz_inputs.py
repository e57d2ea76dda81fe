"""A multi-input model's inputs from one .npz: every input by name, one line for what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.backends.base import TensorSpec
from edgeds.errors import RequestError
from edgeds.modelcard import ModelCard, load_model_card
from edgeds.runtime.npz_inputs import load_npz_inputs

SPECS = (TensorSpec("input", "float32", (-1, 3, 8, 8)), TensorSpec("ids", "int64", (-1, 6)))


@pytest.fixture
def card(tmp_path: Path) -> ModelCard:
    path = tmp_path / "model.yaml"
    path.write_text(
        "schema: 1\nname: multi\nversion: 0.1.0\ntask: image-classification\nmodel: model.onnx\n"
        "input: {name: input, height: 8, width: 8}\noutput: {name: logits}\nlabels: [a, b]\n"
        "extra_inputs:\n  - {name: ids, dtype: int64, shape: [6], values: {low: 0, high: 20}}\n"
    )
    return load_model_card(path)


def test_images_are_preprocessed_and_tensors_cast(card: ModelCard, tmp_path: Path) -> None:
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", input=images, ids=np.arange(12, dtype=np.int32).reshape(2, 6))
    feeds = load_npz_inputs(tmp_path / "in.npz", card, "NCHW", SPECS)
    assert feeds["input"].shape == (2, 3, 8, 8) and feeds["input"].dtype == np.float32
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].tolist()[1] == [6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"input": np.zeros((1, 8, 8, 3), np.uint8)}, r"no array for input\(s\) \['ids'\]"),
        (
            {"input": np.zeros((1, 8, 8, 3), np.uint8), "ids": np.zeros((1, 6), np.int64), "x": np.zeros(1)},
            r"array\(s\) \['x'\] name no model input",
        ),
        ({"input": np.zeros((1, 8, 8, 3), np.uint8), "ids": np.zeros((1, 6), np.float32)}, "the model takes int64"),
        ({"input": np.zeros((1, 8, 8, 3), np.uint8), "ids": np.zeros((1, 5), np.int64)}, r"expected \[N, 6\]"),
        ({"input": np.zeros((2, 8, 8, 3), np.uint8), "ids": np.zeros((1, 6), np.int64)}, "different numbers"),
    ],
)
def test_one_line_per_mistake(card: ModelCard, tmp_path: Path, arrays: dict[str, np.ndarray], expected: str) -> None:
    np.savez(tmp_path / "in.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(RequestError, match=expected) as exc:
        load_npz_inputs(tmp_path / "in.npz", card, "NCHW", SPECS)
    assert "\n" not in str(exc.value)


def test_not_an_npz(card: ModelCard, tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(RequestError, match=r"not a numpy \.npz archive"):
        load_npz_inputs(tmp_path / "text.npz", card, "NCHW", SPECS)
    with pytest.raises(RequestError, match="no such file"):
        load_npz_inputs(tmp_path / "missing.npz", card, "NCHW", SPECS)
