"""The Open Inference Protocol's (KServe v2) infer messages: a request into numpy views, outputs into a response.

Transport-free: it reads request bodies and builds :class:`~edgeds.runtime.http_syntax.Response` objects,
which :mod:`edgeds.runtime.http1` frames. A request body is JSON, or, with the binary tensor
extension, a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
little-endian tensors in input order (each with ``binary_data_size``).

:class:`InferPlan` is what one JSON header says, parsed and checked once. Clients send the same
header bytes for every request of one shape (``tritonclient`` does), so :class:`PlanCache` keeps
the plans of recent headers and a repeated request costs a dictionary lookup and a numpy view per
input instead of a JSON parse and its checks; a plan also keeps the response heads it has rendered
for each output layout, so a repeated response costs one join of bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .http_syntax import HttpError, Response
from .memo import remember

if TYPE_CHECKING:
    from .engine import Engine

_loads: Callable[[bytes | memoryview], Any]
_dumps: Callable[[Any], bytes]
try:  # a JSON body of one 160x160 image is ~1.5 MB of text: orjson parses it ~2-3x faster
    from orjson import dumps as _dumps
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency; stdlib fallback

    def _loads(data: bytes | memoryview) -> Any:
        return json.loads(bytes(data))

    def _dumps(data: Any) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode()


OIP_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
NUMPY_TO_OIP = {v: k for k, v in OIP_TO_NUMPY.items()}

PLAN_HEADER_LIMIT = 4096  # JSON headers up to this size are remembered (one image's is ~200 bytes)
PLAN_CACHE_SIZE = 256  # headers remembered per server; the oldest is forgotten first
_HEADS_PER_PLAN = 16  # response heads remembered per plan (one per output layout)


def oip_datatype(dtype: str) -> str:
    """KServe v2 datatype of a numpy dtype name (``float32`` -> ``FP32``)."""
    return NUMPY_TO_OIP.get(dtype, "BYTES")


def int_param(params: Mapping[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HttpError(400, f"parameter {key!r} must be a non-negative integer")
    return value


@dataclass(frozen=True)
class _Binary:
    """Where one binary input lies in the body."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    offset: int
    count: int

    def view(self, body: bytes | memoryview) -> np.ndarray:
        """This input as a numpy view of ``body`` (no copy)."""
        return np.frombuffer(body, dtype=self.dtype, count=self.count, offset=self.offset).reshape(self.shape)


def _blob(view: np.ndarray) -> memoryview:
    """An output's bytes as sent (a contiguous copy only when the view is not contiguous)."""
    return (view if view.flags.c_contiguous else np.ascontiguousarray(view)).data.cast("B")


@dataclass
class InferPlan:
    """One infer request's JSON header, parsed and checked: its binary inputs' places in the body
    (``binary``), its inputs given in the JSON itself (``inline``), the outputs asked for and the
    parameters. A plan without inline inputs fits every body of its length with the same header
    bytes (:class:`PlanCache` keys it by both). ``heads`` is filled by engine workers (dict operations are atomic).
    ``batch`` is the batch size the engine found when it validated the first request of a plan
    without inline inputs: later ones have arrays of the same names, dtypes and shapes."""

    binary: tuple[_Binary, ...]
    inline: dict[str, np.ndarray]
    wanted: list[tuple[str, bool]]
    priority: int
    timeout_us: int | None
    request_id: Any
    heads: dict[tuple[Any, ...], tuple[bytes, bytes]] = field(default_factory=dict)
    batch: int | None = None

    def inputs(self, body: bytes | memoryview) -> dict[str, np.ndarray]:
        """The request's input arrays: views of ``body`` for the binary ones (read, never copied here)."""
        if len(self.binary) == 1 and not self.inline:  # the usual request: one tensor
            return {self.binary[0].name: self.binary[0].view(body)}
        arrays = {t.name: t.view(body) for t in self.binary}
        if self.inline:
            arrays.update(self.inline)
        return arrays

    def respond(
        self, engine: Engine, outputs: Mapping[str, np.ndarray], http_head: Callable[[Response], bytes]
    ) -> Response:
        """The response to ``outputs`` (:func:`infer_response`). When every output is binary, its JSON
        header and keep-alive HTTP head (rendered by ``http_head``) are kept per output layout and reused."""
        wanted = self.wanted
        if not all(binary for _, binary in wanted):
            return infer_response(engine, self.request_id, outputs, wanted)
        views = [outputs[name] for name, _ in wanted]
        if len(views) == 1:  # the usual model: one output
            key: tuple[Any, ...] = (views[0].shape, views[0].dtype.num)
        else:
            key = tuple((v.shape, v.dtype.num) for v in views)
        cached = self.heads.get(key)
        if cached is None:
            response = infer_response(engine, self.request_id, outputs, wanted)
            if len(self.heads) < _HEADS_PER_PLAN and response.header_length is not None:
                self.heads[key] = (response.body[: response.header_length], http_head(response))
            return response
        header, head = cached
        blobs = [_blob(v) for v in views]
        return Response(200, b"".join([header, *blobs]), "application/octet-stream", len(header), head)


