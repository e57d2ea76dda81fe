"""Models with tensor inputs besides the image compile, serve and run.

Two fixtures built with ``onnx.helper``: image + float32 ``aux`` vector, and image + int64
token ids (embedding gather; integer inputs are never quantized). Each compiles at FP32 and
INT8 on ONNX Runtime and OpenVINO (where installed) with calibration and evaluation fed every
input per the card, keeps every input in its golden set, serves in-process over loopback and
answers ``tritonclient.http`` (binary and JSON) like ONNX Runtime run directly on the model;
``edgeds run`` reads an ``.npz`` with one array per input name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeds import backends
from edgeds.bundle import load_bundle
from edgeds.compile import compile_model
from edgeds.compile.gates.image import cosine_rows
from edgeds.compile.tiny import SIZE
from edgeds.deploy.device.health import health_check
from edgeds.deploy.device.store import Store
from edgeds.errors import RequestError
from edgeds.runtime import Engine, InferenceServer
from edgeds.runtime.classify import classify_file
from edgeds.runtime.engine import thread_options

from ._loose_profile import private_cache, write_profile  # noqa: F401 (the cache_env fixture)
from ._multi_input_models import AUX, TOKENS, VOCAB, flag_input, token_input, two_input

ort = pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")

VALIDATION = 40
CALIBRATION = 16
MODELS: dict[str, Callable[[Path, int, int], Path]] = {"aux": two_input, "ids": token_input, "flags": flag_input}
DATATYPES = {"float32": "FP32", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Path:
    return MODELS[request.param](tmp_path_factory.mktemp(request.param), VALIDATION, CALIBRATION)


def extra_names(model: Path) -> list[str]:
    kind = next(k for k in MODELS if model.parent.name.startswith(k))
    return {"aux": ["aux"], "ids": ["ids"], "flags": ["ids", "mask"]}[kind]


def extra_values(model: Path, rows: int) -> dict[str, np.ndarray]:
    """Request values of every extra input of ``model``."""
    rng = np.random.default_rng(9)
    names = extra_names(model)
    if names == ["aux"]:
        return {"aux": rng.standard_normal((rows, AUX)).astype(np.float32)}
    if names == ["ids"]:
        return {"ids": rng.integers(0, VOCAB, (rows, TOKENS)).astype(np.int64)}
    return {
        "ids": rng.integers(0, VOCAB, (rows, TOKENS)).astype(np.int32),
        "mask": rng.integers(0, 2, (rows, TOKENS)).astype(bool),
    }


def reference(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["logits"], feeds)[0]
    return out


def infer(client: Any, feeds: dict[str, np.ndarray], binary: bool) -> np.ndarray:
    tensors = []
    for name, array in feeds.items():
        datatype = DATATYPES[array.dtype.name]
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
    got: np.ndarray = client.infer("tiny", tensors, outputs=outputs).as_numpy("logits")
    return got


def close_enough(precision: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if precision == "fp32":
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    else:  # the random tiny model's margins are small: INT8 keeps the direction, not every value
        cosine = cosine_rows(want, got)
        assert float(cosine.min()) >= 0.9 and float(cosine.mean()) >= 0.98


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_multi_input_compiles_and_serves(model: Path, backend: str, precision: str, tmp_path: Path) -> None:
    availability = backends.probe(backend)
    if not availability.available:
        pytest.skip(f"{backend} runtime not available here: {availability.reason}")
    profile = write_profile(
        tmp_path / f"multi-{backend}.yaml", f"multi-{backend}", "a multi-input test profile", backend
    )
    result = compile_model(model, profile, precision=precision, out=tmp_path / "bundle")
    assert result.backend == backend and result.precision == precision
    assert all(a.outcome == "passed" for a in result.report.attempts), result.report.as_dict()
    names = extra_names(model)
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert sorted(i["name"] for i in manifest["io"]["inputs"]) == sorted(["input", *names])
    with load_bundle(result.bundle, verify=False) as bundle:
        images, outputs = bundle.golden()
        extra = bundle.golden_extra_inputs()
        assert set(extra) == set(names)
        assert all(len(v) == len(images) == len(outputs["logits"]) for v in extra.values())
        # the golden outputs are the artifact's answers to every golden input
        want = reference(model, {"input": images, **extra})
        close_enough(precision, outputs["logits"], want)
        engine = Engine.from_bundle(bundle, options=thread_options(backend, 1)).start()
    server = InferenceServer(engine, port=0).start()
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", concurrency=4)
    try:
        rng = np.random.default_rng(3)
        x = rng.random((6, 3, SIZE, SIZE), dtype=np.float32)
        feeds = {"input": x, **extra_values(model, len(x))}
        want = reference(model, feeds)
        close_enough(precision, infer(client, feeds, binary=True), want)
        one = {k: v[:1] for k, v in feeds.items()}
        close_enough(precision, infer(client, one, binary=False), want[:1])
        # concurrent single rows: the batcher stacks each input
        handles = []
        for i in range(len(x)):
            tensors = []
            for key, array in feeds.items():
                row = array[i : i + 1]
                tensor = httpclient.InferInput(key, list(row.shape), DATATYPES[row.dtype.name])
                tensor.set_data_from_numpy(row, binary_data=True)
                tensors.append(tensor)
            handles.append(client.async_infer("tiny", tensors))
        got = np.concatenate([h.get_result().as_numpy("logits") for h in handles])
        close_enough(precision, got, want)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match=rf"missing input\(s\) \['{names[0]}'"):
            infer(client, {"input": x[:1]}, binary=True)
        # the HIL conformance check sends every golden input (JSON) and compares the outputs
        from edgeds.hil.runner import RunResult, _conformance

        run = RunResult("local", ["conformance"], 0.0)
        _conformance(run, "local", f"http://127.0.0.1:{server.port}", result.bundle)
        (check,) = run.checks
        assert (check.name, check.passed) == ("golden_outputs", True), check
    finally:
        client.close()
        server.stop(close_engines=True)

    # the device's golden check (in-process: no agent runs) feeds every golden input
    store = Store(tmp_path / "store")
    store.ensure()
    shutil.copytree(result.bundle, store.releases / "r1")
    checked = health_check(store, "r1", {})
    assert (checked["mode"], checked["golden"], checked["opened"]["artifact"]) == ("in_process", "ok", 0)

    # edgeds bench feeds every input (the golden rows of each)
    from edgeds.bench.commands import bench_bundle

    report = bench_bundle(result.bundle, scenarios=("single",), duration_s=0.3, threads=1)
    single = report["scenarios"]["single"]
    assert single["ok"] > 0 and single["errors"] == 0, single

    # edgeds run: an .npz with one array per input name (uint8 images are preprocessed)
    images_u8 = np.random.default_rng(5).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    arrays: dict[str, Any] = {"input": images_u8, **extra_values(model, 3)}
    np.savez(tmp_path / "inputs.npz", **arrays)
    ranked = classify_file(result.bundle, tmp_path / "inputs.npz", top=2, threads=1)
    assert len(ranked.predictions) == 3 and all(len(p) == 2 for p in ranked.predictions)
    np.savez(tmp_path / "short.npz", input=images_u8)
    with pytest.raises(RequestError, match=rf"no array for input\(s\) \['{names[0]}'"):
        classify_file(result.bundle, tmp_path / "short.npz", threads=1)
    np.save(tmp_path / "images.npy", images_u8)
    with pytest.raises(RequestError, match=r"give an \.npz with one array per input name"):
        classify_file(result.bundle, tmp_path / "images.npy", threads=1)
    if backend == "onnxruntime" and precision == "fp32":  # the CLI once per model
        cli = subprocess.run(
            [sys.executable, "-m", "edgeds", "run", str(result.bundle), "--input", str(tmp_path / "short.npz")],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "COLUMNS": "400"},
            timeout=120,
        )
        assert cli.returncode == 2, cli.stderr
        assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        assert f"no array for input(s) ['{names[0]}'" in cli.stderr
        ok = subprocess.run(
            [sys.executable, "-m", "edgeds", "run", str(result.bundle), "--input", str(tmp_path / "inputs.npz")],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert ok.returncode == 0, ok.stderr


def test_a_toolchain_without_multi_input_support_is_skipped(tmp_path: Path, cache_env: Path) -> None:
    """LiteRT and TensorRT take the image input only: the chain skips them with the reason."""
    model = two_input(tmp_path / "aux", VALIDATION, CALIBRATION)
    profile = write_profile(
        tmp_path / "multi-chain.yaml",
        "multi-chain",
        "a multi-input test profile",
        "litert",
        "{}\n  - name: onnxruntime",
    )
    result = compile_model(model, profile, precision="fp32", out=tmp_path / "bundle")
    skipped = result.report.attempts[0]
    assert (skipped.backend, skipped.outcome) == ("litert", "skipped")
    assert result.backend == "onnxruntime"
    reason = skipped.reason or ""
    if "extra_inputs" not in reason:  # litert's toolchain may be missing here: that is said first
        assert "not available" in reason
