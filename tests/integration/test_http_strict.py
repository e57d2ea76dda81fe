"""Strict HTTP/1.1 (RFC 9110, RFC 9112) against a real server over loopback: every malformed framing
case gets its 4xx/5xx over a raw socket (never a reset or a hang), the routes' 404 / 405, Triton's
repository index with the real ``tritonclient.http``, the failure counters in ``/metrics`` and infer
addressed by the model card's version."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds.bundle import load_bundle
from edgeds.config import Batching
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.testing import tiny_classifier

pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

SIZE = 8
MAX_BODY = 64 * 1024
INFER = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\n"
HEALTH = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceServer]:
    model = tiny_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx", size=SIZE)
    engine = Engine(
        "onnxruntime",
        model,
        options={"intra_op_num_threads": 1},
        batching=Batching(max_batch_size=4),
        name="tiny",
        version="1",
    ).start()
    srv = InferenceServer(engine, port=0, max_body_bytes=MAX_BODY).start()
    yield srv
    srv.stop(close_engines=True)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, header fields (lower-case names) and body of one answer on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(fields["content-length"]):
        chunk = sock.recv(1 << 16)
        assert chunk, "closed in the middle of an answer"
        body += chunk
    return int(status_line.split(" ")[1]), fields, body


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (EOF within 5 s; it drains what is left first)."""
    sock.settimeout(5)
    try:
        while sock.recv(1 << 16):
            pass
    except TimeoutError:
        return False
    return True


def health(server: InferenceServer) -> int:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(HEALTH)
        return read_response(sock)[0]


BIG_FIELD = b"X-Big: " + b"a" * (70 * 1024) + b"\r\n"

# id: (wire, status, closes): closes True = the framing is lost and the connection is closed after
# the answer; False = the connection goes on (a health check is sent on it next)
FRAMING: dict[str, tuple[bytes, int, bool]] = {
    "Content-Length +2": (INFER + b"Content-Length: +2\r\n\r\n{}", 400, True),
    "Content-Length 1_0": (INFER + b"Content-Length: 1_0\r\n\r\n{}", 400, True),
    "Content-Length with inner space": (INFER + b"Content-Length: 1 2\r\n\r\n{}", 400, True),
    "Content-Length negative": (INFER + b"Content-Length: -1\r\n\r\n", 400, True),
    "Content-Length hex": (INFER + b"Content-Length: 0x2\r\n\r\n{}", 400, True),
    "Content-Length empty": (INFER + b"Content-Length:\r\n\r\n", 400, True),
    "two Content-Length values": (INFER + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, True),
    "Content-Length list that disagrees": (INFER + b"Content-Length: 2, 3\r\n\r\n{}", 400, True),
    "identical Content-Lengths folded": (
        b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        200,
        False,
    ),
    "Content-Length with OWS": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nContent-Length:  0 \r\n\r\n", 200, False),
    "space before the colon": (INFER + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, True),
    "tab before the colon": (INFER + b"Content-Length\t: 2\r\n\r\n{}", 400, True),
    "NUL in a field name": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-\x00A: 1\r\n\r\n", 400, True),
    "NUL in a field value": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400, True),
    "non-token field name": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX(A): 1\r\n\r\n", 400, True),
    "field line without a colon": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-A 1\r\n\r\n", 400, True),
    "no Host": (b"GET /v2/health/live HTTP/1.1\r\n\r\n", 400, True),
    "two Hosts": (b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, True),
    "HTTP/1.0 without Host": (b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, False),
    "HTTP/9.9": (b"GET /v2/health/live HTTP/9.9\r\nHost: t\r\n\r\n", 505, True),
    "HTTP/2.0": (b"GET /v2/health/live HTTP/2.0\r\nHost: t\r\n\r\n", 505, True),
    "HTTP/1.2": (b"GET /v2/health/live HTTP/1.2\r\nHost: t\r\n\r\n", 505, True),
    "garbage version": (b"GET /v2/health/live HTTX/1.1\r\nHost: t\r\n\r\n", 400, True),
    "lower-case version": (b"GET /v2/health/live http/1.1\r\nHost: t\r\n\r\n", 400, True),
    "version with a suffix": (b"GET /v2/health/live HTTP/1.1x\r\nHost: t\r\n\r\n", 400, True),
    "request line without a version": (b"GET /v2/health/live\r\nHost: t\r\n\r\n", 400, True),
    "two spaces in the request line": (b"GET  /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n", 400, True),
    "method not a token": (b"G(T /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n", 400, True),
    "Content-Length and Transfer-Encoding": (
        INFER + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        True,
    ),
    "bare LF line endings": (b"GET /v2/health/live HTTP/1.1\nHost: t\n\n", 400, True),
    "one bare LF among CRLFs": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n", 400, True),
    "bare CR": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\rX-A: 1\r\n\r\n", 400, True),
    "obs-fold": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n 2\r\n\r\n", 400, True),
    "head over the limit": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n" + BIG_FIELD + b"\r\n", 431, True),
    "endless head": (b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n" + BIG_FIELD * 15, 431, True),
    "body over the limit": (INFER + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1) + b"x" * (MAX_BODY + 1), 413, False),
    "body over the limit, 100-continue": (
        INFER + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (MAX_BODY + 1),
        413,
        True,
    ),
    "huge Content-Length": (INFER + b"Content-Length: %d\r\n\r\n" % 10**30, 413, True),
    "chunked body over the limit": (
        INFER + b"Transfer-Encoding: chunked\r\n\r\n%X\r\n" % (MAX_BODY + 1) + b"x" * 1000,
        413,
        True,
    ),
    "empty lines before the request line": (b"\r\n" + HEALTH, 200, False),
    "two empty lines before the request line": (b"\r\n\r\n" + HEALTH, 200, False),
    "empty lines after a request": (HEALTH + b"\r\n\r\n", 200, False),
}


