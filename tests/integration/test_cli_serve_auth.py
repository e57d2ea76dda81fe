"""``edgeds serve`` with API keys (flag, key file, environment) and TLS: a real process on loopback."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from edgeds.sim.bundles import make_bundle
from edgeds.sim.certs import make_certificates

from ._serve import json_banner

pytest.importorskip("onnxruntime")

FLAG_KEY = "flag-key-0123456789abcdef"
FILE_KEY = "file-key-0123456789abcdef"
ENV_KEY = "env-key-0123456789abcdef"


def _status(port: int, path: str, context: ssl.SSLContext, key: str | None = None) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_serve_with_keys_and_tls(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", 1, None)
    certs = make_certificates(tmp_path / "tls")
    key_file = tmp_path / "keys"
    key_file.write_text(f"# the second key\n{FILE_KEY}\n")
    exe = Path(sys.executable).parent / "edgeds"
    command = [str(exe), "serve", str(bundle), "--port", "0", "--threads", "1", "--json"]
    command += ["--api-key", FLAG_KEY, "--api-key-file", str(key_file)]
    command += ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "EDGEDS_API_KEY": ENV_KEY},
    )
    try:
        assert proc.stdout is not None
        info = json_banner(proc.stdout)
        assert info["url"].startswith("https://127.0.0.1:")
        assert info["api_keys"] == 3 and info["tls"] is True
        port = int(info["url"].rsplit(":", 1)[1])
        ca = ssl.create_default_context(cafile=str(certs.ca))
        assert _status(port, "/v2/health/live", ca) == 200
        assert _status(port, "/v2/models/tiny", ca) == 401
        assert _status(port, "/metrics", ca) == 401
        for key in (FLAG_KEY, FILE_KEY, ENV_KEY):
            assert _status(port, "/v2/models/tiny", ca, key) == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    for key in (FLAG_KEY, FILE_KEY, ENV_KEY):
        assert key not in err


def test_serve_refuses_half_a_tls_setting(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "edgeds"
    proc = subprocess.run(
        [str(exe), "serve", str(tmp_path / "nothing"), "--tls-cert", str(tmp_path / "c.pem")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--tls-cert and --tls-key go together" in proc.stderr
