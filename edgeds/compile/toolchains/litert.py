"""LiteRT compile step: ONNX -> TFLite with onnx2tf, inside an isolated toolchain venv.

onnx2tf needs TensorFlow and pins old numpy, so it lives in its own virtual environment that
edgeds creates and pins (:func:`install`, ``edgeds toolchain install litert``) under
``$EDGEDS_TOOLCHAINS/litert`` (default ``cache_dir()/toolchains/litert``); every package is
pinned (:data:`LOCK`) and installed with ``--no-deps``. The conversion runs as a subprocess of
that venv with no internet: the sample calibration file onnx2tf would otherwise download
(``calibration_image_sample_data_20x128x128x3_float32.npy``) is written into its working
directory from OUR calibration data, our calibration tensor is passed with ``-cind``, and
HTTP(S) proxies point to a closed loopback port so any download attempt fails at once.

One onnx2tf run yields FP32, FP16 and INT8 files; the run is cached (model sha256 +
calibration fingerprint + lock + conversion arguments) so falling back from INT8 to FP16
converts nothing again. INT8 is onnx2tf's full-integer post-training quantization
(``model_full_integer_quant.tflite``: per-channel weights calibrated on our data, int8 inputs
and outputs, ``-iqd int8 -oqd int8``), the same file for every delegate: XNNPACK runs it on a
CPU and the NPU delegates (QNN, NNAPI) want integer I/O. Each integer input/output's
``{dtype, scale, zero_point}`` is read back from the converted model as the LiteRT backend opens
it and recorded in ``Artifact.metadata["io_quantization"]`` (keyed by the backend's tensor
names); the backend keeps float32 at its interface and applies them. The layout becomes NHWC;
the artifact metadata records it (the manifest's ``layout``) and the TFLite tensor names. A model
whose batch is fixed above 1 is refused with :class:`~edgeds.errors.ToolchainError` (the chain
skips litert with the reason).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...backends.base import Artifact, Availability, BackendOptions, Precision, TensorDict
from ...errors import ToolchainError, UnsupportedPrecision
from ...paths import cache_dir
from . import _venv, package_version

if TYPE_CHECKING:
    from ...modelcard import ModelCard

SUPPORTS_MIXED = False
DEFERRED_GATE = False
MULTI_INPUT = False  # takes the image input only (a card's extra_inputs are not fed)
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
ONNX2TF_VERSION = "1.29.24"
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
CONVERT_TIMEOUT_S = 1800
_FILES = {"fp32": "model_float32.tflite", "fp16": "model_float16.tflite", "int8": "model_full_integer_quant.tflite"}
# onnx2tf arguments after the input/output/calibration ones; part of the conversion cache key.
CONVERT_ARGS: tuple[str, ...] = ("-oiqt", "-qt", "per-channel", "-iqd", "int8", "-oqd", "int8")

# Every package of the toolchain venv, resolved once for Python 3.10-3.12 on Linux (onnx2tf
# 1.29.24 pins TensorFlow 2.19.0 and numpy 1.26.4). Installed with --no-deps.
LOCK: tuple[str, ...] = (
    "absl-py==2.5.1",
    "ai-edge-litert==2.1.0",
    "astunparse==1.6.3",
    "backports.strenum==1.2.8",
    "certifi==2026.10.18",
    "charset-normalizer==3.5.2",
    "coloredlogs==15.0.1",
    "flatbuffers==25.12.19",
    "gast==0.7.0",
    "google-pasta==0.2.0",
    "grpcio==1.85.1",
    "h5py==3.11.0",
    "humanfriendly==10.0",
    "idna==3.20",
    "json2onnx==2.0.3",
    "keras==3.15.1",
    "libclang==18.1.1",
    "Markdown==3.11.3",
    "markdown-it-py==4.3.0",
    "MarkupSafe==3.0.4",
    "mdurl==0.1.2",
    "ml_dtypes==0.5.1",
    "mpmath==1.3.0",
    "namex==0.1.0",
    "numpy==1.26.4",
    "onnx==1.19.1",
    "onnx2json==2.0.4",
    "onnx2tf==1.29.24",
    "onnx_graphsurgeon==0.5.8",
    "onnxoptimizer==0.4.2",
    "onnxruntime==1.23.0",
    "onnxsim==0.4.36",
    "opencv-python==4.11.0.86",
    "opt_einsum==3.4.0",
    "optree==0.20.0",
    "packaging==26.3",
    "protobuf==4.25.5",
    "psutil==5.9.5",
    "Pygments==2.21.0",
    "requests==2.32.5",
    "rich==15.0.0",
    "sam4onnx==2.0.0",
    "sbi4onnx==1.0.7",
    "scc4onnx==1.0.7",
    "scs4onnx==1.0.18",
    "sde4onnx==1.0.0",
    "sed4onnx==1.0.5",
    "simple_onnx_processing_tools==1.1.32",
    "sio4onnx==1.0.3",
    "sit4onnx==1.0.10",
    "six==1.17.0",
    "sna4onnx==1.0.6",
    "snc4onnx==1.0.14",
    "snd4onnx==1.1.7",
    "sne4onnx==2.0.1",
    "sng4onnx==2.0.1",
    "soa4onnx==1.0.5",
    "soc4onnx==1.0.2",
    "sod4onnx==1.0.0",
    "sog4onnx==1.0.17",
    "sor4onnx==1.0.7",
    "spo4onnx==1.0.5",
    "ssc4onnx==1.0.8",
    "ssi4onnx==1.0.4",
    "svs4onnx==1.0.0",
    "sympy==1.14.0",
    "tensorboard==2.19.0",
    "tensorboard-data-server==0.7.2",
    "tensorflow==2.19.0",
    "tensorflow-io-gcs-filesystem==0.37.1",
    "termcolor==3.3.0",
    "tf_keras==2.19.0",
    "tqdm==4.70.1",
    "typing_extensions==4.16.0",
    "urllib3==2.8.0",
    "Werkzeug==3.1.9",
    "wrapt==2.5.2",
)


def toolchain_dir() -> Path:
    """``$EDGEDS_TOOLCHAINS/litert``, default ``cache_dir()/toolchains/litert``."""
    return _venv.toolchain_dir("litert")


def lock_hash() -> str:
    return _venv.lock_hash(LOCK)


def installed(root: Path | None = None) -> bool:
    """Whether the toolchain venv exists and matches :data:`LOCK`."""
    return _venv.installed(root or toolchain_dir(), LOCK)


def install(root: Path | None = None, python: str | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Create (or re-create) the pinned toolchain venv; a no-op when it is already installed."""
    check = "import onnx2tf, tensorflow; print(onnx2tf.__version__, tensorflow.__version__)"
    return _venv.install("litert", root or toolchain_dir(), LOCK, check, python=python, log=log)


