"""Small signed bundles for simulated rigs: a tiny ONNX classifier with the shipped model's interface.

``input`` float32 [batch, 3, 160, 160] NCHW -> ``logits`` [batch, 5]: global average pool, then a
3x5 dense layer whose weights depend on ``seed`` (so two versions give different outputs).
Built through :func:`edgeds.bundle.build_bundle`, with golden outputs computed by ONNX Runtime.
Variants for fault tests: ``broken_model`` (an artifact that no backend can load),
``wrong_golden`` (golden outputs that the model does not produce), ``padding_bytes`` (an extra
listed file, to make uploads take a while).
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

LABELS = ("ok", "scratch", "pit", "crack", "stain")


def tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny ONNX classifier to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(3, 5)).astype(np.float32)
    bias = rng.normal(size=(5,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 160, 160])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


CARD = """schema: 1
name: {name}
version: 1.0.{patch}
task: image-classification
model: model.onnx
input: {{name: input, layout: NCHW, height: 160, width: 160}}
output: {{name: logits}}
labels: [{labels}]
"""


def make_bundle(
    out: Path,
    version: int,
    private_key: Path | None,
    *,
    name: str = "tiny",
    seed: int | None = None,
    broken_model: bool = False,
    wrong_golden: bool = False,
    padding_bytes: int = 0,
    p99_ms: float = 1000.0,
    min_disk_mb: int = 1,
    max_batch_size: int = 8,
    expires_at: str | None = None,
    labels: tuple[str, ...] = LABELS,
) -> Path:
    """Build a (signed when ``private_key``) bundle directory at ``out``; ``labels``: five class names."""
    from ..bundle import build_bundle

    with tempfile.TemporaryDirectory(prefix="edgeds-simbundle-") as tmp_name:
        tmp = Path(tmp_name)
        model = tiny_model(tmp / "model.onnx", seed if seed is not None else version)
        card = tmp / "card.yaml"
        if len(labels) != 5:
            raise ValueError(f"the sim model has 5 outputs, got {len(labels)} labels")
        card.write_text(CARD.format(name=name, patch=version, labels=", ".join(labels)))
        rng = np.random.default_rng(1234)
        inputs = rng.random((2, 3, 160, 160), dtype=np.float32)
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], {"input": inputs})[0]
        if wrong_golden:
            logits = logits + 5.0
        artifacts: dict[str, Path] = {"model.onnx": model}
        if broken_model:
            model.write_bytes(b"this is not an onnx model" * 10)
        if padding_bytes:
            pad = tmp / "padding.bin"
            pad.write_bytes(np.random.default_rng(version).bytes(padding_bytes))
            artifacts["padding.bin"] = pad
        manifest: dict[str, Any] = {
            "model": {"name": name, "version": f"1.0.{version}"},
            "version": version,
            "task": "image-classification",
            "artifacts": [
                {
                    "runtime": "onnxruntime",
                    "precision": "fp32",
                    "path": "model.onnx",
                    "options": {"intra_op_num_threads": 1, "allow_spinning": False},
                }
            ],
            "layout": "NCHW",
            "profile": {"name": "x86-cpu", "latency": {"p99_ms": p99_ms}},
            "batching": {"max_batch_size": max_batch_size, "max_queue_delay_us": 500, "max_queue_size": 1024},
            "io": {
                "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3, 160, 160]}],
                "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 5]}],
            },
            "labels": list(labels),
            "tools": {"edgeds-sim": "1"},
            "requirements": {
                "arch": platform.machine(),
                "backends": ["onnxruntime"],
                "min_memory_mb": 64,
                "min_disk_mb": min_disk_mb,
            },
            "golden": {"atol": 1e-4, "rtol": 1e-3, "min_cosine": 0.999},
            "expires_at": expires_at,
        }
        return build_bundle(
            out,
            manifest=manifest,
            artifacts=artifacts,
            card_file=card,
            golden_inputs=inputs,
            golden_outputs={"logits": logits},
            private_key=private_key,
        )
