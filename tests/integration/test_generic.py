"""``task: generic``: a model with two non-image inputs (float32 and int64) and two outputs.

Built with ``onnx.helper`` (:mod:`._generic_models`). It compiles at INT8 on ONNX Runtime behind
the generic gate (per-output cosine, argmax agreement of the ``kind: logits`` output, max abs
error) with calibration and validation generated from the inputs' ``values:`` or read from an
``.npz`` per split, serves over loopback and answers ``tritonclient.http`` like ONNX Runtime run
on the model, passes the device's golden check (every input in the extra golden file) and runs
through ``edgeds run`` on an ``.npz``. A card that does not fit the model is one line before any
work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds.bundle import load_bundle
from edgeds.compile import compile_model
from edgeds.compile.gates.image import cosine_rows
from edgeds.deploy.device.health import health_check
from edgeds.deploy.device.store import Store
from edgeds.errors import DatasetError, InvalidModel
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.engine import thread_options
from edgeds.runtime.tensors import run_tensors

from ._generic_models import CLASSES, FEATURES, TOKENS, VOCAB, generic_model
from ._loose_profile import private_cache, write_profile  # noqa: F401 (the cache_env fixture)

ort = pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")

DATATYPES = {"float32": "FP32", "int64": "INT64"}


def feeds(rows: int, seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((rows, FEATURES)).astype(np.float32),
        "ids": rng.integers(0, VOCAB, (rows, TOKENS)).astype(np.int64),
    }


def reference(model: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    scores, feat = session.run(["scores", "feat"], inputs)
    return {"scores": scores, "feat": feat}


def close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert float(cosine_rows(want, got).mean()) >= 0.99


def test_generic_compiles_at_int8_and_serves(tmp_path: Path, cache_env: Path) -> None:
    model = generic_model(tmp_path / "m")
    profile = write_profile(tmp_path / "p.yaml", "gen-ort", "generic test profile", "onnxruntime")
    result = compile_model(model, profile, precision="int8", out=tmp_path / "bundle")
    assert (result.backend, result.precision) == ("onnxruntime", "int8")
    attempt = result.report.attempts[0]
    assert attempt.outcome == "passed" and attempt.accuracy is not None
    assert set(attempt.accuracy["cosine"]) == {"scores", "feat"} and set(attempt.accuracy["agreement"]) == {"scores"}
    assert result.report.validation_samples == 48 and result.report.calibration_samples == 16
    # the report table shows the generic gate's figures under their own columns
    columns = result.report.columns()
    assert columns[3:6] == ["agreement", "cosine", "max abs err"]
    cells = dict(zip(columns, result.report.rows()[0], strict=True))
    assert cells["cosine"] and cells["agreement"] and cells["max abs err"]
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["task"] == "generic" and manifest["accuracy"]["cosine"] >= 0.95
    assert manifest["schema_version"] == 3  # an edgeds that knows schema 2 says "upgrade", not "unknown task"
    with load_bundle(result.bundle, verify=False) as bundle:
        extra = bundle.golden_extra_inputs()
        assert sorted(extra) == ["ids", "x"] and extra["ids"].dtype == np.int64
        engine = Engine.from_bundle(bundle, options=thread_options("onnxruntime", 1)).start()
    server = InferenceServer(engine, port=0).start()
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        inputs = feeds(5)
        want = reference(model, inputs)
        for binary in (True, False):
            tensors = []
            for name, array in inputs.items():
                tensor = httpclient.InferInput(name, list(array.shape), DATATYPES[array.dtype.name])
                tensor.set_data_from_numpy(array, binary_data=binary)
                tensors.append(tensor)
            asked = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("scores", "feat")]
            answer = client.infer("gen", tensors, outputs=asked)
            close(answer.as_numpy("scores"), want["scores"])
            close(answer.as_numpy("feat"), want["feat"])
            assert answer.as_numpy("scores").shape == (5, CLASSES)
        # the HIL conformance check feeds the golden tensors (no image input here)
        from edgeds.hil.runner import RunResult, _conformance

        run = RunResult("local", ["conformance"], 0.0)
        _conformance(run, "local", f"http://127.0.0.1:{server.port}", result.bundle)
        assert [(c.name, c.passed) for c in run.checks] == [("golden_outputs", True)], run.checks
    finally:
        client.close()
        server.stop(close_engines=True)

    from edgeds.bench.commands import bench_bundle  # edgeds bench feeds every tensor input

    single = bench_bundle(result.bundle, scenarios=("single",), duration_s=0.3, threads=1)["scenarios"]["single"]
    assert single["ok"] > 0 and single["errors"] == 0, single

    store = Store(tmp_path / "store")  # the device's golden check, in-process (no agent runs)
    store.ensure()
    shutil.copytree(result.bundle, store.releases / "r1")
    checked = health_check(store, "r1", {})
    assert (checked["mode"], checked["golden"]) == ("in_process", "ok")

    np.savez(tmp_path / "in.npz", **dict[str, Any](feeds(3)))
    ran = run_tensors(result.bundle, tmp_path / "in.npz", threads=1)
    close(ran.outputs["scores"], reference(model, feeds(3))["scores"])
    cli = subprocess.run(
        [sys.executable, "-m", "edgeds", "run", str(result.bundle), "-i", str(tmp_path / "in.npz"), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    outputs = json.loads(cli.stdout)["outputs"]
    assert outputs["scores"]["shape"] == [3, CLASSES] and len(outputs["feat"]["data"]) == 3

    from edgeds.errors import ConfigError
    from edgeds.inspection.runner import open_engine

    with pytest.raises(ConfigError, match="inspection needs an image-classification model; gen is generic"):
        open_engine(bundle=result.bundle, verify=False)  # inspection decides on class scores only

    again = compile_model(model, profile, precision="int8", out=tmp_path / "again")
    assert again.report.attempts[0].cached


def test_generic_data_from_npz_files(tmp_path: Path, cache_env: Path) -> None:
    model = generic_model(tmp_path / "m")
    np.savez(tmp_path / "m" / "val.npz", **dict[str, Any](feeds(20, 1)))
    np.savez(tmp_path / "m" / "cal.npz", **dict[str, Any](feeds(10, 2)))
    card = tmp_path / "m" / "gen.yaml"
    card.write_text(card.read_text() + "data_files: {validation: val.npz, calibration: cal.npz}\n")
    profile = write_profile(tmp_path / "p.yaml", "gen-ort", "generic test profile", "onnxruntime")
    result = compile_model(model, profile, precision="int8", out=tmp_path / "bundle")
    assert result.report.validation_samples == 20 and result.report.calibration_samples == 10

    np.savez(tmp_path / "m" / "val.npz", x=feeds(20)["x"])
    with pytest.raises(DatasetError, match=r"val\.npz: holds \['x'\], the card's inputs are \['x', 'ids'\]"):
        compile_model(model, profile, precision="int8", out=tmp_path / "b2")


def test_a_card_that_does_not_fit_is_one_line(tmp_path: Path, cache_env: Path) -> None:
    model = generic_model(tmp_path / "m")
    card = tmp_path / "m" / "gen.yaml"
    card.write_text(card.read_text().replace("dtype: int64", "dtype: int32").replace("name: feat", "name: feats"))
    profile = write_profile(tmp_path / "p.yaml", "gen-ort", "generic test profile", "onnxruntime")
    with pytest.raises(InvalidModel) as caught:
        compile_model(model, profile, precision="int8", out=tmp_path / "bundle")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert "takes int64 but the card says dtype int32: set its dtype in inputs to int64" in lines[0]
    assert "output(s) ['feats'] are not model outputs" in lines[1]


def test_generic_compiles_at_int8_on_openvino(tmp_path: Path, cache_env: Path) -> None:
    pytest.importorskip("openvino")
    model = generic_model(tmp_path / "m")
    profile = write_profile(tmp_path / "p.yaml", "gen-ov", "generic test profile", "openvino")
    result = compile_model(model, profile, precision="int8", out=tmp_path / "bundle")
    first = result.report.attempts[0]
    assert (first.backend, first.variant) == ("openvino", "int8") and first.outcome in ("passed", "failed"), first
    assert first.accuracy is not None and set(first.accuracy["cosine"]) == {"scores", "feat"}
