"""check_fit: a model against its card and profile, one line naming what does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeds.compile.fit import check_fit
from edgeds.compile.onnxmodel import inspect_model
from edgeds.config import load_profile
from edgeds.errors import InvalidModel
from edgeds.modelcard import ModelCard, load_model_card

Dim = int | str


def _model(
    path: Path,
    input_shape: list[Dim],
    output_shape: list[Dim],
    *,
    input_name: str = "input",
    output_name: str = "logits",
    dtype: int | None = None,
) -> Path:
    """A graph ``GlobalAveragePool -> Flatten -> Gemm(3 -> output_shape[1])`` with the given I/O."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes = output_shape[1] if len(output_shape) > 1 and isinstance(output_shape[1], int) else 4
    weight = numpy_helper.from_array(np.ones((classes, 3), dtype=np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", [input_name], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], [output_name], transB=1),
    ]
    elem = dtype if dtype is not None else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "fit",
        [helper.make_tensor_value_info(input_name, elem, input_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, output_shape)],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _card(
    directory: Path, *, height: int = 8, width: int = 8, layout: str = "NCHW", dtype: str = "float32"
) -> ModelCard:
    path = directory / "model.yaml"
    path.write_text(
        "schema: 1\nname: fit\nversion: 0.1.0\ntask: image-classification\nmodel: model.onnx\n"
        f"input: {{name: input, layout: {layout}, height: {height}, width: {width}, dtype: {dtype}}}\n"
        "output: {name: logits}\nlabels: [a, b, c, d]\n"
    )
    return load_model_card(path)


def _one_line(exc: pytest.ExceptionInfo[InvalidModel]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_dynamic_batch_fits(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["batch", 3, 8, 8], ["batch", 4]))
    fit = check_fit(info, _card(tmp_path), load_profile("x86-cpu"))
    assert fit.batch is None
    assert fit.notes == ()


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_is_reported(tmp_path: Path, batch: int) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", [batch, 3, 8, 8], [batch, 4]))
    fit = check_fit(info, _card(tmp_path), load_profile("x86-cpu"))
    assert fit.batch == batch
    assert len(fit.notes) == 1
    assert f"fixed at {batch}" in fit.notes[0]


def test_fixed_input_with_symbolic_output_fits(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", [2, 3, 8, 8], ["n", 4]))
    assert check_fit(info, _card(tmp_path)).batch == 2


def test_nhwc_input(tmp_path: Path) -> None:
    # GlobalAveragePool reads NCHW, but check_fit looks only at the declared I/O
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 8, 8, 3], ["n", 4]))
    assert check_fit(info, _card(tmp_path, layout="NHWC")).batch is None


def test_missing_input_name(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8, 8], ["n", 4], input_name="pixels"))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    text = _one_line(exc)
    assert "'input'" in text and "pixels" in text and "input.name" in text


def test_missing_output_name(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8, 8], ["n", 4], output_name="scores"))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    assert "scores" in _one_line(exc)


def test_dtype_mismatch(tmp_path: Path) -> None:
    from onnx import TensorProto

    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8, 8], ["n", 4], dtype=TensorProto.FLOAT16))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    text = _one_line(exc)
    assert "float16" in text and "input.dtype float32" in text


def test_size_mismatch_names_the_card_fields(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", [1, 3, 224, 224], [1, 4]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path, height=160, width=160))
    text = _one_line(exc)
    assert "[1,3,224,224]" in text and "160x160 NCHW" in text and "input.height/width" in text


def test_layout_swapped_suggests_the_other_layout(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 8, 8, 3], ["n", 4]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    assert "input.layout: NHWC" in _one_line(exc)


def test_rank_the_layout_cannot_describe(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8], ["n", 4]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    assert "rank 3" in _one_line(exc)


def test_class_count_against_labels(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8, 8], ["n", 5]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    text = _one_line(exc)
    assert "5 classes" in text and "4 labels" in text


def test_output_rank(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8, 8], ["n"]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    assert "[batch, classes]" in _one_line(exc)


def test_trailing_unit_dims_of_the_output_fit(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8, 8], ["n", 4, 1, 1]))
    assert check_fit(info, _card(tmp_path)).batch is None


def test_batch_disagrees_between_input_and_output(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", [2, 3, 8, 8], [1, 4]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    assert "batch 2" in _one_line(exc)


def test_dynamic_input_with_fixed_output(tmp_path: Path) -> None:
    info = inspect_model(_model(tmp_path / "model.onnx", ["n", 3, 8, 8], [1, 4]))
    with pytest.raises(InvalidModel) as exc:
        check_fit(info, _card(tmp_path))
    assert "dynamic batch" in _one_line(exc)


def test_compile_checks_the_fit_before_loading_data(tmp_path: Path) -> None:
    """A model that does not fit fails at once, even when its card's data does not exist."""
    from edgeds.compile import compile_model

    _model(tmp_path / "model.onnx", [1, 3, 224, 224], [1, 4])
    card = _card(tmp_path, height=160, width=160)
    # a data section whose generator does not exist: loading it would fail with another error
    text = (tmp_path / "model.yaml").read_text()
    fp = "sha256:" + "0" * 64
    text += (
        "data:\n  generator: nowhere.at_all:generate\n"
        f"  validation: {{seed: 1, count: 4, fingerprint: '{fp}'}}\n"
        f"  calibration: {{seed: 2, count: 4, fingerprint: '{fp}'}}\n"
    )
    (tmp_path / "model.yaml").write_text(text)
    assert card.input.height == 160
    with pytest.raises(InvalidModel) as exc:
        compile_model(tmp_path / "model.onnx", "x86-cpu", out=tmp_path / "out", use_cache=False)
    assert "input.height/width" in _one_line(exc)