@pytest.mark.parametrize("case", list(FRAMING))
def test_each_framing_case_gets_its_status_and_the_server_answers_the_next(server: InferenceServer, case: str) -> None:
    wire, status, closes = FRAMING[case]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        errors: list[OSError] = []

        def send() -> None:  # a large request may still be going out when the answer comes
            try:
                sock.sendall(wire)
            except OSError as exc:  # asserted below: the server must not reset the connection
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        got, fields, body = read_response(sock)
        sender.join(timeout=10)
        assert not sender.is_alive() and errors == []
        assert got == status, body
        if status >= 400:
            assert isinstance(json.loads(body)["error"], str)
        if closes:
            assert fields.get("connection") == "close"
            assert closed_by_server(sock)
        else:
            sock.sendall(HEALTH)
            assert read_response(sock)[0] == 200
    assert health(server) == 200


ROUTES = {
    "POST to an unknown path": ("POST", "/v2/nothing/here", 404, None),
    "GET to an unknown path": ("GET", "/v2/nothing/here", 404, None),
    "POST to an unknown model action": ("POST", "/v2/models/tiny/explode", 404, None),
    "GET on infer": ("GET", "/v2/models/tiny/infer", 405, "POST"),
    "POST to health": ("POST", "/v2/health/live", 405, "GET"),
    "PUT to a model's metadata": ("PUT", "/v2/models/tiny", 405, "GET"),
    "DELETE on /metrics": ("DELETE", "/metrics", 405, "GET"),
    "GET on the repository index": ("GET", "/v2/repository/index", 405, "POST"),
}


@pytest.mark.parametrize("case", list(ROUTES))
def test_unknown_paths_are_404_and_wrong_methods_405_with_allow(server: InferenceServer, case: str) -> None:
    method, path, status, allow = ROUTES[case]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{{}}".encode())
        got, fields, body = read_response(sock)
        assert got == status, body
        assert fields.get("allow") == allow
        sock.sendall(HEALTH)  # the connection goes on
        assert read_response(sock)[0] == 200


def test_repository_index_from_tritonclient(server: InferenceServer) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.get_model_repository_index() == [{"name": "tiny", "version": "1", "state": "READY"}]
    finally:
        client.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for body, status in ((b'{"ready": true}', 200), (b'{"ready": 1}', 400), (b"[", 400)):
            sock.sendall(
                b"POST /v2/repository/index HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            got, _, payload = read_response(sock)
            assert got == status, payload
            if status == 200:
                assert json.loads(payload) == [{"name": "tiny", "version": "1", "state": "READY"}]


def failures_in_metrics(server: InferenceServer) -> dict[str, float]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200
    found = re.findall(
        r'^edgeds_http_request_failures_total\{class="(\dxx)",code="(\d+)"\} (\S+)$', body.decode(), re.M
    )
    return {code: float(value) for klass, code, value in found if klass[0] == code[0]}


def test_every_failed_request_is_counted_in_metrics(server: InferenceServer) -> None:
    """Framing errors that never reach a route, route errors and model errors: each counts once."""
    before = failures_in_metrics(server)
    sent = {"400": 0, "404": 0, "405": 0, "505": 0}
    for i in range(40):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            kind = i % 5
            if kind == 0:
                sock.sendall(INFER + b"Content-Length: +2\r\n\r\n{}")  # framing: 400, closed
                code = "400"
            elif kind == 1:
                sock.sendall(b"GET /v2/health/live HTTP/9.9\r\nHost: t\r\n\r\n")
                code = "505"
            elif kind == 2:
                sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                code = "404"
            elif kind == 3:
                sock.sendall(b"POST /v2/health/live HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                code = "405"
            else:
                sock.sendall(INFER + b"Content-Length: 2\r\n\r\n{}")  # reaches the model: no inputs
                code = "400"
            assert read_response(sock)[0] == int(code)
            sent[code] += 1
    after = failures_in_metrics(server)
    for code, n in sent.items():
        assert after.get(code, 0.0) - before.get(code, 0.0) == n, (code, before, after)
    assert server.failures.total() >= 40


def test_infer_by_the_card_version(tmp_path: Path) -> None:
    """A bundle's engine serves its model card's version (``/versions/1.0.7/infer``); the bundle's
    monotonic version is its release, named in /metrics, and not an address."""
    from edgeds.sim.bundles import make_bundle

    path = make_bundle(tmp_path / "bundle", 7, None)
    with load_bundle(path, verify=False) as bundle:
        engine = Engine.from_bundle(bundle).start()
    assert (engine.version, engine.release) == ("1.0.7", "7")
    srv = InferenceServer(engine, port=0).start()
    client = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
    try:
        x = np.zeros((1, 3, 160, 160), np.float32)
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("tiny", [inp], model_version="1.0.7")
        assert result.get_response()["model_version"] == "1.0.7"
        assert result.as_numpy("logits").shape == (1, 5)
        with pytest.raises(InferenceServerException, match="unknown version"):
            client.infer("tiny", [inp], model_version="7")
        assert client.get_model_metadata("tiny", model_version="1.0.7")["versions"] == ["1.0.7"]
        index: Any = client.get_model_repository_index()
        assert index == [{"name": "tiny", "version": "1.0.7", "state": "READY"}]
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            text = read_response(sock)[2].decode()
        assert 'edgeds_model_info{model="tiny",version="1.0.7",release="7"} 1' in text
    finally:
        client.close()
        srv.stop(close_engines=True)
