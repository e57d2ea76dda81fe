"""A model whose batch dimension is fixed (1, or 4) compiles, and serves at its batch only.

The tiny model with its batch dim fixed by onnx compiles at FP32 and INT8 on ONNX Runtime and
OpenVINO (where installed), with a validation and calibration count that is not a multiple of
the batch (the last batches are padded). The bundle is served in-process over loopback and
answered through ``tritonclient.http``: single requests and concurrent ones (so the batcher
forms batches), compared with ONNX Runtime run directly on the original model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds import backends
from edgeds.bundle import load_bundle
from edgeds.compile import compile_model
from edgeds.compile.gates.image import cosine_rows
from edgeds.compile.tiny import SIZE, write_tiny_model
from edgeds.config import Batching
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.engine import thread_options

ort = pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from ._loose_profile import private_cache, write_profile  # noqa: E402, F401

VALIDATION = 42  # not a multiple of 4: the last evaluation batch is padded
CALIBRATION = 10  # nor this: the last calibration batch is filled up with real samples
# a lenient budget: the tiny model is random, and these tests are about shapes, not accuracy


def fix_batch(model: Path, batch: int) -> None:
    """Set the batch dim of every graph input and output of ``model`` to ``batch``, in place."""
    import onnx

    proto = onnx.load(str(model))
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = batch
    onnx.save(proto, str(model))


@pytest.fixture(scope="module", params=[1, 4], ids=["batch1", "batch4"])
def fixed_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Path:
    model = write_tiny_model(tmp_path_factory.mktemp("fixed"), VALIDATION, CALIBRATION)
    fix_batch(model, int(request.param))
    return model


def profile_for(directory: Path, backend: str) -> Path:
    return write_profile(directory / f"fixed-{backend}.yaml", f"fixed-{backend}", "a fixed-batch test profile", backend)


def need(backend: str) -> None:
    availability = backends.probe(backend)
    if not availability.available:
        pytest.skip(f"{backend} runtime not available here: {availability.reason}")


def reference(model: Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the original model, fed one fixed-size batch at a time (padded)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batch = int(session.get_inputs()[0].shape[0])
    rows = []
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *x.shape[1:]), np.float32)])
        rows.append(session.run(None, {"input": padded})[0][: len(chunk)])
    return np.concatenate(rows)


def _request(x: np.ndarray) -> tuple[list[Any], list[Any]]:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return [tensor], [httpclient.InferRequestedOutput("logits", binary_data=True)]


def infer(client: Any, x: np.ndarray) -> np.ndarray:
    inputs, outputs = _request(x)
    out: np.ndarray = client.infer("tiny", inputs, outputs=outputs).as_numpy("logits")
    return out


def infer_concurrently(client: Any, rows: list[np.ndarray]) -> list[np.ndarray]:
    """Every request in flight at once (``async_infer`` on the client's connection pool)."""
    requests = [_request(x) for x in rows]
    handles = [client.async_infer("tiny", inputs, outputs=outputs) for inputs, outputs in requests]
    return [handle.get_result().as_numpy("logits") for handle in handles]


def close_enough(precision: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if precision == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    else:
        assert float(cosine_rows(want, got).min()) >= 0.95


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_fixed_batch_compiles_and_serves(fixed_model: Path, backend: str, precision: str, tmp_path: Path) -> None:
    need(backend)
    batch = _batch_of(fixed_model)
    result = compile_model(fixed_model, profile_for(tmp_path, backend), precision=precision, out=tmp_path / "bundle")
    assert result.backend == backend and result.precision == precision
    assert any(f"fixed at {batch}" in note for note in result.report.notes)
    # evaluation and calibration ran at batch N: no attempt errored
    assert all(a.outcome == "passed" for a in result.report.attempts), result.report.as_dict()

    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["fixed_batch"] == batch
    assert manifest["batching"]["max_batch_size"] == batch and manifest["batching"]["buckets"] == [batch]
    with load_bundle(result.bundle, verify=False) as bundle:
        inputs, outputs = bundle.golden()
        assert len(inputs) == batch and len(outputs["logits"]) == batch
        # a caller's bigger batching is held to the model's batch
        options = thread_options(backend, 1)
        engine = Engine.from_bundle(bundle, batching=Batching(max_batch_size=16), options=options)
        assert engine.batching.max_batch_size == batch and engine.batching.bucket_sizes() == (batch,)
        engine.start()
    server = InferenceServer(engine, port=0).start()
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=8)
    try:
        rng = np.random.default_rng(3)
        x = rng.random((12, 3, SIZE, SIZE), dtype=np.float32)
        want = reference(fixed_model, x)
        # single requests of one row, and of every size up to the batch
        close_enough(precision, infer(client, x[:1]), want[:1])
        for rows in range(2, batch + 1):
            close_enough(precision, infer(client, x[:rows]), want[:rows])
        # concurrent requests of one row: the batcher joins them into batches of at most N
        got = infer_concurrently(client, [x[i : i + 1] for i in range(len(x))])
        close_enough(precision, np.concatenate(got), want)
        with pytest.raises(InferenceServerException, match=rf"outside 1\.\.{batch}\b") as exc:
            infer(client, x[: batch + 1])
        assert "400" in str(exc.value.status())
        stats = engine.stats()
        assert set(stats.buckets) == {batch}  # every execution ran the model at its batch
        assert max(stats.batch_sizes) <= batch
    finally:
        client.close()
        server.stop(close_engines=True)


def _batch_of(model: Path) -> int:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return int(proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value)


def test_dynamic_batch_bundle_records_no_fixed_batch(tmp_path: Path, cache_env: Path) -> None:
    """A dynamic-batch bundle's manifest has no ``fixed_batch`` key (older edgeds read it as before)."""
    model = write_tiny_model(tmp_path / "dyn", VALIDATION, CALIBRATION)
    result = compile_model(model, profile_for(tmp_path, "onnxruntime"), precision="fp32", out=tmp_path / "bundle")
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert "fixed_batch" not in manifest
    assert manifest["batching"]["max_batch_size"] == 8
    assert result.report.notes == []


def test_fixed_batch_through_mixed_precision_run_and_serve(fixed_model: Path, tmp_path: Path) -> None:
    """A budget INT8 cannot meet: the per-node scan and the mixed rounds run at batch N too, and
    the FP32 fallback wins; ``edgeds run`` and ``edgeds serve --max-batch 8`` keep to N."""
    from edgeds.runtime.classify import classify_file
    from edgeds.runtime.loading import load_served

    batch = _batch_of(fixed_model)
    strict = profile_for(tmp_path, "onnxruntime")
    strict.write_text(strict.read_text().replace("min_cosine: 0.95", "min_cosine: 0.9999999"))
    result = compile_model(fixed_model, strict, precision="int8", out=tmp_path / "bundle")
    variants = [(a.variant, a.outcome) for a in result.report.attempts]
    assert ("int8-mixed", "failed") in variants, variants
    assert all(outcome != "error" for _, outcome in variants), result.report.as_dict()
    assert result.precision == "fp32"

    rows = max(1, batch - 1)  # fewer than the batch: the engine pads them
    images = np.random.default_rng(5).integers(0, 256, (rows, SIZE, SIZE, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    ranked = classify_file(result.bundle, tmp_path / "images.npy", top=1, threads=1)
    assert len(ranked.predictions) == rows

    served = load_served(result.bundle, max_batch=8, threads=1)
    try:
        assert served.engine.batching.max_batch_size == batch
        assert served.engine.batching.bucket_sizes() == (batch,)
    finally:
        served.engine.close()
