"""Open Inference Protocol (KServe v2) infer requests, as a client builds them.

The client side of :mod:`edgeds.runtime.oip` (which parses these bodies on the server): one input
tensor (or several) into a request body and the headers that go with it, in the binary tensor extension that
``tritonclient`` sends or in plain JSON. A body is built once and can be sent any number of times.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .oip import oip_datatype


def oip_binary_body(
    name: str, x: np.ndarray, output: str | None = None, *, binary_outputs: bool = True
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension OIP request for one input, as ``tritonclient`` sends.

    Returns the body (a JSON header, then ``x``'s bytes in C order) and the headers it needs
    (``Inference-Header-Content-Length``, ``Content-Type``). ``output`` names the one output to
    ask for; by default the server returns every output, in binary unless ``binary_outputs`` is
    False (then as JSON ``data``).
    """
    return oip_binary_inputs({name: x}, output, binary_outputs=binary_outputs)


def oip_binary_inputs(
    inputs: Mapping[str, np.ndarray], output: str | None = None, *, binary_outputs: bool = True
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension OIP request for every input of ``inputs`` (in its order), as
    :func:`oip_binary_body` for one."""
    arrays = {name: np.ascontiguousarray(x) for name, x in inputs.items()}
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(x.shape),
                "datatype": oip_datatype(x.dtype.name),
                "parameters": {"binary_data_size": x.nbytes},
            }
            for name, x in arrays.items()
        ],
    }
    if binary_outputs:
        header["parameters"] = {"binary_data_output": True}
    if output is not None:
        header["outputs"] = [{"name": output, "parameters": {"binary_data": binary_outputs}}]
    head = json.dumps(header).encode()
    return head + b"".join(x.tobytes() for x in arrays.values()), {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def oip_json_body(name: str, x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A plain-JSON OIP request for one input (what MLServer takes): the body and its headers."""
    body = {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": oip_datatype(x.dtype.name), "data": x.ravel().tolist()}
        ]
    }
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


__all__ = ["oip_binary_body", "oip_binary_inputs", "oip_json_body"]