def available() -> Availability:
    if not installed():
        return Availability(
            "litert",
            False,
            reason=f"the onnx2tf toolchain is not installed ({toolchain_dir()})",
            hint="edgeds toolchain install litert",
        )
    return Availability("litert", True, version=f"onnx2tf {ONNX2TF_VERSION}")


def tool_versions() -> dict[str, str]:
    versions = {"onnx2tf": ONNX2TF_VERSION, "tensorflow": "2.19.0", "toolchain_lock": lock_hash()}
    runtime = package_version("ai-edge-litert")
    if runtime:
        versions["ai-edge-litert"] = runtime
    return versions


def offline_env() -> dict[str, str]:
    """Environment for the conversion subprocess: proxies to a closed loopback port (no internet)."""
    return _venv.offline_env()


def _sample_file(calib_nhwc: np.ndarray, card: ModelCard) -> np.ndarray:
    """onnx2tf's sample calibration file (20x128x128x3 float32 in [0,1]) made from our images."""
    from PIL import Image

    spec = card.input
    mul = np.asarray(spec.std, np.float32) / np.float32(spec.scale)
    add = np.asarray(spec.mean, np.float32) / np.float32(spec.scale)
    raw = np.clip(calib_nhwc[:20] * mul + add, 0, 255).astype(np.uint8)  # undo our normalization
    images = [np.asarray(Image.fromarray(img).resize((128, 128))) for img in raw]
    while len(images) < 20:
        images.append(images[len(images) % len(raw)])
    return (np.stack(images).astype(np.float32) / 255.0).astype(np.float32)


def convert(model: Path, card: ModelCard, calib_nhwc: np.ndarray, work: Path) -> Path:
    """Run onnx2tf once (FP32, FP16, INT8) into ``work/out``; returns that directory."""
    root = toolchain_dir()
    if not installed(root):
        raise ToolchainError(f"the litert toolchain is not installed ({root}); run: edgeds toolchain install litert")
    work.mkdir(parents=True, exist_ok=True)
    # onnx2tf rewrites its input file in place (simplified graph): it only ever sees a copy
    source = work / "model.onnx"  # onnx2tf names its outputs after the input file: model_*.tflite
    shutil.copyfile(model, source)
    np.save(work / "calib.npy", calib_nhwc.astype(np.float32))
    np.save(work / SAMPLE_FILE, _sample_file(calib_nhwc, card))
    zeros = "[[[[" + ",".join(["0.0"] * 3) + "]]]]"
    ones = "[[[[" + ",".join(["1.0"] * 3) + "]]]]"
    cmd = [
        str(root / "venv" / "bin" / "onnx2tf"),
        "-i",
        str(source),
        "-o",
        str(work / "out"),
        *CONVERT_ARGS,
        "-cind",
        card.input.name,
        str(work / "calib.npy"),
        zeros,
        ones,
        "-n",
    ]
    proc = subprocess.run(cmd, cwd=work, env=offline_env(), capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    (work / "onnx2tf.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (work / "out" / _FILES["fp32"]).is_file():
        tail = (proc.stdout + proc.stderr)[-1500:]
        raise ToolchainError(f"onnx2tf failed (exit {proc.returncode}); log: {work / 'onnx2tf.log'}\n{tail}")
    return work / "out"


def _conversion(model: Path, card: ModelCard, calib: Iterable[TensorDict]) -> Path:
    """The cached onnx2tf output directory for this model + calibration data."""
    batches = [np.asarray(b[card.input.name]) for b in calib]
    if not batches:
        raise ToolchainError("the litert conversion needs calibration data (INT8 is produced in the same run)")
    nchw = np.concatenate(batches)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)) if card.input.layout == "NCHW" else nchw
    digest = hashlib.sha256(model.read_bytes())
    digest.update(nhwc.tobytes())
    digest.update(lock_hash().encode())
    digest.update("\0".join(CONVERT_ARGS).encode())
    key = digest.hexdigest()
    final = cache_dir() / "compile" / "litert-conversions" / key
    if (final / _FILES["fp32"]).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnx2tf-", dir=final.parent) as tmp:
        out = convert(model, card, nhwc, Path(tmp))
        for extra in ("saved_model.pb", "variables", "assets", "fingerprint.pb"):
            target = out / extra
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        shutil.copyfile(Path(tmp) / "onnx2tf.log", out / "onnx2tf.log")
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)
    return final


