"""Peer: BentoML service with adaptive batching (``batchable=True``) around ONNX Runtime.

Own JSON API: ``POST /predict`` with ``{"x": <nested list [n, 3, H, W]>}``. Env as fastapi_app.py,
plus EDGEDS_PEER_MAX_BATCH and EDGEDS_PEER_MAX_LATENCY_MS.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np

THREADS = int(os.environ.get("EDGEDS_PEER_THREADS", "2"))


@bentoml.service(workers=1, traffic={"timeout": 60})
class Classifier:
    def __init__(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(os.environ["EDGEDS_PEER_MODEL"], opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    @bentoml.api(
        batchable=True,
        max_batch_size=int(os.environ.get("EDGEDS_PEER_MAX_BATCH", "8")),
        max_latency_ms=int(os.environ.get("EDGEDS_PEER_MAX_LATENCY_MS", "1000")),
    )
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x.astype(np.float32, copy=False)})[0]
