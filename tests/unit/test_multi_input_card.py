"""A card's ``extra_inputs``: the schema, the compile-time values and the fit check.

The fit check names, one line per problem, every model input the card does not describe and
every extra input whose name, dtype or shape disagrees with the model, before any data loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.compile import compile_model, tensor_inputs
from edgeds.compile.fit import check_fit
from edgeds.compile.onnxmodel import inspect_model
from edgeds.errors import ConfigError, InvalidModel
from edgeds.modelcard import ModelCard, TensorInput, load_model_card

CARD = (
    "schema: 1\nname: multi\nversion: 0.1.0\ntask: image-classification\nmodel: model.onnx\n"
    "input: {name: input, height: 8, width: 8}\noutput: {name: logits}\nlabels: [a, b, c, d]\n"
)


def _model(path: Path, extra: list[tuple[str, int, list[int | str]]]) -> Path:
    """The image pooled to 4 logits; every ``(name, onnx dtype, shape)`` input is summed in
    after a cast to float and a ReduceSum to ``[N, 1]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], ["logits0"], transB=1),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 8, 8])]
    last = "logits0"
    for index, (name, dtype, shape) in enumerate(extra):
        inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        nodes += [
            helper.make_node("Cast", [name], [f"c{index}"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", [f"c{index}"], [f"f{index}"], axis=1),
            helper.make_node("ReduceSum", [f"f{index}", "axes"], [f"s{index}"], keepdims=1),
            helper.make_node("Add", [last, f"s{index}"], [f"sum{index}"]),
        ]
        last = f"sum{index}"
    nodes.append(helper.make_node("Identity", [last], ["logits"]))
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        nodes, "multi", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])], [weight, axes]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _card(directory: Path, extra: str = "") -> ModelCard:
    path = directory / "model.yaml"
    path.write_text(CARD + extra)
    return load_model_card(path)


def test_card_without_extra_inputs_is_unchanged(tmp_path: Path) -> None:
    card = _card(tmp_path)
    assert card.extra_inputs == () and card.input_names == ("input",)