def _io_details(path: Path) -> dict[str, Any]:
    """Input/output names, served dtypes and shapes as the LiteRT backend opens the file, and the
    integer I/O parameters under ``"quantization"`` ({} without the LiteRT runtime)."""
    from ... import backends
    from ...backends.litert import LiteRtBackend

    if not backends.probe("litert").available:
        return {}
    with backends.create("litert") as backend:
        spec = backend.open(path, buckets=(1,))
        quantization = backend.quantization() if isinstance(backend, LiteRtBackend) else {}

    def info(t: Any) -> dict[str, Any]:
        return {"tflite_name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

    return {
        "inputs": [info(t) for t in spec.inputs],
        "outputs": [info(t) for t in spec.outputs],
        "quantization": quantization,
    }


def _check_batch(model: Path) -> None:
    """:class:`ToolchainError` (the chain skips litert) for a model whose batch is fixed above 1:
    onnx2tf's calibration and the converted model's input are made for batch 1."""
    from ..onnxmodel import inspect_model

    for spec in inspect_model(model).inputs:
        if spec.shape and spec.shape[0] > 1:
            raise ToolchainError(
                f"litert converts batch-1 or dynamic-batch models; input {spec.name!r} has a fixed batch of "
                f"{spec.shape[0]}: export the model with a dynamic batch (or batch 1) for litert"
            )


def compile(
    options: BackendOptions,
    model: Path,
    card: ModelCard,
    calib: Iterable[TensorDict],
    out: Path,
    precision: Precision = "fp32",
    *,
    exclude_nodes: Sequence[str] = (),
) -> Artifact:
    """Write ``out/model.tflite`` at ``precision`` (NHWC). See the module docstring."""
    if precision not in PRECISIONS:
        raise UnsupportedPrecision(f"litert cannot compile {precision!r} (supported: {', '.join(PRECISIONS)})")
    if exclude_nodes:
        raise UnsupportedPrecision("the litert toolchain cannot keep single nodes in float (no mixed precision)")
    _check_batch(model)
    calib = list(calib)
    if not calib:
        from ..data import batches as make_batches
        from ..data import load_images

        calib = list(make_batches(card, load_images(card, "calibration").images, layout="NCHW"))
    converted = _conversion(model, card, calib)
    delegate = str(getattr(options, "delegate", "xnnpack"))
    name = _FILES[precision]
    out.mkdir(parents=True, exist_ok=True)
    target = out / "model.tflite"
    shutil.copyfile(converted / name, target)
    details = _io_details(target)
    quantization = details.pop("quantization", {})
    io = {
        "inputs": [
            {"name": card.input.name, "dtype": d["dtype"], "shape": d["shape"]} for d in details.get("inputs", [])
        ],
        "outputs": [
            {"name": card.output.name if i == 0 else d["tflite_name"], "dtype": d["dtype"], "shape": d["shape"]}
            for i, d in enumerate(details.get("outputs", []))
        ],
    }
    meta: dict[str, Any] = {
        "converter": f"onnx2tf {ONNX2TF_VERSION}",
        "source_file": name,
        "delegate": delegate,
        "tflite_io": details,
    }
    if details:
        meta["io"] = io
    if quantization:
        meta["io_quantization"] = quantization
    if precision == "int8":
        dtypes = sorted({q["dtype"] for q in quantization.values()})
        meta.update(quantization="full-integer-ptq", per_channel=True, io_dtype=",".join(dtypes) or "int8")
    return Artifact("litert", precision, target, (target,), layout="NHWC", metadata=meta)
