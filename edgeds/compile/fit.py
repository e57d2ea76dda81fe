"""Whether an ONNX model fits its model card and profile, checked before any expensive work.

:func:`check_fit` compares the inspected model (:class:`~edgeds.compile.onnxmodel.ModelInfo`)
with the card's input and output and the profile's batching, and raises one
:class:`~edgeds.errors.InvalidModel` line naming what does not fit and what to do. What it
returns, :class:`Fit`, says how the batch dimension is: symbolic (dynamic, ``batch`` None) or
fixed at N, in which case every stage feeds and serves batches of exactly N. Pure: it reads
nothing but its arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..backends.base import TensorSpec
from ..errors import InvalidModel

if TYPE_CHECKING:
    from ..config import Profile
    from ..modelcard import ModelCard
    from .onnxmodel import ModelInfo

_CHANNEL_AXIS = {"NCHW": 1, "NHWC": 3}
_SPATIAL_AXES = {"NCHW": (2, 3), "NHWC": (1, 2)}


@dataclass(frozen=True)
class Fit:
    """How the model is fed: ``batch`` is the fixed batch size N, or None for a dynamic batch.

    ``notes`` are lines for the compile report (e.g. that the batch is fixed).
    """

    batch: int | None
    notes: tuple[str, ...] = ()


def _dims(spec: TensorSpec) -> str:
    return "[" + ",".join(str(d) if d >= 0 else "N" for d in spec.shape) + "]"


def tensor_input_problems(info: ModelInfo, card: ModelCard) -> list[str]:
    """One line per way the model's inputs disagree with the card's ``extra_inputs``: an input
    the model takes that the card does not describe, an extra input the model lacks, or one whose
    dtype, rank or non-batch dims differ from the card's."""
    inputs = {i.name: i for i in info.inputs}
    problems = []
    named = set(card.input_names)
    first = card.input_names[0]  # the image input, or a generic model's first input
    section = "inputs" if card.task == "generic" else "extra_inputs"
    for name in sorted(set(inputs) - named):
        x = inputs[name]
        dims = "[" + ", ".join(str(d) if d >= 0 else "1" for d in x.shape[1:]) + "]"
        values = "" if x.dtype in ("float32", "float16") else ", values: {low: 0, high: N}"
        problems.append(
            f"model input {name!r} ({x.dtype} {_dims(x)}) is not in the model card: describe it under "
            f"{section} (e.g. {{name: {name}, dtype: {x.dtype}, shape: {dims}{values}}})"
        )
    for spec in card.extra_inputs:
        found = inputs.get(spec.name)
        if found is None:
            problems.append(
                f"the model card's input {spec.name!r} is not a model input (the model takes "
                f"{sorted(inputs)}): fix {section} in the model card"
            )
            continue
        x = found
        want = "[N," + ",".join(str(d) for d in spec.shape) + "]"
        if x.dtype != spec.dtype:
            problems.append(
                f"model input {x.name!r} takes {x.dtype} but the card says dtype {spec.dtype}: "
                f"set its dtype in {section} to {x.dtype}"
            )
        if len(x.shape) != len(spec.shape) + 1:
            problems.append(
                f"model input {x.name!r} is {_dims(x)} (rank {len(x.shape)}) but the card says {want} "
                f"(rank {len(spec.shape) + 1}): fix its shape in {section} (without the batch dimension)"
            )
        elif any(d >= 0 and d != w for d, w in zip(x.shape[1:], spec.shape, strict=True)):
            problems.append(
                f"model input {x.name!r} is {_dims(x)} but the card says {want}: fix its shape in {section}"
            )
        elif inputs.get(first, x).shape[0] != x.shape[0]:  # fixed against dynamic counts too
            problems.append(f"model input {x.name!r} has another batch dimension than {first!r}")
    return problems


