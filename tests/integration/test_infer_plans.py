"""Infer plans (:mod:`edgeds.runtime.oip`): a repeated request header is parsed once, and nothing
about the requests that reuse it may be stale: every body's own data, its own length checked, its
own id, and the response bytes identical to those rendered without the cache."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeds.config import Batching
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.http_syntax import HttpError, http_bytes, keep_alive_head
from edgeds.runtime.oip import PlanCache, infer_response
from edgeds.runtime.testing import tiny_classifier

ort = pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")

SIZE = 16


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx", size=SIZE)


@pytest.fixture(scope="module")
def engine(model: Path) -> Iterator[Engine]:
    config = Batching.model_validate({"max_batch_size": 4})
    e = Engine("onnxruntime", model, options={"intra_op_num_threads": 1}, batching=config, name="tiny").start()
    yield e
    e.close()


@pytest.fixture
def server(engine: Engine) -> Iterator[InferenceServer]:
    srv = InferenceServer(engine, port=0).start()
    yield srv
    srv.stop()


def reference(model: Path, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return out


def binary_request(x: np.ndarray, extra: bytes = b"", **fields: object) -> bytes:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
            **fields,
        }
    ).encode()
    body = header + x.tobytes() + extra
    head = (
        f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n\r\n"
    )
    return head.encode() + body


def exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request on a keep-alive connection and read its whole response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(fields["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), fields, body


def logits(fields: dict[str, str], body: bytes) -> tuple[dict[str, object], np.ndarray]:
    split = int(fields["inference-header-content-length"])
    header = json.loads(body[:split])
    shape = header["outputs"][0]["shape"]
    return header, np.frombuffer(body[split:], dtype=np.float32).reshape(shape)


def test_one_plan_serves_every_body_with_the_same_header_and_each_gets_its_own_answer(
    server: InferenceServer, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeds.runtime import oip

    parsed: list[int] = []
    read_header = oip._read_header

    def counting(body: bytes | memoryview, header_length: str | None) -> tuple[dict[str, object], int]:
        parsed.append(1)
        return read_header(body, header_length)

    monkeypatch.setattr(oip, "_read_header", counting)
    xs = [np.random.default_rng(seed).random((1, 3, SIZE, SIZE), dtype=np.float32) for seed in range(12)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for x in xs:
            status, fields, body = exchange(sock, binary_request(x))
            assert status == 200, body
            _, got = logits(fields, body)
            np.testing.assert_allclose(got, reference(model, x), rtol=1e-5, atol=1e-5)
    assert len(parsed) == 1 and len(server._lanes[0].plans) == 1  # twelve requests, one header: parsed once


def test_a_known_header_on_a_longer_body_is_checked_again(server: InferenceServer) -> None:
    x = np.ones((1, 3, SIZE, SIZE), dtype=np.float32)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert exchange(sock, binary_request(x))[0] == 200
        status, _, body = exchange(sock, binary_request(x, extra=b"\0" * 4))
        assert status == 400 and b"4 bytes of binary data are not claimed" in body
        assert exchange(sock, binary_request(x))[0] == 200


def test_ids_are_echoed_per_request_and_the_plans_stay_bounded(server: InferenceServer) -> None:
    server._lanes[0].plans.size = 4
    x = np.zeros((1, 3, SIZE, SIZE), dtype=np.float32)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for i in range(10):
            for turn in ("parsed", "kept"):  # the second request of an id takes its kept plan and head
                status, fields, body = exchange(sock, binary_request(x, id=f"req-{i}"))
                header, _ = logits(fields, body)
                assert status == 200 and header["id"] == f"req-{i}", (turn, header)
                assert len(server._lanes[0].plans) <= 4


def test_batches_of_other_sizes_and_json_outputs_get_their_own_layout(server: InferenceServer, model: Path) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        for n in (1, 3, 1, 2, 3):
            x = np.random.default_rng(n).random((n, 3, SIZE, SIZE), dtype=np.float32)
            tensor = httpclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            for binary in (True, False):
                out = httpclient.InferRequestedOutput("logits", binary_data=binary)
                result = client.infer("tiny", [tensor], outputs=[out])
                np.testing.assert_allclose(result.as_numpy("logits"), reference(model, x), rtol=1e-5, atol=1e-5)
    finally:
        client.close()


def test_a_response_from_a_kept_head_is_byte_for_byte_the_rendered_one(engine: Engine) -> None:
    x = np.zeros((2, 3, SIZE, SIZE), dtype=np.float32)
    header = json.dumps(
        {
            "id": "a",
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 3, SIZE, SIZE],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = header + x.tobytes()
    cache = PlanCache()
    plan = cache.plan(engine, body, str(len(header)))
    assert cache.plan(engine, body, str(len(header))) is plan
    outputs = {"logits": np.arange(10, dtype=np.float32).reshape(2, 5)}
    first = plan.respond(engine, outputs, keep_alive_head)  # renders, and keeps the head
    kept = plan.respond(engine, outputs, keep_alive_head)
    assert first.head is None and kept.head is not None
    rendered = infer_response(engine, "a", outputs, plan.wanted)
    for keep_alive in (True, False):
        assert http_bytes(kept, keep_alive) == http_bytes(rendered, keep_alive)
    other = {"logits": np.arange(15, dtype=np.float32).reshape(3, 5)}  # another layout: not the kept head
    assert http_bytes(plan.respond(engine, other, keep_alive_head), True) == http_bytes(
        infer_response(engine, "a", other, plan.wanted), True
    )


def test_a_malformed_header_is_refused_and_not_kept(engine: Engine) -> None:
    cache = PlanCache()
    body = b'{"inputs": 3}' + b"\0" * 8
    with pytest.raises(HttpError, match="'inputs' must be a non-empty list"):
        cache.plan(engine, body, "13")
    assert len(cache) == 0


def test_parsed_heads_and_routes_are_kept_for_reuse_and_stay_bounded(server: InferenceServer) -> None:
    """Each request's own head and path decide its answer, however many distinct ones came before."""
    from edgeds.runtime import http_connection
    from edgeds.runtime import server as server_module

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for i in range(max(http_connection._HEAD_MEMO_SIZE, server_module._ROUTE_MEMO_SIZE) + 40):
            if i % 2:
                request = f"GET /v2/health/live HTTP/1.1\r\nHost: h{i}\r\n\r\n"
            else:
                request = f"POST /v2/models/nope{i}/infer HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{{}}"
            status, _, body = exchange(sock, request.encode())
            assert (status == 200) if i % 2 else (status == 400 and f"nope{i}".encode() in body)
    assert 0 < len(server._lanes[0].lp.http.heads) <= http_connection._HEAD_MEMO_SIZE
    assert 0 < len(server._lanes[0].routes) <= server_module._ROUTE_MEMO_SIZE


def test_plans_let_a_swapped_out_engine_go_and_answers_come_from_its_replacement(model: Path) -> None:
    config = Batching.model_validate({"max_batch_size": 4})

    def start(version: str) -> Engine:
        options = {"intra_op_num_threads": 1}
        return Engine("onnxruntime", model, options=options, batching=config, name="tiny", version=version).start()

    old = start("1")
    srv = InferenceServer(old, port=0).start()
    x = np.zeros((1, 3, SIZE, SIZE), dtype=np.float32)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            assert logits(*exchange(sock, binary_request(x))[1:])[0]["model_version"] == "1"
            assert [key[0] for key in srv._lanes[0].plans._plans] == [old]
            srv.swap_model(start("2"))
            assert len(srv._lanes[0].plans) == 0
            assert logits(*exchange(sock, binary_request(x))[1:])[0]["model_version"] == "2"
            assert all(key[0] is not old for key in srv._lanes[0].plans._plans)
    finally:
        srv.stop(close_engines=True)
