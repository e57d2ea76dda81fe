"""The OIP server over loopback, driven by the real ``tritonclient.http`` client and raw HTTP."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds.config import Batching
from edgeds.errors import EdgedsError
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.testing import tiny_classifier

ort = pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

SIZE = 32
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx", size=SIZE)


# Who runs the batches: the engine's worker threads, or the server's event loops (one per instance,
# each receiving, batching, running and answering its own connections' requests): every test that
# takes one of these runs against both.
EXECUTIONS = ["workers", "inline"]


def start_engine(model: Path, version: str = "1", inline: bool = False, **batching: object) -> Engine:
    config = Batching.model_validate({"max_batch_size": 8, **batching})
    return Engine(
        "onnxruntime", model, options={"intra_op_num_threads": 1}, batching=config, name="tiny", version=version
    ).start(inline=inline)


@pytest.fixture(scope="module", params=EXECUTIONS)
def server(model: Path, request: pytest.FixtureRequest) -> Iterator[InferenceServer]:
    """Workers: one instance. Inline: two instances, so two event loops share the clients."""
    inline = request.param == "inline"
    engine = start_engine(model, inline=inline, instances=2 if inline else 1)
    srv = InferenceServer(engine, port=0, max_body_bytes=MAX_BODY).start()
    assert srv.loops == (2 if inline else 1)
    yield srv
    srv.stop(close_engines=True)


@pytest.fixture
def client(server: InferenceServer) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield c
    c.close()


def sample(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, SIZE, SIZE), dtype=np.float32)


def ref(model: Path, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return out


def raw(
    server: InferenceServer, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_health_and_metadata(client: Any, server: InferenceServer) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 5]}]
    config = client.get_model_config("tiny")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [3, SIZE, SIZE]
    status, body, _ = raw(server, "GET", "/v2")
    info = json.loads(body)
    assert status == 200 and "binary_tensor_data" in info["extensions"]
    assert raw(server, "GET", "/v2/models/nope/ready")[0] != 200


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_reference(client: Any, model: Path, binary: bool) -> None:
    x = sample(3, seed=int(binary))
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("logits", binary_data=binary)
    result = client.infer("tiny", [inp], outputs=[out], request_id="r1")
    np.testing.assert_allclose(result.as_numpy("logits"), ref(model, x), rtol=1e-5, atol=1e-5)
    assert result.get_response()["id"] == "r1"


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_compressed_requests_from_tritonclient(client: Any, model: Path, algorithm: str, binary: bool) -> None:
    x = sample(2, seed=11)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("tiny", [inp], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("logits"), ref(model, x), rtol=1e-5, atol=1e-5)


def test_a_raw_deflate_body_without_the_zlib_wrapper_is_taken(server: InferenceServer, model: Path) -> None:
    """Some clients send ``Content-Encoding: deflate`` as a bare deflate stream, not zlib-wrapped."""
    x = sample(1, seed=13)
    header = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = packer.compress(json.dumps(header).encode()) + packer.flush()
    assert not (body[0] & 0x0F == 8 and (body[0] * 256 + body[1]) % 31 == 0)  # no zlib header by chance
    status, payload, _ = raw(server, "POST", "/v2/models/tiny/infer", body, {"Content-Encoding": "deflate"})
    assert status == 200, payload
    logits = np.array(json.loads(payload)["outputs"][0]["data"], np.float32).reshape(1, 5)
    np.testing.assert_allclose(logits, ref(model, x), rtol=1e-5, atol=1e-5)


def _chunked(body: bytes, size: int) -> bytes:
    """``body`` in chunks of ``size`` bytes (upper-case hex, an extension on each), a trailer, the end."""
    pieces = [b"%X;n=1\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(pieces) + b"0\r\nX-Trailer: yes\r\n\r\n"


def _read_response(sock: socket.socket, buf: bytes = b"") -> tuple[int, bytes, bytes]:
    """One HTTP response (Content-Length framed) from ``sock``: status, body, bytes read beyond it."""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(1 << 16)
        assert more, f"connection closed before a response: {buf!r}"
        buf += more
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        more = sock.recv(1 << 16)
        assert more, "connection closed inside a response"
        rest += more
    return int(head.split(b" ")[1]), rest[:length], rest[length:]


def test_chunked_request_bodies_from_http_client(server: InferenceServer, model: Path) -> None:
    """What clients that stream a body send (here the stdlib's ``http.client`` with an iterable body)."""
    x = sample(2, seed=17)
    body, headers = _binary_body(x, _good_header(x))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
        conn.request("POST", "/v2/models/tiny/infer", body=pieces, headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        payload = resp.read()
        assert resp.status == 200, payload
        logits = np.array(json.loads(payload)["outputs"][0]["data"], np.float32).reshape(2, 5)
        np.testing.assert_allclose(logits, ref(model, x), rtol=1e-5, atol=1e-5)
        conn.request("GET", "/v2/health/ready")  # the same connection goes on
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_chunked_bodies_that_arrive_in_pieces_keep_the_connection(server: InferenceServer, model: Path) -> None:
    """Chunk lines cut across packets, then a second chunked request on the same connection."""
    x = sample(1, seed=19)
    body, headers = _binary_body(x, _good_header(x))
    head = (
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        f"Inference-Header-Content-Length: {headers['Inference-Header-Content-Length']}\r\n\r\n"
    ).encode()
    wire = head + _chunked(body, 777)
    expected = ref(model, x)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for step in (7, 4096):
            for i in range(0, len(wire), step):
                sock.sendall(wire[i : i + step])
                if step == 7 and i < 400:
                    time.sleep(0.002)  # the head and the first chunk lines arrive a few bytes at a time
            status, payload, extra = _read_response(sock)
            assert status == 200 and not extra, payload
            logits = np.array(json.loads(payload)["outputs"][0]["data"], np.float32).reshape(1, 5)
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _read_response(sock)[0] == 200


def test_pipelined_chunked_and_sized_requests_are_answered_in_order(server: InferenceServer, model: Path) -> None:
    """Two chunked requests and one with a Content-Length in one send: each answered, in order."""
    xs = [sample(1, seed=seed) for seed in (21, 22, 23)]
    wire = b""
    for i, x in enumerate(xs):
        body, headers = _binary_body(x, _good_header(x))
        framing = f"Content-Length: {len(body)}" if i == 2 else "Transfer-Encoding: chunked"
        wire += (
            f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\n{framing}\r\n"
            f"Inference-Header-Content-Length: {headers['Inference-Header-Content-Length']}\r\n\r\n"
        ).encode() + (body if i == 2 else _chunked(body, 1000 + 500 * i))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(wire)
        extra = b""
        for x in xs:
            status, payload, extra = _read_response(sock, extra)
            assert status == 200, payload
            logits = np.array(json.loads(payload)["outputs"][0]["data"], np.float32).reshape(1, 5)
            np.testing.assert_allclose(logits, ref(model, x), rtol=1e-5, atol=1e-5)
        assert not extra


@pytest.mark.parametrize(
    ("wire", "status", "message"),
    [
        (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "malformed chunk size"),
        (b"Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400, "not followed by CRLF"),
        (b"Transfer-Encoding: chunked\r\n\r\n%X\r\n" % (MAX_BODY + 1), 413, f"exceeds the limit of {MAX_BODY}"),
        (b"Transfer-Encoding: chunked\r\n\r\n2;\nab\r\n0\r\n\r\n", 400, "control character"),
        (b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501, "unsupported Transfer-Encoding"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n{}", 400, "last"),
        (b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "conflicting Content-Length"),
    ],
    ids=["bad size", "wrong size", "over the limit", "bare LF", "gzip coding", "repeated TE", "two lengths"],
)
def test_bad_chunked_bodies_are_refused_and_the_connection_closed(
    client: Any, server: InferenceServer, wire: bytes, status: int, message: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\n" + wire)
        got, payload, _ = _read_response(sock)
        assert (got, message in json.loads(payload)["error"]) == (status, True), payload
        sock.settimeout(5)
        while sock.recv(1 << 16):  # the framing of whatever follows is unknown: the server closes
            pass
    good = sample(1, seed=9)
    inp = httpclient.InferInput("input", list(good.shape), "FP32")
    inp.set_data_from_numpy(good)
    assert client.infer("tiny", [inp]).as_numpy("logits").shape == (1, 5)


@pytest.mark.parametrize(("version", "extra"), [("HTTP/1.0", b"Connection: keep-alive\r\n")], ids=["HTTP/1.0"])
def test_chunked_with_doubtful_framing_is_served_then_closed(
    server: InferenceServer, version: str, extra: bytes
) -> None:
    """HTTP/1.0 has no transfer codings: the request is served as chunked, then the connection closes
    (RFC 9112 6.1). Chunked beside a Content-Length is refused: tests/integration/test_http_strict.py."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /v2/models/tiny/infer {version}\r\nHost: t\r\n".encode()
            + extra
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + _chunked(b'{"inputs": []}', 5)
        )
        status, payload, _ = _read_response(sock)
        assert status == 400 and b"non-empty list" in payload, payload  # the whole chunked body, not 3 bytes
        sock.settimeout(5)
        assert sock.recv(1 << 16) == b""


def test_default_tritonclient_call_and_stats(client: Any, server: InferenceServer, model: Path) -> None:
    x = sample(1, seed=5)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("tiny", [inp])  # binary in, binary_data_output out
    np.testing.assert_allclose(result.as_numpy("logits"), ref(model, x), rtol=1e-5, atol=1e-5)
    stats = client.get_inference_statistics("tiny")["model_stats"][0]
    assert stats["inference_count"] >= 1 and stats["execution_count"] >= 1
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0
    status, body, _ = raw(server, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and 'nv_inference_count{model="tiny",version="1"}' in text
    assert "edgeds_batch_size_bucket" in text


def _binary_body(x: np.ndarray, header: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def _good_header(x: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
        ]
    }


BAD_REQUESTS = {
    "unknown model": ("/v2/models/nope/infer", "good", None),
    "unknown input": ("/v2/models/tiny/infer", "rename", None),
    "wrong shape": ("/v2/models/tiny/infer", "shape", None),
    "wrong dtype": ("/v2/models/tiny/infer", "dtype", None),
    "header length past body": ("/v2/models/tiny/infer", "good", "99999999"),
    "header length not a number": ("/v2/models/tiny/infer", "good", "abc"),
    "header length cuts the json": ("/v2/models/tiny/infer", "good", "7"),
    "binary size mismatch": ("/v2/models/tiny/infer", "size", None),
    "unknown output": ("/v2/models/tiny/infer", "output", None),
    "malformed json": ("/v2/models/tiny/infer", "json", None),
    "body over limit": ("/v2/models/tiny/infer", "big", None),
    "gzip body inflating past the limit": ("/v2/models/tiny/infer", "gzip bomb", None),
    "corrupt gzip body": ("/v2/models/tiny/infer", "gzip corrupt", None),
    "truncated gzip body": ("/v2/models/tiny/infer", "gzip truncated", None),
    "unsupported content encoding": ("/v2/models/tiny/infer", "brotli", None),
}


ENCODING_ERRORS = {
    "gzip bomb": "inflates past the limit",
    "gzip corrupt": "not valid gzip",
    "gzip truncated": "truncated",
    "brotli": "unsupported Content-Encoding 'br'",
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_400_and_server_keeps_serving(client: Any, server: InferenceServer, case: str) -> None:
    path, variant, header_len = BAD_REQUESTS[case]
    x = sample(1)
    header = _good_header(x)
    spec = header["inputs"][0]  # type: ignore[index]
    if variant == "rename":
        spec["name"] = "image"
    elif variant == "shape":
        spec["shape"] = [1, 3, SIZE // 2, SIZE * 2]
    elif variant == "dtype":
        x = x.astype(np.float64)
        spec["datatype"] = "FP64"
        spec["parameters"]["binary_data_size"] = x.nbytes
    elif variant == "size":
        spec["parameters"]["binary_data_size"] = x.nbytes - 4
    elif variant == "output":
        header["outputs"] = [{"name": "probabilities"}]
    elif variant == "big":
        x = np.zeros((8, 3, SIZE * 4, SIZE * 2), np.float32)  # 768 KiB > 256 KiB limit
        spec["shape"] = list(x.shape)
        spec["parameters"]["binary_data_size"] = x.nbytes
    body, headers = _binary_body(x, header)
    if variant == "json":
        body, headers = b'{"inputs": [', {}
    if variant.startswith("gzip"):
        if variant == "gzip bomb":  # 1 MiB of zeros compresses to ~1 KiB; the limit is 256 KiB inflated
            x = np.zeros((64, 3, SIZE, SIZE), np.float32)
            spec["shape"] = list(x.shape)
            spec["parameters"]["binary_data_size"] = x.nbytes
            body, headers = _binary_body(x, header)
        body = gzip.compress(body)
        if variant == "gzip corrupt":
            body = body[:10] + bytes(b ^ 0x5A for b in body[10:30]) + body[30:]
        elif variant == "gzip truncated":
            body = body[: len(body) // 2]
        headers["Content-Encoding"] = "gzip"
    elif variant == "brotli":
        headers["Content-Encoding"] = "br"
    if header_len is not None:
        headers["Inference-Header-Content-Length"] = header_len
    status, payload, _ = raw(server, "POST", path, body, headers)
    assert status == (413 if variant in ("big", "gzip bomb") else 400), payload  # 413: over max_body_bytes
    assert isinstance(json.loads(payload)["error"], str)
    assert ENCODING_ERRORS.get(variant, "") in json.loads(payload)["error"]
    # still serving
    good = sample(1, seed=9)
    inp = httpclient.InferInput("input", list(good.shape), "FP32")
    inp.set_data_from_numpy(good)
    assert client.infer("tiny", [inp]).as_numpy("logits").shape == (1, 5)


def test_an_unexpected_failure_is_answered_500_and_logged_once_with_its_traceback(
    client: Any, server: InferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A request id nested deeper than orjson writes (it reads 1024 levels, writes 254) fails only when
    the answer is serialized, after inference, with a TypeError: that request gets 500 and the
    traceback is logged once; requests refused with 4xx log nothing; the server goes on serving."""
    x = sample(1, seed=4)
    header = _good_header(x)
    header["id"] = json.loads("[" * 300 + "]" * 300)
    body, headers = _binary_body(x, header)
    with caplog.at_level(logging.INFO, logger="edgeds"):
        status, payload, _ = raw(server, "POST", "/v2/models/tiny/infer", body, headers)
        assert status == 500 and "TypeError" in json.loads(payload)["error"], payload
        assert raw(server, "POST", "/v2/models/nope/infer", b"{}")[0] == 400
        assert raw(server, "POST", "/v2/models/tiny/infer", b'{"inputs": [')[0] == 400
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].levelno == logging.ERROR and "/v2/models/tiny/infer" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is TypeError
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    assert client.infer("tiny", [inp]).as_numpy("logits").shape == (1, 5)


def test_tritonclient_sees_400_for_wrong_dtype(client: Any) -> None:
    x = sample(1).astype(np.float64)
    inp = httpclient.InferInput("input", list(x.shape), "FP64")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="dtype"):
        client.infer("tiny", [inp])


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_queue_full_and_timeout_get_503(model: Path, execution: str) -> None:
    engine = start_engine(
        model,
        inline=execution == "inline",
        max_queue_delay_us=400_000,
        preferred_batch_sizes=(8,),
        max_queue_size=1,
    )
    srv = InferenceServer(engine, port=0).start()
    try:
        x = sample(1)
        body, headers = _binary_body(x, _good_header(x))
        first: list[int] = []
        t = threading.Thread(target=lambda: first.append(raw(srv, "POST", "/v2/models/tiny/infer", body, headers)[0]))
        t.start()
        deadline = time.time() + 10
        while engine.queue_depth() < 1 and time.time() < deadline:  # the first request waits for its batch
            time.sleep(0.01)
        status, payload, _ = raw(srv, "POST", "/v2/models/tiny/infer", body, headers)
        assert status == 503 and "maximum queue size" in json.loads(payload)["error"]
        t.join()
        assert first == [200]
        timed = _good_header(x)
        timed["parameters"] = {"timeout": 1000}
        body, headers = _binary_body(x, timed)
        status, payload, _ = raw(srv, "POST", "/v2/models/tiny/infer", body, headers)
        assert status == 503 and "timed out" in json.loads(payload)["error"]
        assert raw(srv, "GET", "/v2/health/live")[0] == 200
    finally:
        srv.stop(close_engines=True)


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_swap_model_without_dropping_requests(model: Path, execution: str) -> None:
    inline = execution == "inline"
    srv = InferenceServer(start_engine(model, version="1", inline=inline, instances=2), port=0).start()
    errors: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
        x = sample(1)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        while not stop.is_set():
            try:
                versions.append(c.infer("tiny", [inp]).get_response()["model_version"])
            except Exception as exc:  # noqa: BLE001 -- collected, asserted on in the test's thread
                errors.append(str(exc))
        c.close()

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        _wait_for(lambda: versions.count("1") >= 5)
        report = srv.swap_model(start_engine(model, version="2", inline=inline, instances=2))
        _wait_for(lambda: versions.count("2") >= 5)
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        srv.stop(close_engines=True)
    assert errors == []
    assert report.drained and report.old_version == "1" and report.new_version == "2"
    assert "1" in versions and versions[-1] == "2"


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _raw_infer(x: np.ndarray) -> bytes:
    """One binary-OIP infer request for ``tiny`` as it goes on the wire (head and body)."""
    body, headers = _binary_body(x, _good_header(x))
    head = (
        f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
        f"Inference-Header-Content-Length: {headers['Inference-Header-Content-Length']}\r\n\r\n"
    )
    return head.encode() + body


def test_pipelined_requests_are_answered_in_order(server: InferenceServer) -> None:
    """Many requests in one send (HTTP/1.1 pipelining), bad ones included: every one answered, in order."""
    good = _raw_infer(sample(1, seed=3))
    bad = b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
    stream = bad * 1500 + good + bad * 10 + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(stream)
        data = b""
        while data.count(b"HTTP/1.1 ") < 1512:
            chunk = sock.recv(1 << 20)
            assert chunk, "connection closed early"
            data += chunk
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
    assert statuses == [400] * 1500 + [200] + [400] * 10 + [200]


@pytest.mark.slow
def test_answers_wait_for_a_client_that_reads_late(server: InferenceServer, model: Path) -> None:
    """A pipelining client that reads nothing for a while: the server's answers fill the socket and
    queue in the transport (so engine workers hand theirs to the loop instead of writing), and once
    the client reads, every answer comes, in order and right."""
    x = sample(1, seed=5)
    infer = _raw_infer(x)
    metrics = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"  # a few KiB of answer each
    pairs = 400
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sender = threading.Thread(target=sock.sendall, args=((metrics + infer) * pairs,))
        sender.start()
        time.sleep(0.5)  # the answers pile up in the socket buffers, then wait in the server
        data = bytearray()
        while data.count(b"HTTP/1.1 ") < 2 * pairs or not data.endswith(b"}"):
            chunk = sock.recv(1 << 20)
            assert chunk, "connection closed early"
            data += chunk
        sender.join(10)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(data))]
    assert statuses == [200] * (2 * pairs)
    assert data.count(b"# TYPE nv_inference_count counter") == pairs
    last = json.loads(bytes(data[data.rindex(b"\r\n\r\n") + 4 :]))
    np.testing.assert_allclose(
        np.array(last["outputs"][0]["data"], dtype=np.float32).reshape(1, -1), ref(model, x), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_two_instances_answer_concurrent_clients(model: Path, execution: str) -> None:
    """``instances=2``: the config shows the instance group, both instances execute, every answer is right.

    Responses are written by the engine workers themselves (workers) or by the loop that ran the batch
    (inline: the 8 connections are split 4 and 4 between the two loops); 8 keep-alive clients, each
    sending its next request as soon as the previous answer arrives, check that nothing is lost, stalled
    or crossed.
    """
    engine = start_engine(model, inline=execution == "inline", max_batch_size=2, instances=2)
    srv = InferenceServer(engine, port=0).start()
    errors: list[BaseException] = []
    try:
        status, body, _ = raw(srv, "GET", "/v2/models/tiny/config")
        assert status == 200
        assert json.loads(body)["instance_group"][0]["count"] == 2

        def run_client(seed: int) -> None:
            try:
                c = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
                try:
                    for i in range(25):
                        x = sample(1 + (seed + i) % 2, seed=seed * 100 + i)
                        inp = httpclient.InferInput("input", list(x.shape), "FP32")
                        inp.set_data_from_numpy(x)
                        got = c.infer("tiny", [inp]).as_numpy("logits")
                        np.testing.assert_allclose(got, ref(model, x), atol=1e-4, rtol=1e-4)
                finally:
                    c.close()
            except BaseException as exc:  # noqa: BLE001 -- surfaced in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run_client, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[0]
        stats = json.loads(raw(srv, "GET", "/v2/models/tiny/stats")[1])["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 200
        assert set(stats["instance_executions"]) == {"0", "1"}
    finally:
        srv.stop(close_engines=True)


def test_selector_load_generator_sends_exactly_its_budget(server: InferenceServer) -> None:
    """``bench.http_closed_loop``: one thread, 4 connections, 60 queries: 60 answers, <= 4 in flight."""
    from edgeds.bench import HttpClient, http_closed_loop
    from edgeds.runtime.oip_requests import oip_binary_body

    body, headers = oip_binary_body("input", sample(1))
    client = HttpClient("127.0.0.1", server.port, "/v2/models/tiny/infer", body, headers)
    try:
        samples = http_closed_loop(client, 4, 60.0, warmup_s=0.0, max_queries=60)
        again = http_closed_loop(client, 4, 0.2, warmup_s=0.0)  # the pooled connections are reused
    finally:
        client.close()
    assert len(samples.starts) == 60 and set(samples.status) == {200}
    assert len(again.starts) > 0 and set(again.status) == {200}
    assert samples.peak_in_flight() <= 4


def test_binary_tensors_reach_onnxruntime_without_a_copy(model: Path) -> None:
    """A client that sends alike requests gets its tensor received 64-byte aligned and bound in place."""
    engine = start_engine(model, max_batch_size=1)
    srv = InferenceServer(engine, port=0).start()
    c = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
    try:
        for i in range(4):
            x = sample(1, seed=i)
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            np.testing.assert_allclose(c.infer("tiny", [inp]).as_numpy("logits"), ref(model, x), atol=1e-4, rtol=1e-4)
        bound = engine.backends[0]._bound[1]  # type: ignore[attr-defined]  # white box: the memory the last inference read
        assert bound.addresses["input"] != bound.inputs["input"].ctypes.data
        assert bound.addresses["input"] % 64 == 0
    finally:
        c.close()
        srv.stop(close_engines=True)


def test_inline_engines_and_event_loops_must_match(model: Path) -> None:
    """Loop ``i`` runs instance ``i`` of an inline engine: a server refuses one with another count, at
    construction and when it is added or swapped in later; an engine with workers fits any server."""
    two = start_engine(model, inline=True, instances=2)
    one = start_engine(model, version="2", inline=True, instances=1)
    try:
        with pytest.raises(EdgedsError, match="must match"):
            InferenceServer(two, port=0, loops=1)
        srv = InferenceServer(two, port=0)
        assert srv.loops == 2
        with pytest.raises(EdgedsError, match="must match"):
            srv.swap_model(one)
        assert srv.models["tiny"] is two
        workers = start_engine(model, version="3")
        srv.start()
        try:
            report = srv.swap_model(workers)  # a workers engine answers on any of the loops
            assert report.drained and report.old_version == "1"
            x = sample(1)
            body, headers = _binary_body(x, _good_header(x))
            conns = [http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10) for _ in range(2)]
            for conn in conns:  # both open at once: one on each loop
                conn.connect()
            _wait_for(lambda: [lane.lp.connections for lane in srv._lanes] == [1, 1])
            for conn in conns:
                conn.request("POST", "/v2/models/tiny/infer", body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                assert resp.status == 200
                length = int(resp.getheader("Inference-Header-Content-Length") or len(payload))
                assert json.loads(payload[:length])["model_version"] == "3"
                conn.close()
        finally:
            srv.stop(close_engines=True)
    finally:
        two.close()
        one.close()


def test_stop_drains_inline_engines_while_their_loops_run_and_a_server_restarts(model: Path) -> None:
    """stop(close_engines=True) answers what an inline engine still has queued (its loops run it), a
    stop after the loops are gone closes it at once instead of waiting for nobody, and a stopped
    server starts again (quickly, five times over) and serves."""
    engine = start_engine(model, inline=True, instances=2, max_queue_delay_us=300_000, preferred_batch_sizes=(8,))
    srv = InferenceServer(engine, port=0).start()
    x = sample(1)
    body, headers = _binary_body(x, _good_header(x))
    answers: list[int] = []
    client = threading.Thread(
        target=lambda: answers.append(raw(srv, "POST", "/v2/models/tiny/infer", body, headers)[0])
    )
    client.start()
    _wait_for(lambda: engine.queue_depth() == 1)  # waiting 300 ms for a batch of 8
    started = time.monotonic()
    srv.stop(close_engines=True)
    client.join(10)
    assert answers == [200] and time.monotonic() - started < 5
    assert engine.state == "closed"

    again = start_engine(model, version="2", inline=True, instances=2)
    srv = InferenceServer(again, port=0)
    before = set(threading.enumerate())  # the module's own servers may be running
    for _ in range(5):
        started = time.monotonic()
        srv.start()
        assert raw(srv, "GET", "/v2/health/ready")[0] == 200
        srv.stop()
        assert time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t not in before and t.name.startswith("oip-server")]
    started = time.monotonic()
    srv.stop(close_engines=True)  # the loops are gone: closed at once, not drained for 10 s
    assert again.state == "closed" and time.monotonic() - started < 2
