"""Reference, not a peer: the thinnest binary-OIP server Python allows, to show what the transport costs.

``python bare_socket.py PORT`` serves ``POST /v2/models/<any>/infer`` (binary tensor extension, one
FP32 input, one request at a time per connection, which is what the benchmark's load generator
sends) and answers every ``GET`` with 200. Env: EDGEDS_PEER_MODEL (onnx path), EDGEDS_PEER_THREADS
(intra-op threads in all), EDGEDS_PEER_INSTANCES (ONNX Runtime sessions sharing them, run at once;
``runtime_bench.py`` runs one single-thread session per thread).

It keeps only what any server must do: one selector thread receives each request into the
connection's buffer and parses its head and JSON header; one worker thread per session runs the
tensor where it landed (IOBinding to the received bytes, outputs preallocated) and writes the
response itself. There is no validation, batching, statistics, error handling or timeout, so
``runtime_bench.py`` uses it as a ceiling: the share of the engine floor that is left once requests
and responses cross loopback TCP and the load generator takes its part of the same cores.
"""

from __future__ import annotations

import json
import os
import queue
import selectors
import socket
import sys
import threading

import numpy as np
import onnxruntime as ort

MODEL = os.environ["EDGEDS_PEER_MODEL"]
INSTANCES = int(os.environ.get("EDGEDS_PEER_INSTANCES", "1"))
THREADS = max(1, int(os.environ.get("EDGEDS_PEER_THREADS", "2")) // INSTANCES)
BUFFER = 1 << 20


def open_session() -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(MODEL, opts, providers=["CPUExecutionProvider"])


def parse(buf: bytearray, end: int) -> tuple[int, dict[str, object], int] | None:
    """(bytes of the whole request, its JSON header, offset of its tensor) once it is all in ``buf``."""
    head_end = buf.find(b"\r\n\r\n", 0, end)
    if head_end < 0:
        return None
    fields = {}
    for line in bytes(buf[:head_end]).decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    body = head_end + 4
    total = body + int(fields.get("content-length", "0"))
    if end < total:
        return None
    json_len = int(fields.get("inference-header-content-length", total - body))
    header = json.loads(bytes(buf[body : body + json_len])) if json_len else {}
    return total, header, body + json_len


def worker(work: queue.SimpleQueue[tuple[socket.socket, np.ndarray]]) -> None:
    session = open_session()
    name = session.get_inputs()[0].name
    output = session.get_outputs()[0].name
    binding = session.io_binding()
    cached: dict[tuple[int, ...], tuple[np.ndarray, bytes]] = {}
    while True:
        conn, x = work.get()
        out, header = cached.get(x.shape, (None, b""))
        if out is None:
            out = session.run([output], {name: x})[0]
            header = json.dumps(
                {
                    "model_name": "bare",
                    "outputs": [
                        {
                            "name": output,
                            "datatype": "FP32",
                            "shape": list(out.shape),
                            "parameters": {"binary_data_size": out.nbytes},
                        }
                    ],
                }
            ).encode()
            cached[x.shape] = (out, header)
        binding.bind_input(name, "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
        binding.bind_output(output, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        session.run_with_iobinding(binding)
        body = header + out.tobytes()
        try:
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: %d\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(header), len(body), body)
            )
        except OSError:  # the client is gone: the selector thread sees it and closes the connection
            continue


def main() -> None:
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    work: queue.SimpleQueue[tuple[socket.socket, np.ndarray]] = queue.SimpleQueue()
    for _ in range(INSTANCES):
        threading.Thread(target=worker, args=(work,), daemon=True).start()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    # per connection: two buffers (the one a request in flight points into, and the next), bytes held
    state: dict[int, tuple[socket.socket, list[bytearray], list[int]]] = {}
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                state[conn.fileno()] = (conn, [bytearray(BUFFER), bytearray(BUFFER)], [0, 0])
                selector.register(conn, selectors.EVENT_READ)
                continue
            conn, buffers, held = state[key.fd]
            buf = buffers[held[1]]
            if held[0] == len(buf):  # a request larger than the buffer: grow both
                buffers[:] = [bytearray(2 * len(buf)), bytearray(2 * len(buf))]
                buffers[held[1]][: held[0]] = buf
                buf = buffers[held[1]]
            try:
                got = conn.recv_into(memoryview(buf)[held[0] :])
            except OSError:
                got = 0
            if not got:
                selector.unregister(conn)
                del state[key.fd]
                conn.close()
                continue
            held[0] += got
            request = parse(buf, held[0])
            if request is None:
                continue
            total, header, offset = request
            if header.get("inputs") is None:  # a GET (health): no body, no header
                conn.sendall(
                    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"ready":true}'
                )
            else:
                spec = header["inputs"][0]  # type: ignore[index]
                x = np.frombuffer(buf, np.float32, int(np.prod(spec["shape"])), offset).reshape(spec["shape"])
                work.put((conn, x))
            rest = held[0] - total
            # the next request goes to the other buffer, so this one stays intact while its request is in
            # flight (one per connection, as the load generator sends; a pipelining client could overrun it)
            held[1] ^= 1
            buffers[held[1]][:rest] = buf[total : held[0]]
            held[0] = rest


if __name__ == "__main__":
    main()
