"""Peer: plain FastAPI + ONNX Runtime, no batching (one session.run per request).

Takes the same binary OIP request edgeds takes (JSON header + raw tensor bytes) on
``POST /v2/models/{name}/infer`` and answers JSON. Env: EDGEDS_PEER_MODEL (onnx path),
EDGEDS_PEER_THREADS (intra-op threads).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request, Response

opts = ort.SessionOptions()
opts.intra_op_num_threads = int(os.environ.get("EDGEDS_PEER_THREADS", "2"))
opts.inter_op_num_threads = 1
opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
session = ort.InferenceSession(os.environ["EDGEDS_PEER_MODEL"], opts, providers=["CPUExecutionProvider"])
INPUT = session.get_inputs()[0].name
app = FastAPI()


@app.get("/v2/health/ready")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    body = await request.body()
    head_len = int(request.headers.get("inference-header-content-length", len(body)))
    header = json.loads(body[:head_len])
    spec = header["inputs"][0]
    if head_len < len(body):
        x = np.frombuffer(body, dtype=np.float32, offset=head_len).reshape(spec["shape"])
    else:
        x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
    # plain sync call in the event loop, as a minimal FastAPI server does
    y = session.run(None, {INPUT: x})[0]
    out = {
        "model_name": name,
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}],
    }
    return Response(json.dumps(out), media_type="application/json")
