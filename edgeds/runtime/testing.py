"""A tiny ONNX classifier with the shipped model's interface, for tests and benchmarks.

Input ``input`` float32 ``[batch, 3, size, size]`` (NCHW), output ``logits`` float32 ``[batch, classes]``.
Weights are drawn from ``seed``; the graph is Conv(3x3, stride 4, no padding) -> Relu ->
GlobalAveragePool -> Flatten -> Gemm, so every output depends on its batch row only.
:func:`tiny_classifier_tflite` writes the same network with the same weights as a LiteRT model
(NHWC input), so every backend can be checked against the same reference outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_CARD = """schema: 1
name: {name}
version: 0.1.0
task: image-classification
model: {model}
input: {{name: input, layout: NCHW, height: 160, width: 160, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
output: {{name: logits}}
labels: [ok, scratch, pit, crack, stain]
"""


def write_tiny_card(directory: Path | str, name: str = "tiny", model: str = "model.onnx") -> Path:
    """``<directory>/<name>.yaml``: a model card for a 160x160 NCHW five-class ``model`` next to it
    (the shipped model's labels and normalization)."""
    path = Path(directory) / f"{name}.yaml"
    path.write_text(TINY_CARD.format(name=name, model=model))
    return path


def _weights(seed: int, classes: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.5, size=(channels, 3, 3, 3)).astype(np.float32)  # OIHW
    conv_b = rng.normal(0, 0.1, size=(channels,)).astype(np.float32)
    fc_w = rng.normal(0, 0.5, size=(classes, channels)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, size=(classes,)).astype(np.float32)
    return conv_w, conv_b, fc_w, fc_b


def tiny_classifier(path: Path | str, size: int = 160, classes: int = 5, seed: int = 0, channels: int = 8) -> Path:
    """Write the ONNX model (NCHW input) to ``path`` and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv_w, conv_b, fc_w, fc_b = _weights(seed, classes, channels)
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], strides=[4, 4], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(fc_w, "fc_w"),
            numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgeds-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_classifier_tflite(
    path: Path | str, size: int = 160, classes: int = 5, seed: int = 0, channels: int = 8
) -> Path:
    """Write the same network as a ``.tflite`` flatbuffer (input ``[batch, size, size, 3]``, NHWC).

    Built with the flatbuffer schema that ``ai-edge-litert`` ships, so no converter is needed.
    """
    import flatbuffers  # type: ignore[import-untyped]
    from ai_edge_litert import schema_py_generated as fb

    conv_w, conv_b, fc_w, fc_b = _weights(seed, classes, channels)
    out = (size - 3) // 4 + 1
    buffers: list[bytes] = [b""]

    def buffer(data: bytes) -> int:
        buffers.append(data)
        return len(buffers) - 1

    tensors: list[object] = []

    def tensor(name: str, shape: list[int], dtype: int = fb.TensorType.FLOAT32, data: bytes | None = None) -> int:
        t = fb.TensorT()
        t.name = name
        t.shape = shape
        t.shapeSignature = [-1, *shape[1:]] if data is None else shape
        t.type = dtype
        t.buffer = buffer(data) if data is not None else 0
        tensors.append(t)
        return len(tensors) - 1

    x = tensor("input", [1, size, size, 3])
    w = tensor("conv_w", list(conv_w.transpose(0, 2, 3, 1).shape), data=conv_w.transpose(0, 2, 3, 1).tobytes())
    b = tensor("conv_b", [channels], data=conv_b.tobytes())
    c = tensor("conv", [1, out, out, channels])
    axes = tensor("axes", [2], fb.TensorType.INT32, np.array([1, 2], np.int32).tobytes())
    m = tensor("mean", [1, channels])
    fw = tensor("fc_w", [classes, channels], data=fc_w.tobytes())
    fbias = tensor("fc_b", [classes], data=fc_b.tobytes())
    y = tensor("logits", [1, classes])

    def opcode(code: int) -> object:
        oc = fb.OperatorCodeT()
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127)
        oc.version = 1
        return oc

    conv_opts = fb.Conv2DOptionsT()
    conv_opts.padding = fb.Padding.VALID
    conv_opts.strideH = conv_opts.strideW = 4
    conv_opts.dilationHFactor = conv_opts.dilationWFactor = 1
    conv_opts.fusedActivationFunction = fb.ActivationFunctionType.RELU
    mean_opts = fb.ReducerOptionsT()
    mean_opts.keepDims = False
    fc_opts = fb.FullyConnectedOptionsT()
    fc_opts.fusedActivationFunction = fb.ActivationFunctionType.NONE

    def op(index: int, inputs: list[int], outputs: list[int], kind: int, options: object) -> object:
        o = fb.OperatorT()
        o.opcodeIndex = index
        o.inputs = inputs
        o.outputs = outputs
        o.builtinOptionsType = kind
        o.builtinOptions = options
        return o

    graph = fb.SubGraphT()
    graph.tensors = tensors
    graph.inputs = [x]
    graph.outputs = [y]
    graph.operators = [
        op(0, [x, w, b], [c], fb.BuiltinOptions.Conv2DOptions, conv_opts),
        op(1, [c, axes], [m], fb.BuiltinOptions.ReducerOptions, mean_opts),
        op(2, [m, fw, fbias], [y], fb.BuiltinOptions.FullyConnectedOptions, fc_opts),
    ]
    graph.name = "main"
    model = fb.ModelT()
    model.version = 3
    model.description = "edgeds tiny classifier"
    model.operatorCodes = [
        opcode(fb.BuiltinOperator.CONV_2D),
        opcode(fb.BuiltinOperator.MEAN),
        opcode(fb.BuiltinOperator.FULLY_CONNECTED),
    ]
    model.subgraphs = [graph]
    model.buffers = []
    for data in buffers:
        buf = fb.BufferT()
        buf.data = list(data) if data else None
        model.buffers.append(buf)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(builder.Output()))
    return path


MOBILENET_BLOCKS = (
    (64, 2),
    (128, 1),
    (128, 2),
    (256, 1),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (768, 2),
    (768, 1),
)


def mobilenet_like(path: Path | str, size: int = 160, classes: int = 5, seed: int = 0) -> Path:
    """A MobileNet-v1-shaped ONNX model (the shipped model's architecture, random weights).

    Stem 3x3/2 to 32 channels, then depthwise-separable blocks :data:`MOBILENET_BLOCKS`, ReLU6
    (Clip), global average pool and a linear head; BatchNorm folded. Used by benchmarks as a
    stand-in with a realistic compute cost when the trained model is not there.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: list[object] = []
    nodes: list[object] = []
    lo = numpy_helper.from_array(np.array(0.0, np.float32), "clip_lo")
    hi = numpy_helper.from_array(np.array(6.0, np.float32), "clip_hi")
    inits += [lo, hi]
    counter = [0]

    def conv(x: str, cin: int, cout: int, k: int, stride: int, groups: int = 1) -> str:
        i = counter[0]
        counter[0] += 1
        fan_in = cin // groups * k * k
        w = (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")])
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], strides=[stride, stride], pads=[pad] * 4, group=groups
            )
        )
        nodes.append(helper.make_node("Clip", [f"c{i}", "clip_lo", "clip_hi"], [f"r{i}"]))
        return f"r{i}"

    x = conv("input", 3, 32, 3, 2)
    channels = 32
    for cout, stride in MOBILENET_BLOCKS:
        x = conv(x, channels, channels, 3, stride, groups=channels)
        x = conv(x, channels, cout, 1, 1)
        channels = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    fc_w = (rng.standard_normal((classes, channels)) * 0.05).astype(np.float32)
    inits.extend(
        [numpy_helper.from_array(fc_w, "fc_w"), numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]
    )
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,  # type: ignore[arg-type]
        "mobilenet-like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,  # type: ignore[arg-type]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeds-bench")
    model.ir_version = 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


__all__ = ["MOBILENET_BLOCKS", "mobilenet_like", "tiny_classifier", "tiny_classifier_tflite"]
