"""One conformance suite over every backend available here.

Every backend runs the same network (ONNX for ONNX Runtime / OpenVINO / TensorRT, the same weights as
a ``.tflite`` for LiteRT) through a real :class:`Engine` and must reproduce the reference outputs
within tolerance, for every bucket size and for odd batch sizes that are padded to a bucket and
sliced back. A missing library or device skips its backend with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds import backends
from edgeds.config import Batching
from edgeds.runtime import Engine
from edgeds.runtime.testing import tiny_classifier, tiny_classifier_tflite

SIZE = 32
BUCKETS = (1, 2, 4, 8)
ATOL, RTOL = 1e-4, 1e-4


def _nchw(x: np.ndarray) -> np.ndarray:
    return x


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _tensorrt_plan(directory: Path) -> Path:
    """An FP32 engine of the same network, built here with the installed TensorRT (10 or 11)."""
    from edgeds.compile.toolchains import tensorrt as trt_tc
    from edgeds.compile.toolchains.tensorrt_build import build_engine
    from edgeds.hashing import sha256_file

    model = tiny_classifier(directory / "m.onnx", size=SIZE)
    recipe = trt_tc.Recipe(
        onnx=model.name,
        onnx_sha256=sha256_file(model),
        precision="fp32",
        inputs=trt_tc.shape_profiles(model, max_batch=max(BUCKETS), opt_batch=max(BUCKETS)),
        workspace_mb=256,
    )
    paths = trt_tc.engine_paths(directory / "cache", recipe, trt_tc.DeviceFacts.detect())
    plan = directory / "m.plan"
    plan.write_bytes(build_engine(recipe, directory, None, paths))
    return plan


# name -> (artifact builder, options, input layout transform)
CASES: dict[str, tuple[Callable[[Path], Path], dict[str, Any], Callable[[np.ndarray], np.ndarray]]] = {
    "onnxruntime": (
        lambda d: tiny_classifier(d / "m.onnx", size=SIZE),
        {"intra_op_num_threads": 1},
        _nchw,
    ),
    "openvino": (
        lambda d: tiny_classifier(d / "m.onnx", size=SIZE),
        {"inference_precision": "f32", "cache_compiled_blobs": False, "inference_num_threads": 1},
        _nchw,
    ),
    "litert": (lambda d: tiny_classifier_tflite(d / "m.tflite", size=SIZE), {"num_threads": 1}, _nhwc),
    "tensorrt": (_tensorrt_plan, {}, _nchw),
}


def _params() -> list[Any]:
    params = []
    for name in CASES:
        marks = [pytest.mark.tensorrt] if name == "tensorrt" else []
        if name in ("openvino", "litert"):
            marks.append(getattr(pytest.mark, name))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    import tempfile

    x = np.random.default_rng(42).normal(0.5, 0.5, size=(8, 3, SIZE, SIZE)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_classifier(Path(tmp) / "ref.onnx", size=SIZE)
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        y: np.ndarray = session.run(None, {"input": x})[0]
    return x, y


@pytest.fixture(params=_params())
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    name: str = request.param
    eng, layout = _open(name, tmp_path, Batching(max_batch_size=8, buckets=BUCKETS))
    yield eng, layout
    eng.close()


def _open(name: str, tmp_path: Path, batching: Batching, threads: int = 1) -> tuple[Engine, Any]:
    availability = backends.probe(name)
    if not availability.available:
        pytest.skip(f"{name} not available here: {availability.reason}")
    build, options, layout = CASES[name]
    options = {k: (threads if k.endswith("threads") else v) for k, v in options.items()}
    eng = Engine(name, build(tmp_path), options=options, batching=batching, name="m")
    eng.start()
    return eng, layout


def test_every_bucket_matches_reference(engine: Any, reference: tuple[np.ndarray, np.ndarray]) -> None:
    eng, layout = engine
    x, y = reference
    assert eng.pools[0].buckets == BUCKETS
    for n in BUCKETS:
        out = eng.infer({"input": layout(x[:n])})
        np.testing.assert_allclose(out["logits"], y[:n], atol=ATOL, rtol=RTOL)


def test_odd_batches_are_padded_and_sliced(engine: Any, reference: tuple[np.ndarray, np.ndarray]) -> None:
    eng, layout = engine
    x, y = reference
    # fill the big bucket with other rows first: stale padding must never leak into results
    eng.infer({"input": layout(x[::-1].copy())})
    for start, n in ((0, 3), (1, 5), (1, 7), (5, 1)):
        out = eng.infer({"input": layout(x[start : start + n])})["logits"]
        assert out.shape == (n, 5)
        np.testing.assert_allclose(out, y[start : start + n], atol=ATOL, rtol=RTOL)
    assert set(eng.stats().buckets) <= set(BUCKETS)


def test_backend_outputs_alias_pooled_buffers(engine: Any, reference: tuple[np.ndarray, np.ndarray]) -> None:
    eng, layout = engine
    x, y = reference
    backend = eng.backend
    staged = eng.pools[0].inputs(4)
    staged["input"][...] = layout(x[:4])
    first = backend.infer(staged)["logits"]
    np.testing.assert_allclose(first, y[:4], atol=ATOL, rtol=RTOL)
    second = backend.infer(staged)["logits"]
    # the backend hands back its own preallocated buffers: same memory every call
    assert np.shares_memory(first, second)


@pytest.mark.parametrize("name", _params())
def test_instances_split_threads_and_agree(name: str, tmp_path: Path, reference: tuple[np.ndarray, np.ndarray]) -> None:
    """Two instances (2 threads split 1 + 1): concurrent requests reach both, results stay exact."""
    import threading

    eng, layout = _open(name, tmp_path, Batching(max_batch_size=2, buckets=(1, 2), instances=2), threads=2)
    x, y = reference
    errors: list[BaseException] = []

    def client(start: int) -> None:
        try:
            for i in range(40):
                n = 1 + (i + start) % 2
                row = (i + start) % (len(x) - 1)
                out = eng.infer({"input": layout(x[row : row + n])})["logits"]
                np.testing.assert_allclose(out, y[row : row + n], atol=ATOL, rtol=RTOL)
        except BaseException as exc:  # noqa: BLE001 -- surfaced below, in the test's thread
            errors.append(exc)

    try:
        assert len(eng.backends) == 2 and len(eng.pools) == 2
        assert eng.backends[0] is not eng.backends[1]
        key = next(k for k in CASES[name][1] if k.endswith("threads"))
        assert [getattr(b.options, key) for b in eng.backends] == [1, 1]
        threads = [threading.Thread(target=client, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = eng.stats()
    finally:
        eng.close()
    assert not errors, errors[0]
    assert stats.success == 240 and stats.failure == 0
    assert set(stats.instance_executions) == {0, 1}  # both instances executed batches


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle: the tiny model compiled for x86-cpu at FP32 by the compile pipeline."""
    from edgeds.compile.pipeline import compile_model
    from edgeds.compile.tiny import write_tiny_model

    work = tmp_path_factory.mktemp("bundle")
    with pytest.MonkeyPatch.context() as mp:  # private dataset/compile caches: nothing stale from other runs
        mp.setenv("EDGEDS_CACHE_DIR", str(work / "cache"))
        model = write_tiny_model(work / "src", validation_count=16, calibration_count=8)
        return compile_model(model, "x86-cpu", precision="fp32", out=work / "bundle", use_cache=False).bundle


def test_bundle_golden_outputs(bundle_dir: Path) -> None:
    """``Engine.from_bundle`` reproduces the bundle's golden outputs within the manifest's tolerance."""
    from edgeds.bundle import load_bundle

    with load_bundle(bundle_dir, verify=False) as bundle:
        if not backends.probe(bundle.manifest.backend).available:
            pytest.skip(f"bundle backend {bundle.manifest.backend} not available")
        inputs, golden = bundle.golden()
        g = bundle.manifest.tensor_golden
        with Engine.from_bundle(bundle) as eng:
            assert eng.io is not None
            name = eng.io.inputs[0].name
            step = eng.batching.max_batch_size
            for start in range(0, len(inputs), step):
                chunk = np.ascontiguousarray(inputs[start : start + step])
                out = eng.infer({name: chunk})
                for key, ref in golden.items():
                    np.testing.assert_allclose(out[key], ref[start : start + len(chunk)], atol=g.atol, rtol=g.rtol)
            assert eng.stats().success == -(-len(inputs) // step)
