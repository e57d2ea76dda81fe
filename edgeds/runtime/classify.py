"""Classify one input file with a bundle: file -> model input batch -> engine -> ranked labels.

What ``edgeds run`` does, once, in-process: :func:`load_inputs` reads an image or a ``.npy`` and
preprocesses it as the model card says, the engine (not warmed) runs it, :func:`probabilities`
turns the output into class probabilities and :func:`top_k` ranks the labels per sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RequestError
from ..evaluate import softmax
from ..modelcard import ModelCard
from ..preprocess import Preprocessor
from .engine import Engine
from .npz_inputs import load_npz_inputs

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"})


@dataclass(frozen=True)
class LabelScore:
    """One ranked class of one sample: its label, its index in the output and its probability."""

    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Classification:
    """The result of :func:`classify_file`: what ran, how long it took and the ranked labels.

    ``seconds`` covers creating and opening the engine, reading the input and inference (wall
    clock). ``predictions`` has one list per input sample, best first.
    """

    model: str
    backend: str
    precision: str
    seconds: float
    predictions: list[list[LabelScore]]


def load_inputs(path: Path, card: ModelCard, layout: str, sample_shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The model input batch ``[N, *sample_shape]`` (a new array, ``dtype``) for the file at ``path``.

    Accepted: an image file (any size; converted to RGB), a uint8 ``.npy`` image ``[H, W, 3]`` or
    image batch ``[N, H, W, 3]`` (both preprocessed as ``card.input`` says, in ``layout``), or a
    non-uint8 ``.npy`` whose trailing dimensions are ``sample_shape`` (already preprocessed: only
    reshaped and cast). Raises :class:`~edgeds.errors.RequestError` for anything else: a missing
    or unreadable file, an image PIL cannot decode (truncated, not an image), a ``.npy`` that is
    not a plain numpy array (text, pickled objects).
    """
    suffix = path.suffix.lower()
    if not path.is_file():
        raise RequestError(f"{path}: no such file")
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                images = np.asarray(img.convert("RGB"))[None]
        except UnidentifiedImageError as exc:
            raise RequestError(f"{path}: not an image PIL can read (give a png/jpg/bmp/... file)") from exc
        except Image.DecompressionBombError as exc:
            raise RequestError(f"{path}: the image is too large to decode safely ({exc})") from exc
        except OSError as exc:  # truncated or corrupt image data, unreadable file
            raise RequestError(f"{path}: cannot read the image: {exc}") from exc
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # text, pickled objects, a cut file
            raise RequestError(f"{path}: not a numpy .npy array file ({str(exc).split('.')[0]})") from exc
        if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
            raise RequestError(f"{path}: an .npz archive, not a .npy array: save one array with numpy.save")
        return image_batch(array, str(path), card, layout, sample_shape, dtype)
    else:
        raise RequestError(f"{path}: not an image or .npy file")
    pre = Preprocessor(card.input, layout)
    return np.array(pre.batch(list(images)))


def image_batch(
    array: np.ndarray, source: str, card: ModelCard, layout: str, sample_shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """The image input batch (a new array) for ``array``: uint8 RGB images ``[H,W,3]`` /
    ``[N,H,W,3]`` are preprocessed as ``card.input`` says; a non-uint8 array whose trailing
    dimensions are ``sample_shape`` is taken as preprocessed (reshaped and cast). ``source``
    names the array in the :class:`~edgeds.errors.RequestError` for anything else."""
    if array.shape[-len(sample_shape) :] == sample_shape and array.dtype != np.uint8:
        batch = array.reshape(-1, *sample_shape).astype(dtype, copy=False)
        return np.ascontiguousarray(batch)
    if array.dtype != np.uint8 or array.shape[-1] != 3 or array.ndim not in (3, 4):
        raise RequestError(
            f"{source}: expected a uint8 RGB image [H,W,3] / batch [N,H,W,3] or a tensor shaped "
            f"{list(sample_shape)}, got {array.dtype} {list(array.shape)}"
        )
    images = array if array.ndim == 4 else array[None]
    pre = Preprocessor(card.input, layout)
    return np.array(pre.batch(list(images)))


def probabilities(output: np.ndarray, kind: str) -> np.ndarray:
    """Class probabilities ``[N, classes]`` (float64) of a model output of ``kind``.

    ``kind`` is the card's ``output.kind``: ``probabilities`` are returned as they are,
    anything else (``logits``) goes through the softmax over the class axis.
    """
    values = np.asarray(output, dtype=np.float64)
    if kind == "probabilities":
        return values
    return softmax(values)


def top_k(probs: np.ndarray, labels: tuple[str, ...] | list[str], k: int) -> list[list[LabelScore]]:
    """The ``k`` (at least 1) most probable classes of each row of ``probs``, best first.

    A class index without a label (more outputs than labels) is named by its index.
    """
    ranked: list[list[LabelScore]] = []
    for row in probs:
        order = np.argsort(-row)[: max(1, k)]
        ranked.append([LabelScore(labels[i] if i < len(labels) else str(i), int(i), float(row[i])) for i in order])
    return ranked


def classify_file(
    bundle_path: Path,
    input_path: Path,
    *,
    top: int = 3,
    key: Path | None = None,
    threads: int | None = None,
) -> Classification:
    """Run the bundle at ``bundle_path`` once on the file at ``input_path``; the ``top`` labels per sample.

    The bundle is verified against the public ``key`` when one is given. The engine is opened
    without warm-up, with ``threads`` CPU threads (None = the backend's default), and closed
    before this returns. Raises :class:`~edgeds.errors.RequestError` when the input cannot be
    read (see :func:`load_inputs`; a model with ``extra_inputs`` takes an ``.npz``, see
    :func:`~edgeds.runtime.npz_inputs.load_npz_inputs`) or holds more samples than the bundle's ``max_batch_size``.
    """
    from ..bundle import load_bundle

    with load_bundle(bundle_path, key, verify=key is not None) as loaded:
        manifest = loaded.manifest
        started = time.perf_counter()
        engine = Engine.from_bundle(loaded, threads=threads, warmup=False)
        with engine:
            assert engine.io is not None and engine.selection is not None
            opened = engine.selection
            layout = manifest.layout_for(opened.index)  # the artifact the engine opened here
            if loaded.card.extra_inputs:
                feeds = load_npz_inputs(input_path, loaded.card, layout, engine.io.inputs)
            else:
                spec = engine.io.inputs[0]
                shape = tuple(spec.shape[1:])
                feeds = {spec.name: load_inputs(input_path, loaded.card, layout, shape, spec.dtype)}
            rows = len(next(iter(feeds.values())))
            limit = engine.batching.max_batch_size
            if rows > limit:
                raise RequestError(f"{input_path} holds {rows} samples; the bundle batches at most {limit}")
            outputs: dict[str, Any] = engine.infer(feeds)
        seconds = time.perf_counter() - started
        output_name = loaded.card.output.name if loaded.card.output.name in outputs else next(iter(outputs))
        probs = probabilities(outputs[output_name], loaded.card.output.kind)
        labels = list(manifest.labels or loaded.card.labels)
    return Classification(
        model=manifest.model.name,
        backend=opened.runtime,
        precision=opened.precision or manifest.precision,
        seconds=seconds,
        predictions=top_k(probs, labels, top),
    )
