"""``edgeds run BUNDLE --input FILE``: one-off inference on an image or a .npy, labels and scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._output import JSON_OPTION, console, emit, table

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def load_inputs(path: Path, card: Any, layout: str, sample_shape: tuple[int, ...], dtype: str) -> Any:
    """The model input batch for ``path``: an image (RGB), a uint8 ``.npy`` image or image batch
    (preprocessed as the card says), or a ``.npy`` already shaped like the model input."""
    import numpy as np

    from ..errors import RequestError
    from ..preprocess import Preprocessor

    if path.suffix.lower() in _IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(path) as img:
            images = np.asarray(img.convert("RGB"))[None]
    elif path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.shape[-len(sample_shape) :] == sample_shape and array.dtype != np.uint8:
            batch = array.reshape(-1, *sample_shape).astype(dtype, copy=False)
            return np.ascontiguousarray(batch)
        if array.dtype != np.uint8 or array.shape[-1] != 3 or array.ndim not in (3, 4):
            raise RequestError(
                f"{path}: expected a uint8 RGB image [H,W,3] / batch [N,H,W,3] or a tensor shaped "
                f"{list(sample_shape)}, got {array.dtype} {list(array.shape)}"
            )
        images = array if array.ndim == 4 else array[None]
    else:
        raise RequestError(f"{path}: not an image or .npy file")
    pre = Preprocessor(card.input, layout)
    return np.array(pre.batch(list(images)))


def run(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Image (png/jpg/...) or .npy.")],
    top: Annotated[int, typer.Option(help="How many labels to show per sample.")] = 3,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="ed25519 public key: verify the bundle first.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the backend.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run BUNDLE once on an image or .npy with the model card's preprocessing; print labels and scores."""
    import time

    import numpy as np

    from ..bundle import load_bundle
    from ..errors import RequestError
    from ..evaluate import softmax
    from ..runtime.engine import Engine, thread_options

    with load_bundle(bundle, key, verify=key is not None) as loaded:
        manifest = loaded.manifest
        started = time.perf_counter()
        engine = Engine.from_bundle(loaded, options=thread_options(manifest.backend, threads), warmup=False)
        with engine:
            assert engine.io is not None
            spec = engine.io.inputs[0]
            batch = load_inputs(input_file, loaded.card, manifest.layout, tuple(spec.shape[1:]), spec.dtype)
            limit = engine.batching.max_batch_size
            if len(batch) > limit:
                raise RequestError(f"{input_file} holds {len(batch)} samples; the bundle batches at most {limit}")
            outputs = engine.infer({spec.name: batch})
        seconds = time.perf_counter() - started
        output_name = loaded.card.output.name if loaded.card.output.name in outputs else next(iter(outputs))
        scores = np.asarray(outputs[output_name], dtype=np.float64)
        probs = scores if loaded.card.output.kind == "probabilities" else softmax(scores)
        labels = list(manifest.labels or loaded.card.labels)
    results = []
    for row in probs:
        order = np.argsort(-row)[: max(1, top)]
        results.append(
            [
                {"label": labels[i] if i < len(labels) else str(i), "index": int(i), "score": float(row[i])}
                for i in order
            ]
        )
    data = {
        "bundle": str(bundle),
        "model": manifest.model.name,
        "backend": manifest.backend,
        "precision": manifest.precision,
        "input": str(input_file),
        "seconds": round(seconds, 4),
        "predictions": results,
    }

    def human() -> None:
        rows = [[n, p["label"], f"{p['score']:.4f}"] for n, preds in enumerate(results) for p in preds]
        console.print(
            table(
                f"{manifest.model.name} ({manifest.backend} {manifest.precision}) on {input_file.name}",
                ["sample", "label", "score"],
                rows,
            )
        )

    emit(data, as_json, human)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
