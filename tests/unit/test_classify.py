"""One-off classification of a file: inputs from images and .npy, probabilities, ranked labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.errors import RequestError
from edgeds.evaluate import softmax
from edgeds.modelcard import ModelCard, load_model_card
from edgeds.preprocess import Preprocessor
from edgeds.runtime.classify import LabelScore, classify_file, load_inputs, probabilities, top_k
from edgeds.runtime.testing import write_tiny_card
from edgeds.sim.bundles import LABELS, make_bundle

SAMPLE = (3, 160, 160)


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    return load_model_card(write_tiny_card(tmp_path_factory.mktemp("card")))


def _images(n: int, size: int = 96) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_an_image_file_is_preprocessed_as_the_card_says(card: ModelCard, tmp_path: Path) -> None:
    from PIL import Image

    image = _images(1)[0]
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    batch = load_inputs(path, card, "NCHW", SAMPLE, "float32")
    assert batch.shape == (1, *SAMPLE) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, Preprocessor(card.input, "NCHW").batch([image]))


def test_uint8_npy_image_and_batch(card: ModelCard, tmp_path: Path) -> None:
    one, many = tmp_path / "one.npy", tmp_path / "many.npy"
    np.save(one, _images(1)[0])
    np.save(many, _images(3))
    assert load_inputs(one, card, "NCHW", SAMPLE, "float32").shape == (1, *SAMPLE)
    nhwc = load_inputs(many, card, "NHWC", (160, 160, 3), "float32")
    assert nhwc.shape == (3, 160, 160, 3)


def test_a_preprocessed_tensor_is_only_reshaped_and_cast(card: ModelCard, tmp_path: Path) -> None:
    tensor = np.random.default_rng(0).random((2, *SAMPLE))  # float64
    path = tmp_path / "t.npy"
    np.save(path, tensor)
    batch = load_inputs(path, card, "NCHW", SAMPLE, "float32")
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, tensor.astype(np.float32))


def test_unusable_inputs_are_request_errors(card: ModelCard, tmp_path: Path) -> None:
    gray = tmp_path / "gray.npy"
    np.save(gray, np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(RequestError, match="expected a uint8 RGB image"):
        load_inputs(gray, card, "NCHW", SAMPLE, "float32")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(RequestError, match=r"not an image or \.npy"):
        load_inputs(text, card, "NCHW", SAMPLE, "float32")


def test_probabilities_of_logits_and_of_probabilities() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    probs = probabilities(logits, "logits")
    assert probs.dtype == np.float64
    np.testing.assert_allclose(probs, softmax(logits.astype(np.float64)))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    given = np.array([[0.2, 0.8]])
    np.testing.assert_array_equal(probabilities(given, "probabilities"), given)


def test_top_k_ranks_and_names_unlabeled_classes() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    ranked = top_k(probs, ["a", "b"], 2)
    assert ranked[0] == [LabelScore("b", 1, 0.6), LabelScore("2", 2, 0.3)]
    assert [p.label for p in ranked[1]] == ["a", "2"]
    assert len(top_k(probs, ["a", "b", "c"], 0)[0]) == 1  # at least one


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    return make_bundle(tmp_path_factory.mktemp("classify") / "bundle", 1, None, max_batch_size=2)


def test_classify_file_runs_the_bundle_once(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "two.npy"
    np.save(path, _images(2))
    result = classify_file(bundle, path, top=5, threads=1)
    assert (result.model, result.backend, result.precision) == ("tiny", "onnxruntime", "fp32")
    assert result.seconds > 0 and len(result.predictions) == 2
    for ranked in result.predictions:
        assert {p.label for p in ranked} == set(LABELS)
        assert abs(sum(p.score for p in ranked) - 1.0) < 1e-6
        assert [p.score for p in ranked] == sorted((p.score for p in ranked), reverse=True)


def test_classify_file_refuses_more_samples_than_the_bundle_batches(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "three.npy"
    np.save(path, _images(3))
    with pytest.raises(RequestError, match="holds 3 samples; the bundle batches at most 2"):
        classify_file(bundle, path)