def check_fit(info: ModelInfo, card: ModelCard, profile: Profile | None = None) -> Fit:
    """The :class:`Fit` of ``info`` for ``card`` (and ``profile``'s batching, for the notes).

    Raises :class:`InvalidModel` when the model's inputs and the card's ``extra_inputs`` differ
    (one line per problem, see :func:`tensor_input_problems`), an input/output the card names is missing, the input's
    dtype is not the card's ``input.dtype``, its rank or non-batch dims disagree with the card's
    layout, height and width (3 colour channels), the output is not one score per label for each
    sample, or the batch dimension is fixed below 1 or differs between input and output.
    """
    where = f"{info.path}: "
    if card.task == "generic":
        return _check_generic(info, card, profile, where)
    inputs = {i.name: i for i in info.inputs}
    outputs = {o.name: o for o in info.outputs}
    if card.input.name not in inputs or card.output.name not in outputs:
        raise InvalidModel(
            f"{where}the model card names input {card.input.name!r} / output {card.output.name!r}, the model has "
            f"inputs {sorted(inputs)} and outputs {sorted(outputs)}: fix input.name/output.name in the model card"
        )
    problems = tensor_input_problems(info, card)
    if problems:
        raise InvalidModel("\n".join(where + p for p in problems))
    x = inputs[card.input.name]
    want = card.input
    if x.dtype != want.dtype:
        raise InvalidModel(
            f"{where}model input {x.name!r} takes {x.dtype} but the card says input.dtype {want.dtype}: "
            "set input.dtype in the model card to the model's (float32, float16 or uint8)"
        )
    layout = want.layout
    if len(x.shape) != 4:
        raise InvalidModel(
            f"{where}model input {x.name!r} is {_dims(x)} (rank {len(x.shape)}), but the card's {layout} layout "
            f"describes rank-4 images [batch, ...]: give the model an image input or fix input.layout"
        )
    channel = x.shape[_CHANNEL_AXIS[layout]]
    h, w = (x.shape[a] for a in _SPATIAL_AXES[layout])
    if channel not in (-1, 3):
        other = "NHWC" if layout == "NCHW" else "NCHW"
        swapped = x.shape[_CHANNEL_AXIS[other]] == 3
        hint = f"set input.layout: {other} in the model card" if swapped else "give the model 3 colour channels"
        raise InvalidModel(
            f"{where}model input {x.name!r} is {_dims(x)} but the card says {layout} with 3 colour channels: {hint}"
        )
    if (h not in (-1, want.height)) or (w not in (-1, want.width)):
        raise InvalidModel(
            f"{where}model input {x.name!r} is {_dims(x)} but the card says {want.height}x{want.width} {layout}: "
            "fix input.height/width in the model card"
        )
    y = outputs[card.output.name]
    if card.task == "object-detection":
        _check_detection_head(y, len(card.labels), where)
    elif len(y.shape) < 2:
        raise InvalidModel(
            f"{where}model output {y.name!r} is {_dims(y)}, but an image classifier's output is "
            f"[batch, classes] ({len(card.labels)} labels in the card): export the logits as the output"
        )
    classes = math.prod(y.shape[1:])  # [batch, classes, 1, 1] counts as [batch, classes]
    if card.task != "object-detection" and all(d >= 0 for d in y.shape[1:]) and classes != len(card.labels):
        raise InvalidModel(
            f"{where}model output {y.name!r} has {classes} classes but the card lists {len(card.labels)} "
            "labels: fix labels in the model card"
        )
    return _batch_fit(x, y, profile, where)


def _check_generic(info: ModelInfo, card: ModelCard, profile: Profile | None, where: str) -> Fit:
    """A generic card: every model input described in ``inputs:``, every ``outputs:`` name an output."""
    problems = tensor_input_problems(info, card)
    outputs = {o.name: o for o in info.outputs}
    names = [o.name for o in getattr(card, "outputs", ())]
    missing = [n for n in names if n not in outputs]
    if missing:
        problems.append(
            f"the model card's output(s) {missing} are not model outputs (the model has {sorted(outputs)}): "
            "fix outputs in the model card"
        )
    if problems:
        raise InvalidModel("\n".join(where + p for p in problems))
    x = next(i for i in info.inputs if i.name == card.input_names[0])
    return _batch_fit(x, outputs[names[0]], profile, where)


def _batch_fit(x: TensorSpec, y: TensorSpec, profile: Profile | None, where: str) -> Fit:
    """Whether input ``x``'s and output ``y``'s batch dimensions agree, and which batch that is."""
    batch = x.shape[0]
    if batch < 0:
        if y.shape[0] >= 0:
            raise InvalidModel(
                f"{where}model input {x.name!r} has a dynamic batch but output {y.name!r} is {_dims(y)}: "
                "export the output with the same (dynamic) batch dimension"
            )
        return Fit(None)
    if batch == 0:
        raise InvalidModel(f"{where}model input {x.name!r} has batch dimension 0: export it with a batch of 1 or more")
    if y.shape[0] not in (-1, batch):
        raise InvalidModel(
            f"{where}model input {x.name!r} has batch {batch} but output {y.name!r} is {_dims(y)}: "
            "export the output with the same batch dimension"
        )
    note = f"the model's batch is fixed at {batch}: compiled, gated and served at batch {batch} only"
    if profile is not None and profile.batching.max_batch_size != batch:
        note += f" (the profile's max_batch_size {profile.batching.max_batch_size} is replaced)"
    if batch == 1:
        note += "; export with a dynamic batch dimension to batch requests"
    return Fit(batch, (note,))


def _check_detection_head(y: TensorSpec, labels: int, where: str) -> None:
    """A YOLO head is ``[batch, 4 + classes, anchors]`` (Ultralytics' export layout)."""
    if len(y.shape) != 3:
        raise InvalidModel(
            f"{where}model output {y.name!r} is {_dims(y)}, but a YOLO detection head is [batch, 4 + classes, "
            "anchors] (Ultralytics' ONNX export): export the raw head, without NMS"
        )
    rows = y.shape[1]
    if rows >= 0 and rows != 4 + labels:
        transposed = y.shape[2] == 4 + labels
        hint = "transpose it to [batch, 4 + classes, anchors]" if transposed else "fix labels in the model card"
        raise InvalidModel(
            f"{where}model output {y.name!r} is {_dims(y)}: {rows} rows, but 4 box rows + {labels} labels "
            f"in the card make {4 + labels}: {hint}"
        )
