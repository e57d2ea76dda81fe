"""Facts about an input ONNX model: validity, content hash, inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backends.base import TensorSpec
from ..errors import InvalidModel
from ..hashing import sha256_file

_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool"}


@dataclass(frozen=True)
class ModelInfo:
    """``sha256`` is the hex digest of the file's bytes (the cache and recipe key)."""

    path: Path
    sha256: str
    size: int
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    op_types: frozenset[str]


def inspect_model(path: str | Path) -> ModelInfo:
    """Load and check ``path`` as ONNX; :class:`InvalidModel` when it is not a loadable model."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InvalidModel(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for garbage
        raise InvalidModel(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0][:200]}") from exc
    if not model.graph.input or not model.graph.output:
        raise InvalidModel(f"{path} is an ONNX file without graph inputs/outputs")
    initializers = {init.name for init in model.graph.initializer}

    def spec(value: object) -> TensorSpec:
        ttype = value.type.tensor_type  # type: ignore[attr-defined]
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim)
        return TensorSpec(value.name, _ONNX_DTYPES.get(ttype.elem_type, "float32"), dims)  # type: ignore[attr-defined]

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ModelInfo(
        path=path,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        opset=opset,
        inputs=tuple(spec(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(spec(v) for v in model.graph.output),
        op_types=frozenset(n.op_type for n in model.graph.node),
    )