class PlanCache:
    """The plans of recent binary request headers, per engine (:meth:`plan`).

    Used from one thread (the server's event loop); :meth:`clear` may be called from any (a model
    swap), since it only replaces the dictionary.
    """

    def __init__(self, size: int = PLAN_CACHE_SIZE) -> None:
        self.size = size
        self._plans: dict[tuple[Engine, bytes, int], InferPlan] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        self._plans = {}

    def plan(self, engine: Engine, body: bytes | memoryview, header_length: str | None) -> InferPlan:
        """The plan of this request, from the cache when its header bytes and body length were seen
        with ``engine`` before. Raises :class:`HttpError` (400) for a malformed request."""
        plans = self._plans  # a clear() from another thread meanwhile orphans this dict, and what goes in it
        key = None
        if header_length is not None and header_length.isascii() and header_length.isdigit():
            json_len = int(header_length)
            if 0 < json_len <= PLAN_HEADER_LIMIT and json_len < len(body):
                key = (engine, bytes(body[:json_len]), len(body))
                plan = plans.get(key)
                if plan is not None:
                    return plan
        request, json_len = _read_header(body, header_length)
        plan = _plan(request, json_len, body, engine)
        if key is not None and not plan.inline:
            remember(plans, key, plan, self.size)
        return plan


