"""bench/runtime_bench.py's own parts: how it sizes the batcher it compares with the engine floor, and
its transport ceiling (bench/peers/bare_socket.py), which must really run the model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edgeds.config import REPO_ROOT
from edgeds.runtime.testing import tiny_classifier


def _runtime_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runtime_bench", REPO_ROOT / "bench" / "runtime_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_batcher_sizes_are_at_most_half_the_clients_per_instance() -> None:
    candidates = _runtime_bench().batch_candidates
    assert candidates(8) == [1, 2, 4]  # one instance, 8 clients: batches of up to 4 pipeline
    assert candidates(4) == [1, 2]  # 2 instances x 4 clients each: a batch of 4 would idle an instance
    assert candidates(2) == [1] and candidates(1) == [1]


def test_the_fastest_measured_size_wins_and_a_larger_one_within_3_percent() -> None:
    choose = _runtime_bench().choose_batch
    assert choose({1: 1300.0, 2: 1200.0}) == 1  # clearly faster
    assert choose({1: 1200.0, 2: 1300.0, 4: 1250.0}) == 2
    assert choose({1: 1300.0, 2: 1270.0}) == 2  # within 3 %: the larger batch shares per-batch work
    assert choose({1: 1300.0, 2: 1250.0, 4: 1290.0}) == 4
    assert choose({1: 500.0}) == 1


def test_the_best_layout_is_the_highest_bucket_floor_of_any_instance_count() -> None:
    bench = _runtime_bench()
    one = {"instances": 1, "per_batch": [{"batch": 4, "samples_per_s": 1200.0}, {"batch": 3, "samples_per_s": 1600.0}]}
    two = {"instances": 2, "per_batch": [{"batch": 1, "samples_per_s": 1450.0}, {"batch": 2, "samples_per_s": 1480.0}]}
    # batch 3 is not a bucket (the engine pads it to 4), so it cannot make one instance the best
    assert bench.best_layout([one, two]) is two
    assert bench.layouts(2) == [1, 2] and bench.layouts(1) == [1]


def test_the_bare_socket_ceiling_answers_tritonclient_with_the_models_outputs(tmp_path: Path) -> None:
    """A ceiling that skipped work would flatter every ratio: its answers must be the model's, for
    different inputs on concurrent connections."""
    ort = pytest.importorskip("onnxruntime")
    httpclient = pytest.importorskip("tritonclient.http")
    from concurrent.futures import ThreadPoolExecutor

    bench = _runtime_bench()
    model = tiny_classifier(tmp_path / "tiny.onnx", size=16)
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    proc, port = bench.start_bare_socket(model, threads=2)
    try:

        def ask(seed: int) -> tuple[np.ndarray, np.ndarray]:
            x = np.random.default_rng(seed).random((1, 3, 16, 16), dtype=np.float32)
            with httpclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
                tensor = httpclient.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                answers = [client.infer("bare", [tensor]) for _ in range(5)]
            expected = reference.run(None, {"input": x})[0]
            return expected, np.stack([a.as_numpy(a.get_response()["outputs"][0]["name"]) for a in answers])

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(ask, range(4)))
    finally:
        bench.stop(proc)
    for expected, got in results:
        np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-5, atol=1e-5)
    assert not np.allclose(results[0][0], results[1][0])  # the inputs differ, so must the answers
