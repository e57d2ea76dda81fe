"""The shipped model: card validates, data is reproducible, accuracy holds through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeds import backends, config, modelcard
from edgeds.datasets import fingerprint, load_split
from edgeds.datasets.surface import LABELS, generate
from edgeds.errors import DatasetError
from edgeds.evaluate import load_samples, predict, top1_accuracy

MODEL = config.REPO_ROOT / "models" / "surface-defect" / "model.onnx"


@pytest.fixture(scope="module")
def card() -> modelcard.ModelCard:
    return modelcard.load_model_card(MODEL)


def test_card_matches_the_model(card: modelcard.ModelCard) -> None:
    assert card.labels == LABELS
    assert MODEL.stat().st_size <= 10 * 1024 * 1024
    model = onnx.load(str(MODEL))
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    assert inp.name == card.input.name
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param, "batch dimension must be dynamic"
    assert [d.dim_value for d in dims[1:]] == [3, card.input.height, card.input.width]
    assert min(card.input.height, card.input.width) >= 160
    assert [o.name for o in model.graph.output] == [card.output.name]


def test_generator_is_deterministic_and_prefix_stable() -> None:
    a_images, a_labels = generate(123, 10, 160)
    b_images, b_labels = generate(123, 5, 160)
    assert a_images.dtype == np.uint8 and a_images.shape == (10, 160, 160, 3)
    np.testing.assert_array_equal(a_images[:5], b_images)
    np.testing.assert_array_equal(a_labels[:5], b_labels)
    assert fingerprint(a_images, a_labels) == fingerprint(*generate(123, 10, 160))
    assert fingerprint(a_images, a_labels) != fingerprint(*generate(124, 10, 160))


def test_splits_are_disjoint_and_fingerprinted(card: modelcard.ModelCard) -> None:
    assert card.data is not None
    assert card.data.validation.count >= 1000
    assert card.data.calibration.count >= 200
    assert card.data.validation.seed != card.data.calibration.seed
    images, labels = load_split(card, "calibration")
    assert len(images) == card.data.calibration.count
    assert set(np.unique(labels)) == set(range(len(card.labels)))


def test_drifted_generator_is_detected(
    card: modelcard.ModelCard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEDS_CACHE_DIR", str(tmp_path))
    assert card.data is not None
    drifted = card.model_copy(
        update={
            "data": card.data.model_copy(update={"calibration": card.data.calibration.model_copy(update={"count": 7})})
        }
    )
    with pytest.raises(DatasetError, match="drifted"):
        load_split(drifted, "calibration")


def test_validation_accuracy_through_onnxruntime(card: modelcard.ModelCard) -> None:
    images, labels = load_split(card, "validation")
    with backends.create("onnxruntime", {"intra_op_num_threads": 2}) as runtime:
        runtime.open(card.model_path, buckets=(16,))
        logits = predict(runtime, card, images, batch_size=16)
    accuracy = top1_accuracy(logits, labels)
    assert accuracy >= 0.97, f"FP32 top-1 {accuracy:.4f} < 0.97"
    assert card.reference is not None
    assert abs(accuracy - card.reference.fp32_top1) <= 0.002, "card's reference figure is stale"


def test_sample_images_are_labelled_and_mostly_right(card: modelcard.ModelCard) -> None:
    samples = load_samples(card)
    assert len(samples) >= 24
    assert {label for _, label, _ in samples} == set(card.labels)
    with backends.create("onnxruntime", {"intra_op_num_threads": 2}) as runtime:
        runtime.open(card.model_path, buckets=(8,))
        logits = predict(runtime, card, np.stack([image for _, _, image in samples]), batch_size=8)
    truth = np.array([card.labels.index(label) for _, label, _ in samples])
    assert top1_accuracy(logits, truth) >= 0.9