def _read_header(body: bytes | memoryview, header_length: str | None) -> tuple[dict[str, Any], int]:
    """The request's JSON object and its length in bytes."""
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError as exc:
            raise HttpError(400, f"malformed Inference-Header-Content-Length {header_length!r}") from exc
        if json_len < 0 or json_len > len(body):
            raise HttpError(400, f"Inference-Header-Content-Length {json_len} is outside the body of {len(body)} bytes")
    else:
        json_len = len(body)
    try:
        request = _loads(body[:json_len] if json_len != len(body) else body)
    except (UnicodeDecodeError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise HttpError(400, f"malformed JSON request: {exc}") from exc
    if not isinstance(request, dict):
        raise HttpError(400, "the request must be a JSON object")
    return request, json_len


def _plan(request: dict[str, Any], json_len: int, body: bytes | memoryview, engine: Engine) -> InferPlan:
    binary, inline = _layout(request, json_len, body)
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise HttpError(400, "'parameters' must be an object")
    return InferPlan(
        binary=tuple(binary),
        inline=inline,
        wanted=requested_outputs(request, engine, bool(params.get("binary_data_output", False))),
        priority=int_param(params, "priority") or 0,
        timeout_us=int_param(params, "timeout"),
        request_id=request.get("id"),
    )


def _layout(
    request: Mapping[str, Any], json_len: int, body: bytes | memoryview
) -> tuple[list[_Binary], dict[str, np.ndarray]]:
    """Check the request's inputs: where the binary ones lie in ``body``, and the JSON ones as arrays."""
    specs = request.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise HttpError(400, "'inputs' must be a non-empty list")
    offset = json_len
    binary: list[_Binary] = []
    inline: dict[str, np.ndarray] = {}
    names: set[str] = set()
    for spec in specs:
        if not isinstance(spec, dict):
            raise HttpError(400, "each input must be an object")
        name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
        if not isinstance(name, str):
            raise HttpError(400, "input without a 'name'")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise HttpError(400, f"input {name!r}: 'shape' must be a list of non-negative integers")
        if not isinstance(datatype, str):
            raise HttpError(400, f"input {name!r}: missing 'datatype'")
        dtype_name = OIP_TO_NUMPY.get(datatype)
        if dtype_name is None:
            raise HttpError(400, f"input {name!r}: datatype {datatype!r} is not supported by this server")
        dtype = np.dtype(dtype_name).newbyteorder("<")
        count = 1
        for d in shape:
            count *= d
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if name in names:
            raise HttpError(400, f"input {name!r} given twice")
        names.add(name)
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise HttpError(400, f"input {name!r}: 'binary_data_size' must be a non-negative integer")
            if size != count * dtype.itemsize:
                raise HttpError(
                    400,
                    f"input {name!r}: binary_data_size {size} does not match shape {shape} of {datatype} "
                    f"({count * dtype.itemsize} bytes)",
                )
            if offset + size > len(body):
                raise HttpError(400, f"input {name!r}: binary data runs past the end of the body")
            if not dtype.isnative:  # big-endian hosts only: such inputs are converted, not viewed
                array = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
                inline[name] = array.astype(dtype.newbyteorder("="))
            else:
                binary.append(_Binary(name, dtype, tuple(shape), offset, count))
            offset += size
        else:
            if "data" not in spec:
                raise HttpError(400, f"input {name!r}: neither 'data' nor 'binary_data_size'")
            try:
                array = np.asarray(spec["data"], dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise HttpError(400, f"input {name!r}: data is not {datatype}: {exc}") from exc
            if array.size != count:
                raise HttpError(400, f"input {name!r}: {array.size} elements do not match shape {shape}")
            array = array.reshape(shape)
            if not array.dtype.isnative:  # big-endian hosts only
                array = array.astype(array.dtype.newbyteorder("="))
            inline[name] = array
    if offset != len(body):
        raise HttpError(400, f"{len(body) - offset} bytes of binary data are not claimed by any input")
    return binary, inline


def requested_outputs(request: Mapping[str, Any], engine: Engine, binary_default: bool) -> list[tuple[str, bool]]:
    """(output name, in binary?) for each output the request asks for; every output when it names none."""
    io = engine.io
    if io is None:
        raise HttpError(503, f"model {engine.name!r} is not open")
    known = [s.name for s in io.outputs]
    outputs = request.get("outputs")
    if outputs is None:
        return [(name, binary_default) for name in known]
    if not isinstance(outputs, list):
        raise HttpError(400, "'outputs' must be a list")
    wanted: list[tuple[str, bool]] = []
    for out in outputs:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise HttpError(400, "each requested output must be an object with a 'name'")
        if out["name"] not in known:
            raise HttpError(400, f"unknown output {out['name']!r} (the model returns {known})")
        params = out.get("parameters") or {}
        binary = bool(params.get("binary_data", binary_default)) if isinstance(params, dict) else binary_default
        wanted.append((out["name"], binary))
    return wanted


def infer_response(
    engine: Engine, request_id: Any, outputs: Mapping[str, np.ndarray], wanted: list[tuple[str, bool]]
) -> Response:
    """The response body for ``outputs`` (views read now; the caller releases them after)."""
    described: list[dict[str, Any]] = []
    blobs: list[Any] = []
    for name, binary in wanted:
        view = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": oip_datatype(view.dtype.name), "shape": list(view.shape)}
        if binary:
            blob = _blob(view)
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob)
        else:
            entry["data"] = view.ravel().tolist()
        described.append(entry)
    payload: dict[str, Any] = {"model_name": engine.name, "model_version": engine.version}
    if request_id is not None:
        payload["id"] = request_id
    payload["outputs"] = described
    header = _dumps(payload)
    if not blobs:
        return Response(200, header)
    # One join reads the pooled views directly; the views are released right after.
    return Response(200, b"".join([header, *blobs]), "application/octet-stream", len(header))


__all__ = [
    "NUMPY_TO_OIP",
    "OIP_TO_NUMPY",
    "InferPlan",
    "PlanCache",
    "infer_response",
    "int_param",
    "oip_datatype",
    "requested_outputs",
]
