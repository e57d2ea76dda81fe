"""The client side of the Open Inference Protocol: request bodies as tritonclient and MLServer take them."""

from __future__ import annotations

import json

import numpy as np

from edgeds.runtime.oip_requests import oip_binary_body, oip_binary_inputs, oip_json_body


def test_a_binary_body_is_its_json_header_then_the_tensor_bytes() -> None:
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)[:, :, ::2]  # not contiguous: sent in C order
    body, headers = oip_binary_body("input", x, output="logits")
    length = int(headers["Inference-Header-Content-Length"])
    assert headers["Content-Type"] == "application/octet-stream"
    header = json.loads(body[:length])
    assert header["inputs"] == [
        {"name": "input", "shape": [1, 3, 2], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    ]
    assert header["outputs"] == [{"name": "logits", "parameters": {"binary_data": True}}]
    assert header["parameters"] == {"binary_data_output": True}
    assert body[length:] == np.ascontiguousarray(x).tobytes()
    every, every_headers = oip_binary_body("input", x)  # no output named: the server sends them all
    assert "outputs" not in json.loads(every[: int(every_headers["Inference-Header-Content-Length"])])


def test_a_json_body_carries_the_values_flat() -> None:
    x = np.array([[1, 2], [3, 4]], dtype=np.int64)
    body, headers = oip_json_body("ids", x)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {"inputs": [{"name": "ids", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]}


def test_a_binary_body_of_several_inputs_holds_them_in_order() -> None:
    x = np.ones((2, 3), dtype=np.float32)
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    mask = np.array([[True, False], [False, True]])
    body, headers = oip_binary_inputs({"input": x, "ids": ids, "mask": mask}, binary_outputs=False)
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:length])
    assert [(i["name"], i["datatype"], i["parameters"]["binary_data_size"]) for i in header["inputs"]] == [
        ("input", "FP32", x.nbytes),
        ("ids", "INT64", ids.nbytes),
        ("mask", "BOOL", mask.nbytes),
    ]
    assert "parameters" not in header
    assert body[length:] == x.tobytes() + ids.tobytes() + mask.tobytes()
