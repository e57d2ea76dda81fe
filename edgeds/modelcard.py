"""Model cards: the metadata beside a model, its schemas and loading.

A card names what is compiled (the model file), how its inputs are made and what its outputs
mean, and where its calibration and evaluation data come from. Errors are
:class:`~edgeds.errors.ConfigError` lines ``file:line: field: message``, as for profiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from .config import NAME_PATTERN, Frozen, validate_mapping
from .errors import ConfigError
from .yamlio import display_path, load_yaml


class InputSpec(Frozen):
    """How raw RGB uint8 images become the model's input tensor."""

    name: str
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    color_order: Literal["RGB", "BGR"] = "RGB"
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    scale: float = Field(default=1 / 255, gt=0, description="applied first")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: Literal["stretch", "letterbox"] = "stretch"

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v == 0 for v in value):
            raise ValueError("std must not contain 0")
        return value


class OutputSpec(Frozen):
    name: str
    kind: Literal["logits", "probabilities"] = "logits"


class DataSplit(Frozen):
    """A split produced by the card's generator: ``seed``, ``count``, and its fingerprint."""

    seed: int
    count: int = Field(ge=1)
    fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class DataSource(Frozen):
    """Where calibration and validation data come from."""

    generator: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function")
    validation: DataSplit
    calibration: DataSplit


class ReferenceFigures(Frozen):
    fp32_top1: float = Field(ge=0, le=1)


class ModelCard(Frozen):
    """Metadata beside ``<model>.onnx``. Relative paths are relative to the card's directory."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    task: Literal["image-classification"]
    description: str = ""
    model: str
    input: InputSpec
    output: OutputSpec
    labels: tuple[str, ...] = Field(min_length=2)
    data: DataSource | None = None
    samples: str | None = None
    reference: ReferenceFigures | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Set by load_model_card; not part of the YAML.
    _directory: Path = Path(".")

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def model_path(self) -> Path:
        return self._directory / self.model

    @property
    def samples_dir(self) -> Path | None:
        return self._directory / self.samples if self.samples else None


def load_model_card(path: str | Path) -> ModelCard:
    """Load a model card. ``path`` may be the YAML, the ONNX file beside it, or its directory."""
    path = Path(path)
    if path.is_dir():
        cards = sorted(path.glob("*.yaml"))
        if len(cards) != 1:
            raise ConfigError.single(
                display_path(path), None, "", f"expected one model card *.yaml, found {len(cards)}"
            )
        path = cards[0]
    elif path.suffix == ".onnx":
        candidates = [path.with_suffix(".yaml"), *sorted(path.parent.glob("*.yaml"))]
        card_path = next((c for c in candidates if c.is_file()), None)
        if card_path is None:
            raise ConfigError.single(display_path(path), None, "", "no model card (*.yaml) beside the ONNX file")
        path = card_path
    data, smap = load_yaml(path)
    card = validate_mapping(ModelCard, data, smap, display_path(path))
    card._directory = path.parent
    return card
