"""Engine over the real ONNX Runtime backend and a tiny ONNX model built here."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgeds.config import Batching
from edgeds.errors import EdgedsError, RequestError
from edgeds.runtime import Engine, EngineDraining, InferRequest
from edgeds.runtime.testing import tiny_classifier

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx", size=32)


def reference(model: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"input": x})[0]
    return out


def make(model: Path, **batching: object) -> Engine:
    config = Batching.model_validate({"max_batch_size": 8, **batching})
    return Engine("onnxruntime", model, options={"intra_op_num_threads": 1}, batching=config, name="tiny").start()


def test_odd_batches_padded_and_sliced(model: Path) -> None:
    x = np.random.default_rng(1).random((7, 3, 32, 32), dtype=np.float32)
    ref = reference(model, x)
    with make(model) as engine:
        for n in (1, 3, 5, 7):
            out = engine.infer({"input": x[:n]})
            np.testing.assert_allclose(out["logits"], ref[:n], rtol=1e-5, atol=1e-5)
        stats = engine.stats()
        assert stats.buckets == {1: 1, 4: 1, 8: 2}
        assert stats.batch_sizes == {1: 1, 3: 1, 5: 1, 7: 1}


def test_concurrent_requests_get_their_own_rows(model: Path) -> None:
    x = np.random.default_rng(2).random((24, 3, 32, 32), dtype=np.float32)
    ref = reference(model, x)
    results: dict[int, np.ndarray] = {}
    with make(model, max_queue_delay_us=100_000, preferred_batch_sizes=(8,)) as engine:

        def client(i: int) -> None:
            results[i] = engine.infer({"input": x[i : i + 1]})["logits"]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = engine.stats()
    for i in range(24):
        np.testing.assert_allclose(results[i], ref[i : i + 1], rtol=1e-5, atol=1e-5)
    assert stats.success == 24 and stats.inference_count == 24
    assert stats.execution_count < 24  # requests were batched together
    assert sum(stats.batch_sizes.values()) == stats.execution_count
    assert stats.queue_us > 0 and stats.compute_infer_us > 0


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"input": np.zeros((1, 3, 32, 32), np.float64)}, "dtype"),
        ({"input": np.zeros((1, 3, 16, 32), np.float32)}, "shape"),
        ({"input": np.zeros((3, 32, 32), np.float32)}, "shape"),
        ({"image": np.zeros((1, 3, 32, 32), np.float32)}, "unknown input"),
        ({}, "missing input"),
        ({"input": np.zeros((9, 3, 32, 32), np.float32)}, "batch size 9"),
    ],
)
def test_validation_in_engine(model: Path, inputs: dict[str, np.ndarray], message: str) -> None:
    with make(model) as engine:
        with pytest.raises(RequestError, match=message):
            engine.submit(inputs)
        assert engine.stats().failure == 1
        assert engine.infer({"input": np.zeros((1, 3, 32, 32), np.float32)})["logits"].shape == (1, 5)


def test_preserve_ordering_publishes_in_arrival_order(model: Path) -> None:
    done: list[int] = []
    lock = threading.Lock()
    x = np.zeros((1, 3, 32, 32), np.float32)
    with make(model, max_batch_size=2, priority_levels=2, preserve_ordering=True, max_queue_delay_us=20000) as engine:

        def record(req: InferRequest) -> None:
            with lock:
                done.append(req.seq)
            req.release()

        # low-priority requests first, then a high-priority one that runs earlier
        reqs = [engine.submit({"input": x}, callback=record) for _ in range(3)]
        reqs.append(engine.submit({"input": x}, priority=1, callback=record))
        engine.drain(10)
    assert done == sorted(r.seq for r in reqs)


def test_preserve_ordering_with_two_instances_and_expiring_requests(model: Path) -> None:
    """Requests that complete at once (expired in the queue) or on either instance still publish in order."""
    done: list[int] = []
    lock = threading.Lock()
    x = np.zeros((1, 3, 32, 32), np.float32)

    def record(req: InferRequest) -> None:
        with lock:
            done.append(req.seq)
        req.release()

    with make(model, max_batch_size=2, instances=2, preserve_ordering=True) as engine:
        reqs = [engine.submit({"input": x}, timeout_us=1 if i % 3 == 0 else None, callback=record) for i in range(60)]
        assert engine.drain(10)
    assert done == sorted(r.seq for r in reqs) and len(done) == 60


def test_steady_state_allocates_no_tensors(model: Path) -> None:
    x = np.random.default_rng(3).random((1, 3, 32, 32), dtype=np.float32)
    with make(model) as engine:
        for _ in range(50):  # warm-up: slots and caches
            r = engine.submit({"input": x})
            r.wait()
            r.release()
        slots = engine.pools[0].slots_allocated
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            for _ in range(300):
                r = engine.submit({"input": x})
                r.wait()
                r.release()
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert engine.pools[0].slots_allocated == slots
    # one input sample is 12 KiB: a per-request copy would show up in the peak
    assert peak - base < x.nbytes
    assert current - base < 64 * 1024


def test_drain_finishes_in_flight_and_refuses_new(model: Path) -> None:
    x = np.zeros((1, 3, 32, 32), np.float32)
    engine = make(model, max_queue_delay_us=50000, preferred_batch_sizes=(8,))
    pending = [engine.submit({"input": x}) for _ in range(5)]
    assert engine.drain(10)
    for r in pending:
        assert r.wait(1)["logits"].shape == (1, 5)
        r.release()
    with pytest.raises(EngineDraining):
        engine.submit({"input": x})
    assert engine.stats().success == 5


def test_callback_closed_loop_keeps_the_concurrency_and_loses_nothing(model: Path) -> None:
    """``bench.engine_closed_loop``: at most ``concurrency`` requests in flight, every one answered 200."""
    from edgeds.bench import engine_closed_loop

    x = np.zeros((1, 3, 32, 32), np.float32)
    with make(model, max_batch_size=4, instances=2) as engine:
        samples = engine_closed_loop(engine, {"input": x}, concurrency=4, duration_s=0.4, warmup_s=0.1)
        stats = engine.stats()
        assert engine.queue_depth() == 0
    assert len(samples.starts) > 20 and set(samples.status) == {200}
    assert stats.success >= len(samples.starts) and stats.failure == 0
    assert samples.peak_in_flight() <= 4


def test_inline_engine_runs_on_the_callers_thread_per_instance(model: Path) -> None:
    """``start(inline=True)``: no workers; requests name their instance and the thread that calls
    ``run_ready`` runs the batch (and the callbacks) on that instance."""
    x = np.random.default_rng(5).random((6, 3, 32, 32), dtype=np.float32)
    ref = reference(model, x)
    config = Batching(max_batch_size=4, max_queue_delay_us=0, instances=2)
    engine = Engine("onnxruntime", model, options={"intra_op_num_threads": 2}, batching=config, name="tiny")
    with engine.start(inline=True):
        assert engine.inline
        threads: list[int] = []
        results: dict[int, np.ndarray] = {}

        def done(i: int) -> Callable[[InferRequest], None]:
            def callback(request: InferRequest) -> None:
                threads.append(threading.get_ident())
                results[i] = np.array(request.outputs["logits"])
                request.release()

            return callback

        for i in range(6):
            engine.submit({"input": x[i : i + 1]}, callback=done(i), instance=i % 2)
        assert engine.queue_depth() == 6 and results == {}  # nothing runs by itself
        while engine.run_ready(0) == 0 or engine.run_ready(1) == 0:
            pass
        assert set(threads) == {threading.get_ident()}
        for i in range(6):
            np.testing.assert_allclose(results[i], ref[i : i + 1], rtol=1e-5, atol=1e-5)
        stats = engine.stats()
        # each instance's three requests went as one batch of 3, on that instance
        assert stats.success == 6 and stats.instance_executions == {0: 1, 1: 1} and stats.batch_sizes == {3: 2}
        with pytest.raises(EdgedsError, match="instance"):
            engine.submit({"input": x[:1]})  # an inline engine needs the instance
        with pytest.raises(EdgedsError, match="instance"):
            engine.submit({"input": x[:1]}, instance=2)
        with pytest.raises(EdgedsError, match="inline"):
            engine.infer({"input": x[:1]})  # nobody would run it


def test_inline_is_refused_where_it_cannot_work(model: Path) -> None:
    with make(model) as engine:
        with pytest.raises(EdgedsError, match="instance"):
            engine.submit({"input": np.zeros((1, 3, 32, 32), np.float32)}, instance=0)
        with pytest.raises(EdgedsError, match="workers"):
            engine.run_ready(0)
    ordered = Engine(
        "onnxruntime",
        model,
        options={"intra_op_num_threads": 1},
        batching=Batching(max_batch_size=2, preserve_ordering=True),
    )
    with pytest.raises(EdgedsError, match="preserve_ordering"):
        ordered.start(inline=True)


@pytest.mark.parametrize("inline", [False, True])
def test_a_failing_latency_recorder_never_fails_a_batch(model: Path, inline: bool) -> None:
    """The agent's latency recorder raising (telemetry down) does not fail or strand a batch that ran,
    on a worker or on the thread that runs an inline instance; the engine goes on serving."""

    class Broken:
        def record(self, latencies_s: list[float], batch_size: int) -> None:
            raise RuntimeError("telemetry is down")

        def record_error(self, count: int = 1) -> None:
            raise RuntimeError("telemetry is down")

    x = np.random.default_rng(6).random((1, 3, 32, 32), dtype=np.float32)
    config = Batching(max_batch_size=2, max_queue_delay_us=0)
    engine = Engine("onnxruntime", model, options={"intra_op_num_threads": 1}, batching=config, name="tiny")
    with engine.start(inline=inline):
        engine.recorder = Broken()
        for _ in range(2):
            done: list[InferRequest] = []
            finished = threading.Event()

            def callback(
                request: InferRequest, done: list[InferRequest] = done, finished: threading.Event = finished
            ) -> None:
                done.append(request)
                finished.set()

            engine.submit({"input": x}, callback=callback, instance=0 if inline else None)
            if inline:
                while engine.run_ready(0) == 0:
                    pass
            assert finished.wait(10)
            assert done[0].error is None and done[0].outputs["logits"].shape == (1, 5)
            done[0].release()
        assert engine.stats().success == 2 and engine.stats().failure == 0
