"""bench/peers/bare_socket.py, the transport ceiling of bench/runtime_bench.py, must really run the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.bench.servers import start_bare_socket, stop
from edgeds.runtime.testing import tiny_classifier


def test_the_bare_socket_ceiling_answers_tritonclient_with_the_models_outputs(tmp_path: Path) -> None:
    """A ceiling that skipped work would flatter every ratio: its answers must be the model's, for
    different inputs on concurrent connections."""
    ort = pytest.importorskip("onnxruntime")
    httpclient = pytest.importorskip("tritonclient.http")
    from concurrent.futures import ThreadPoolExecutor

    model = tiny_classifier(tmp_path / "tiny.onnx", size=16)
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    proc, port = start_bare_socket(model, threads=2)
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
        stop(proc)
    for expected, got in results:
        np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-5, atol=1e-5)
    assert not np.allclose(results[0][0], results[1][0])  # the inputs differ, so must the answers
