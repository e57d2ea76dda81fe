"""Only trusted callers: API keys and TLS on a real server over loopback (127.0.0.1, port 0)."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil
import pytest

from edgeds.config import Batching, ServerLimits
from edgeds.errors import EdgedsError
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.auth import ApiKeys, client_tls_context, load_api_keys, server_tls_context
from edgeds.runtime.testing import tiny_classifier
from edgeds.sim.certs import SimCertificates, make_certificates

pytest.importorskip("onnxruntime")

SIZE = 16
KEY = "k-" + "a1b2c3d4" * 4
OLD_KEY = "old-" + "9" * 28


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_classifier(tmp_path_factory.mktemp("m") / "tiny.onnx", size=SIZE)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SimCertificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def _engine(model: Path) -> Engine:
    batching = Batching.model_validate({"max_batch_size": 4})
    return Engine(
        "onnxruntime", model, options={"intra_op_num_threads": 1}, batching=batching, name="tiny", version="1"
    ).start()


def _infer_body() -> bytes:
    x = np.zeros((1, 3, SIZE, SIZE), dtype=np.float32)
    return json.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()


def _ask(
    port: int,
    method: str,
    path: str,
    key: str | None = None,
    body: bytes | None = None,
    tls: ssl.SSLContext | None = None,
    scheme: str = "Bearer",
) -> tuple[int, dict[str, str], bytes]:
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"{scheme} {key}"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


KEYED = [
    ("POST", "/v2/models/tiny/infer"),
    ("POST", "/v2/models/tiny/versions/1/infer"),
    ("GET", "/v2/models/tiny"),
    ("GET", "/v2/models/tiny/ready"),
    ("GET", "/v2/models/tiny/config"),
    ("GET", "/v2/models/tiny/stats"),
    ("GET", "/v2/models/stats"),
    ("GET", "/v2"),
    ("GET", "/no/such/path"),
]


@pytest.fixture(scope="module", params=["metrics-keyed", "metrics-public"])
def keyed(model: Path, request: pytest.FixtureRequest) -> Iterator[InferenceServer]:
    public = request.param == "metrics-public"
    srv = InferenceServer(_engine(model), port=0, api_keys=[KEY, OLD_KEY], metrics_public=public).start()
    yield srv
    srv.stop(close_engines=True)


@pytest.mark.parametrize(("method", "path"), KEYED)
def test_keyed_routes_need_the_key(keyed: InferenceServer, method: str, path: str) -> None:
    body = _infer_body() if method == "POST" else None
    status, headers, payload = _ask(keyed.port, method, path, body=body)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert "error" in json.loads(payload)
    status, headers, _ = _ask(keyed.port, method, path, key="wrong-" + KEY, body=body)
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    status, _, _ = _ask(keyed.port, method, path, key=KEY[:-1], body=body)  # a prefix is no key
    assert status == 401
    status, _, _ = _ask(keyed.port, method, path, key=KEY, body=body, scheme="Basic")
    assert status == 401
    expected = 404 if path == "/no/such/path" else 200
    for key in (KEY, OLD_KEY):  # either key of a rotation
        status, _, _ = _ask(keyed.port, method, path, key=key, body=body)
        assert status == expected, (key, path)
    status, _, _ = _ask(keyed.port, method, path, key=KEY, body=body, scheme="bearer")  # the scheme's case is free
    assert status == expected


def test_health_is_open_and_metrics_as_configured(keyed: InferenceServer) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/health/ready/"):
        assert _ask(keyed.port, "GET", path)[0] == 200
    public = "/metrics" in keyed._open_paths
    status, headers, body = _ask(keyed.port, "GET", "/metrics")
    if public:
        assert status == 200 and b"edgeds_" in body
    else:
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    status, _, body = _ask(keyed.port, "GET", "/metrics", key=KEY)
    assert status == 200 and b"edgeds_" in body


def test_keys_are_never_logged(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        srv = InferenceServer(_engine(model), port=0, api_keys=[KEY]).start()
        try:
            assert _ask(srv.port, "GET", "/v2", key="wrong-" + KEY)[0] == 401
            assert _ask(srv.port, "GET", "/v2", key=KEY)[0] == 200
        finally:
            srv.stop(close_engines=True)
    assert KEY not in caplog.text
    assert KEY not in repr(ApiKeys([KEY]))


def test_keys_replaced_while_serving(model: Path) -> None:
    srv = InferenceServer(_engine(model), port=0).start()
    try:
        assert not srv.keyed
        assert _ask(srv.port, "GET", "/v2")[0] == 200
        srv.set_api_keys([KEY])
        assert srv.keyed
        assert _ask(srv.port, "GET", "/v2")[0] == 401
        assert _ask(srv.port, "GET", "/v2", key=KEY)[0] == 200
        srv.set_api_keys([OLD_KEY])
        assert _ask(srv.port, "GET", "/v2", key=KEY)[0] == 401
        srv.set_api_keys([])
        assert _ask(srv.port, "GET", "/v2")[0] == 200
    finally:
        srv.stop(close_engines=True)


def test_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# rotation\n{KEY}\n\n  {OLD_KEY}  \n")
    monkeypatch.setenv("EDGEDS_API_KEY", "from-env-1,from-env-2")
    keys = load_api_keys(["given"], key_file)
    assert len(keys) == 5
    assert keys.accepts(f"Bearer {OLD_KEY}") and keys.accepts("Bearer from-env-2") and keys.accepts("Bearer given")
    assert not keys.accepts(None) and not keys.accepts("Bearer") and not keys.accepts(KEY)
    assert len(load_api_keys(environ=False)) == 0
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(EdgedsError, match="holds no key"):
        load_api_keys(key_file=tmp_path / "empty")
    for bad in ("", "two words", "tab\tkey", "clé"):
        with pytest.raises(EdgedsError, match="visible ASCII") as info:
            ApiKeys([bad])
        assert bad not in str(info.value) or not bad


@pytest.fixture(scope="module", params=["workers", "inline"])
def tls_server(model: Path, certs: SimCertificates, request: pytest.FixtureRequest) -> Iterator[InferenceServer]:
    inline = request.param == "inline"
    batching = Batching.model_validate({"max_batch_size": 4})
    engine = Engine(
        "onnxruntime", model, options={"intra_op_num_threads": 1}, batching=batching, name="tiny", version="1"
    ).start(inline=inline)
    srv = InferenceServer(engine, port=0, api_keys=[KEY], tls=server_tls_context(certs.cert, certs.key)).start()
    assert srv.url.startswith("https://")
    yield srv
    srv.stop(close_engines=True)


def test_tls_with_keys(tls_server: InferenceServer, certs: SimCertificates) -> None:
    """Over HTTPS, verified against the fixture's CA: the same answers, infer included (workers and inline)."""
    ca = ssl.create_default_context(cafile=str(certs.ca))
    port = tls_server.port
    assert _ask(port, "GET", "/v2/health/ready", tls=ca)[0] == 200
    assert _ask(port, "POST", "/v2/models/tiny/infer", body=_infer_body(), tls=ca)[0] == 401
    assert _ask(port, "POST", "/v2/models/tiny/infer", key="nope", body=_infer_body(), tls=ca)[0] == 401
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ca)
    try:  # several requests on one kept-alive TLS connection
        for _ in range(5):
            conn.request(
                "POST",
                "/v2/models/tiny/infer",
                body=_infer_body(),
                headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            reply = json.loads(response.read())
            assert response.status == 200
            assert reply["outputs"][0]["shape"][0] == 1
    finally:
        conn.close()
    pinned = client_tls_context(certs.cert)  # the server's own certificate as the trust anchor
    assert _ask(port, "GET", "/v2", key=KEY, tls=pinned)[0] == 200


def test_tls_refuses_plain_http_and_untrusted_clients(tls_server: InferenceServer, certs: SimCertificates) -> None:
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        _ask(tls_server.port, "GET", "/v2/health/live")  # cleartext on a TLS port: no HTTP answer
    untrusted = ssl.create_default_context()  # the system's CAs: the fixture's CA is not among them
    with pytest.raises(ssl.SSLCertVerificationError):
        _ask(tls_server.port, "GET", "/v2/health/live", tls=untrusted)
    ca = ssl.create_default_context(cafile=str(certs.ca))
    assert _ask(tls_server.port, "GET", "/v2/health/live", tls=ca)[0] == 200  # still serving


def test_tls_files_that_do_not_load(tmp_path: Path, certs: SimCertificates) -> None:
    other = make_certificates(tmp_path / "other")
    with pytest.raises(EdgedsError, match="cannot load the TLS certificate"):
        server_tls_context(certs.cert, other.key)  # a key that is not the certificate's
    with pytest.raises(EdgedsError, match="cannot load the TLS certificate"):
        server_tls_context(tmp_path / "missing.pem", certs.key)


def test_tls_reserve_drops_clients_stuck_in_the_handshake(model: Path, certs: SimCertificates) -> None:
    """At the cap, raw TCP clients that never send a ClientHello hold the reserved place: each new
    one drops the oldest while it is still in its handshake, the acceptor does not spin (well under
    one core over 2 s), and a health check over TLS gets through within a few seconds."""
    limits = ServerLimits(max_connections=2, reserve_connections=1)
    srv = InferenceServer(_engine(model), port=0, limits=limits, tls=server_tls_context(certs.cert, certs.key)).start()
    ca = client_tls_context(certs.ca)
    try:
        with ExitStack() as stack:
            for _ in range(2):  # the cap, held by handshaken TLS connections
                raw = stack.enter_context(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
                stack.enter_context(ca.wrap_socket(raw, server_hostname="localhost"))
            for _ in range(3):  # silent clients: the reserved place, then waiting in the backlog
                stack.enter_context(socket.create_connection(("127.0.0.1", srv.port)))
            time.sleep(0.5)
            process = psutil.Process()
            before = process.cpu_times()
            time.sleep(2)
            after = process.cpu_times()
            used = (after.user - before.user) + (after.system - before.system)
            assert used < 0.5, f"{used:.2f} s of CPU in 2 s with silent clients waiting"
            conn = http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=5, context=ca)
            try:
                conn.request("GET", "/v2/health/live")
                assert conn.getresponse().status == 200
            finally:
                conn.close()
    finally:
        srv.stop(close_engines=True)


def test_a_keyless_request_is_refused_before_its_body_is_read(keyed: InferenceServer) -> None:
    """The key is checked on the head: no 100 Continue, no body taken in, the connection closed."""
    head = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n"
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=10) as sock:
        sock.sendall(head + b"Expect: 100-continue\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in answer
        sock.settimeout(5)
        while sock.recv(65536):  # then the server closes (what arrives meanwhile is dropped)
            pass
    rss = psutil.Process().memory_info().rss  # the server runs in this process
    chunk = b"\0" * (1 << 20)
    with ExitStack() as stack:
        for _ in range(4):  # keyless 60 MB bodies: the first 8 MB each are sent, none is kept
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", keyed.port), timeout=10))
            sock.sendall(head + b"\r\n")
            with contextlib.suppress(OSError):  # the server may close while this is still sending
                for _ in range(8):
                    sock.sendall(chunk)
        assert _ask(keyed.port, "GET", "/v2/health/live")[0] == 200
        assert psutil.Process().memory_info().rss - rss < 16 * 2**20