def test_extra_inputs_schema(tmp_path: Path) -> None:
    card = _card(
        tmp_path,
        "extra_inputs:\n  - {name: ids, dtype: int64, shape: [6], values: {low: 0, high: 20}}\n"
        "  - {name: aux, shape: [2, 3], values: {constant: 0.5}}\n",
    )
    assert card.input_names == ("input", "ids", "aux")
    assert card.extra_inputs[1].dtype == "float32"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  - {name: ids, dtype: int64, shape: [6], values: {low: 3}}\n", "give both low and high"),
        ("  - {name: ids, dtype: int64, shape: [6], values: {low: 3, high: 3}}\n", "must be above low"),
        ("  - {name: ids, dtype: int16, shape: [6]}\n", "dtype"),
        ("  - {name: ids, shape: [0]}\n", "1 or more"),
        ("  - {name: input, shape: [2]}\n", "more than once"),
        ("  - {name: ids, dtype: int64, shape: [6]}\n", "an input of dtype int64 needs values"),
        ("  - {name: mask, dtype: bool, shape: [6], values: {mean: 1}}\n", "an input of dtype bool needs values"),
    ],
)
def test_extra_inputs_schema_errors(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        _card(tmp_path, "extra_inputs:\n" + extra)


def test_values_per_source() -> None:
    const = TensorInput.model_validate({"name": "a", "shape": [2], "values": {"constant": 3}})
    assert np.array_equal(tensor_inputs.values(const, 4, "validation"), np.full((4, 2), 3, np.float32))
    ints = TensorInput.model_validate({"name": "ids", "dtype": "int64", "shape": [5], "values": {"low": 2, "high": 7}})
    drawn = tensor_inputs.values(ints, 100, "validation")
    assert drawn.dtype == np.int64 and drawn.shape == (100, 5) and drawn.min() >= 2 and drawn.max() < 7
    # seeded per split: the same on every call, another for another split
    assert np.array_equal(drawn, tensor_inputs.values(ints, 100, "validation"))
    assert not np.array_equal(drawn, tensor_inputs.values(ints, 100, "calibration"))
    normal = TensorInput.model_validate({"name": "x", "shape": [1000], "values": {"mean": 5, "std": 0.1}})
    values = tensor_inputs.values(normal, 2, "validation")
    assert values.dtype == np.float32 and abs(float(values.mean()) - 5) < 0.05
    flags = TensorInput.model_validate({"name": "m", "dtype": "bool", "shape": [3], "values": {"low": 0, "high": 2}})
    assert tensor_inputs.values(flags, 2, "validation").dtype == np.bool_


def test_fit_with_extra_inputs(tmp_path: Path) -> None:
    from onnx import TensorProto

    info = inspect_model(_model(tmp_path / "model.onnx", [("ids", TensorProto.INT64, ["n", 6])]))
    card = _card(tmp_path, "extra_inputs:\n  - {name: ids, dtype: int64, shape: [6], values: {low: 0, high: 20}}\n")
    assert check_fit(info, card).batch is None


def test_fit_names_an_input_the_card_lacks(tmp_path: Path) -> None:
    from onnx import TensorProto

    info = inspect_model(_model(tmp_path / "model.onnx", [("aux", TensorProto.FLOAT, ["n", 8])]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    text = str(exc.value)
    assert "\n" not in text
    assert "'aux'" in text and "extra_inputs" in text and "{name: aux, dtype: float32, shape: [8]}" in text


def test_fit_one_line_per_problem(tmp_path: Path) -> None:
    from onnx import TensorProto

    model = _model(
        tmp_path / "model.onnx",
        [("ids", TensorProto.INT64, ["n", 6]), ("aux", TensorProto.FLOAT, ["n", 8]), ("m", TensorProto.BOOL, ["n", 2])],
    )
    card = _card(
        tmp_path,
        "extra_inputs:\n  - {name: ids, dtype: float32, shape: [6]}\n  - {name: aux, shape: [8, 1]}\n"
        "  - {name: m, dtype: bool, shape: [3], values: {constant: 1}}\n  - {name: gone, shape: [1]}\n",
    )
    with pytest.raises(InvalidModel) as exc:
        check_fit(inspect_model(model), card)
    lines = str(exc.value).splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith(f"{model}: ") for line in lines)
    text = "\n".join(lines)
    assert "'ids' takes int64 but the card says dtype float32" in text
    assert "'aux' is [N,8] (rank 2) but the card says [N,8,1]" in text
    assert "'m' is [N,2] but the card says [N,3]" in text
    assert "'gone' is not a model input" in text


def test_compile_checks_extra_inputs_before_loading_data(tmp_path: Path) -> None:
    from onnx import TensorProto

    _model(tmp_path / "model.onnx", [("ids", TensorProto.INT64, ["n", 6])])
    fp = "sha256:" + "0" * 64
    _card(
        tmp_path,
        "data:\n  generator: nowhere.at_all:generate\n"
        f"  validation: {{seed: 1, count: 4, fingerprint: '{fp}'}}\n"
        f"  calibration: {{seed: 2, count: 4, fingerprint: '{fp}'}}\n",
    )
    with pytest.raises(InvalidModel, match=r"'ids' .* is not in the model card"):
        compile_model(tmp_path / "model.onnx", "x86-cpu", out=tmp_path / "out", use_cache=False)


def test_fit_refuses_a_fixed_batch_extra_input_beside_a_dynamic_image(tmp_path: Path) -> None:
    from onnx import TensorProto

    info = inspect_model(_model(tmp_path / "model.onnx", [("aux", TensorProto.FLOAT, [1, 8])]))
    card = _card(tmp_path, "extra_inputs:\n  - {name: aux, shape: [8]}\n")
    with pytest.raises(InvalidModel, match="'aux' has another batch dimension than 'input'"):
        check_fit(info, card)
