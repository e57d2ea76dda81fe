"""Model cards: the metadata beside a model, its schemas and loading.

A card names what is compiled (the model file or checkpoint), how its inputs are made and what
its outputs mean, and where its calibration and evaluation data come from. The card's ``task``
selects its schema: ``image-classification`` (:class:`ModelCard`, an ONNX model),
``object-detection`` (:class:`DetectionCard`, an ONNX model with an Ultralytics-style YOLO head)
or ``causal-lm`` (:class:`LMCard`, a Hugging Face checkpoint directory, checked against its
``config.json``). Errors are :class:`~edgeds.errors.ConfigError` lines
``file:line: field: message``, as for profiles. Which file is a model's card is
:mod:`edgeds.card_lookup`'s job; a card found beside an ONNX file must name it in ``model:``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .card_lookup import card_path
from .config import NAME_PATTERN, Frozen, validate_mapping
from .errors import ConfigError
from .yamlio import SourceMap, display_path, load_yaml

TASKS = ("image-classification", "object-detection", "generic", "causal-lm")
ARCHITECTURES = ("qwen2", "llama", "phi3")
"""Decoder architectures (config.json ``model_type``) the LM exporters and runtimes handle."""


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


class TensorValues(Frozen):
    """Where compile's calibration and validation values of a tensor input come from.

    ``constant`` fills every element with one value; else ``low``/``high`` (integers) draw
    uniformly from ``[low, high)``; else a normal draw of ``mean``/``std``. Draws are seeded with
    ``seed`` and the split, so a split's values are the same on every compile.
    """

    constant: float | None = None
    low: int | None = None
    high: int | None = None
    mean: float = 0.0
    std: float = Field(default=1.0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _range(self) -> TensorValues:
        if (self.low is None) != (self.high is None):
            raise ValueError("give both low and high (an integer range [low, high))")
        if self.low is not None and self.high is not None and self.high <= self.low:
            raise ValueError(f"high {self.high} must be above low {self.low}")
        return self


class TensorInput(Frozen):
    """A model input that is a plain tensor, not an image: fed as is (never preprocessed).

    ``shape`` excludes the batch dimension. Integer and bool inputs are never quantized.
    """

    name: str
    dtype: Literal["float32", "float16", "int64", "int32", "uint8", "bool"] = "float32"
    shape: tuple[int, ...] = Field(description="without the batch dimension")
    values: TensorValues = TensorValues()

    @field_validator("shape")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 1 for d in value):
            raise ValueError("every dimension must be 1 or more")
        return value

    @model_validator(mode="after")
    def _integer_values_given(self) -> TensorInput:
        """A normal draw suits float inputs only: token ids or a mask need their own values."""
        if self.dtype not in ("float32", "float16") and self.values.constant is None and self.values.low is None:
            raise ValueError(
                f"an input of dtype {self.dtype} needs values: {{low, high}} (e.g. token ids in "
                "[0, vocabulary)) or {constant}"
            )
        return self


class OutputSpec(Frozen):
    name: str
    kind: Literal["logits", "probabilities"] = "logits"


class DetectionOutput(OutputSpec):
    """A detection head and how its boxes are served (:mod:`edgeds.boxes`).

    ``format: yolo`` is an Ultralytics YOLOv8/YOLO11 ONNX export's output ``[N, 4 + classes,
    anchors]``: centre x, centre y, width, height in model-input pixels, then one score per class
    (no objectness, no NMS in the graph). A served answer keeps boxes scoring at least
    ``score_threshold`` after class-aware NMS at ``iou_threshold``, at most ``max_detections``
    per image (Ultralytics' predict defaults); the mAP gate scores every box down to 0.001.
    """

    format: Literal["yolo"] = "yolo"
    score_threshold: float = Field(default=0.25, gt=0, le=1)
    iou_threshold: float = Field(default=0.7, gt=0, le=1)
    max_detections: int = Field(default=300, ge=1)

    @model_validator(mode="after")
    def _no_kind(self) -> DetectionOutput:
        if "kind" in self.model_fields_set:
            raise ValueError("kind is for classifier outputs: a detection head is described by format (yolo)")
        return self


class FilesSplit(Frozen):
    """A split read from files. For an object detector: a directory of images and, for a labelled
    set, a COCO instances JSON (``images`` entries name files under the directory; ``categories``
    names are the card's labels). For an image classifier: an ImageFolder directory
    (``<images>/<label>/<image files>``, :mod:`edgeds.datasets.imagefolder`), no JSON. Paths are
    relative to the card. ``fingerprint`` (the split's ``sha256:``), when given, is checked on
    every load."""

    images: str = Field(description="directory of the images")
    annotations: str | None = Field(default=None, description="COCO instances JSON; none: unlabelled")
    fingerprint: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")


class FilesData(Frozen):
    """Calibration and validation data from files (a card's ``data_files:``; the two splits may
    name the same directory)."""

    validation: FilesSplit
    calibration: FilesSplit


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
    task: Literal["image-classification", "object-detection", "generic"]
    description: str = ""
    model: str
    input: InputSpec
    extra_inputs: tuple[TensorInput, ...] = Field(
        default=(), description="tensor inputs besides the image input (name, dtype, shape, values)"
    )
    output: OutputSpec
    labels: tuple[str, ...] = Field(min_length=2)
    data: DataSource | None = None
    data_files: FilesData | None = None
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

    @property
    def input_names(self) -> tuple[str, ...]:
        """Every input the model takes: the image input first, then the extra inputs."""
        return (self.input.name, *(x.name for x in self.extra_inputs))

    @model_validator(mode="after")
    def _task_output(self) -> ModelCard:
        if self.task == "object-detection" and not isinstance(self.output, DetectionOutput):
            raise ValueError("an object-detection card is a DetectionCard (its output is a detection head)")
        if self.task == "generic" and not isinstance(self, GenericCard):
            raise ValueError("a generic card is a GenericCard (inputs: and outputs:, no image input)")
        return self

    @model_validator(mode="after")
    def _one_data_source(self) -> ModelCard:
        if self.data is not None and self.data_files is not None:
            raise ValueError("give data (a generator) or data_files (files), not both")
        if self.task == "image-classification" and self.data_files is not None:
            for split in (self.data_files.validation, self.data_files.calibration):
                if split.annotations is not None:
                    raise ValueError(
                        "a classifier's data_files split is an ImageFolder directory (images: <root> holding "
                        "<label>/<image files>): drop annotations"
                    )
        return self

    @property
    def has_data(self) -> bool:
        return self.data is not None or self.data_files is not None

    @model_validator(mode="after")
    def _unique_inputs(self) -> ModelCard:
        names = [self.input.name, *(x.name for x in self.extra_inputs)]
        duplicate = sorted({n for n in names if names.count(n) > 1})
        if duplicate:
            raise ValueError(f"input name(s) {duplicate} given more than once")
        return self


class DetectionCard(ModelCard):
    """An object detector (``task: object-detection``): an ONNX model whose output is a detection
    head (:class:`DetectionOutput`); ``labels`` are the class names in the head's class order.
    Its data is either ``data:`` (a generator returning images and boxes, see
    :mod:`edgeds.datasets.detection`) or ``data_files:`` (images with COCO JSON)."""

    task: Literal["object-detection"]
    output: DetectionOutput
    labels: tuple[str, ...] = Field(min_length=1)


class TensorOutput(Frozen):
    """An output of a generic model: its name and what its values are. ``kind: logits`` on an
    output whose last dimension is above 1 adds argmax agreement to the gate."""

    name: str
    kind: Literal["logits", "values"] = "values"


class SampleCounts(Frozen):
    """How many samples each split has when generated from the inputs' ``values:``."""

    validation: int = Field(default=64, ge=1)
    calibration: int = Field(default=32, ge=1)


class NpzFiles(Frozen):
    """A generic model's splits from files: one ``.npz`` per split, one array ``[N, *shape]`` per
    input name (paths relative to the card)."""

    validation: str
    calibration: str


class GenericCard(ModelCard):
    """Any ONNX model with tensor inputs and outputs (``task: generic``), no image input.

    ``inputs`` (:class:`TensorInput`: name, dtype, shape without batch, ``values:``) are every
    input of the model, fed as an image card's ``extra_inputs`` are (the attribute
    :attr:`extra_inputs` holds them, so every stage that feeds tensor inputs feeds these);
    ``input`` and ``output`` are None. Data: ``data_files:`` (an ``.npz`` per split, keyed by
    input name) or else ``samples_per_split`` rows generated from each input's ``values:``
    (seeded). The gate is :mod:`edgeds.compile.gates.generic`.
    """

    task: Literal["generic"]
    input: InputSpec | None = None  # type: ignore[assignment]
    output: OutputSpec | None = None  # type: ignore[assignment]
    extra_inputs: tuple[TensorInput, ...] = Field(alias="inputs", min_length=1, description="every model input")
    outputs: tuple[TensorOutput, ...] = Field(min_length=1)
    labels: tuple[str, ...] = ()
    data: None = None
    data_files: NpzFiles | None = None  # type: ignore[assignment]
    samples_per_split: SampleCounts = SampleCounts()

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(x.name for x in self.extra_inputs)

    @model_validator(mode="after")
    def _unique_inputs(self) -> GenericCard:
        names = list(self.input_names)
        duplicate = sorted({n for n in names if names.count(n) > 1})
        if duplicate:
            raise ValueError(f"input name(s) {duplicate} given more than once")
        outs = [o.name for o in self.outputs]
        if len(set(outs)) != len(outs):
            raise ValueError("an output name is given more than once")
        return self


class SpecialTokens(Frozen):
    """Special tokens as text (as in ``tokenizer.json``); None = the checkpoint has none."""

    bos: str | None = None
    eos: str | None = None
    pad: str | None = None


class GenerationDefaults(Frozen):
    """Sampling a request gets unless it says otherwise (0 temperature = greedy)."""

    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, description="0 = off")


class LMDataSource(Frozen):
    """The generator of the evaluation (held-out prompts) and calibration splits."""

    generator: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function")
    evaluation: DataSplit
    calibration: DataSplit


class TaskMetric(Frozen):
    """The task metric: ``scorer(answer, example) -> bool``, averaged over the evaluation split."""

    name: str
    scorer: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function")


class LMReferenceFigures(Frozen):
    """What the FP32 checkpoint scores (task metric as a fraction; perplexity over the answers)."""

    fp32_task_metric: float | None = Field(default=None, ge=0, le=1)
    fp32_perplexity: float | None = Field(default=None, ge=1)


class LMCard(Frozen):
    """A decoder language model (``task: causal-lm``): a Hugging Face checkpoint directory
    (``config.json``, safetensors, ``tokenizer.json``, generation config, chat template).
    Relative paths are relative to the card's directory."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    task: Literal["causal-lm"]
    description: str = ""
    model: str = Field(description="the checkpoint directory")
    architecture: Literal["qwen2", "llama", "phi3"]
    context_length: int = Field(ge=16, description="tokens, prompt and generation together")
    chat_template: str = Field(
        default="tokenizer",
        description="'tokenizer' (the checkpoint's chat_template.jinja or tokenizer_config.json's) or a Jinja file",
    )
    special_tokens: SpecialTokens = SpecialTokens()
    generation: GenerationDefaults = GenerationDefaults()
    data: LMDataSource | None = None
    metric: TaskMetric | None = None
    reference: LMReferenceFigures | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Set by the loader; not part of the YAML.
    _directory: Path = Path(".")

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def model_path(self) -> Path:
        """The checkpoint directory."""
        return self._directory / self.model

    def checkpoint_config(self) -> dict[str, Any]:
        """The checkpoint's ``config.json``."""
        data: dict[str, Any] = json.loads((self.model_path / "config.json").read_text())
        return data

    def chat_template_text(self) -> str:
        """The chat template's Jinja source: for ``tokenizer``, the checkpoint's ``chat_template.jinja``
        or else ``tokenizer_config.json``'s ``chat_template``; otherwise the named file."""
        if self.chat_template != "tokenizer":
            return (self._directory / self.chat_template).read_text()
        jinja = self.model_path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text()
        config = json.loads((self.model_path / "tokenizer_config.json").read_text())
        return str(config["chat_template"])


AnyCard = ModelCard | LMCard


def _checkpoint_problems(card: LMCard, smap: SourceMap, shown: Path) -> list[tuple[Path | None, int | None, str, str]]:
    """What the checkpoint directory says against the card: one problem per mismatch."""

    def at(field: str, message: str) -> tuple[Path | None, int | None, str, str]:
        return (shown, smap.where((field,))[1], field, message)

    root = card.model_path
    config_file = root / "config.json"
    if not config_file.is_file():
        return [at("model", f"{root} has no config.json (a Hugging Face checkpoint directory is expected)")]
    try:
        config = card.checkpoint_config()
    except ValueError as exc:
        return [at("model", f"{config_file} is not JSON: {exc}")]
    problems = []
    model_type = config.get("model_type")
    if model_type != card.architecture:
        known = ", ".join(ARCHITECTURES)
        problems.append(at("architecture", f"config.json says model_type {model_type!r} (supported: {known})"))
    limit = config.get("max_position_embeddings")
    if isinstance(limit, int) and card.context_length > limit:
        problems.append(at("context_length", f"{card.context_length} > the model's max_position_embeddings {limit}"))
    if not (root / "tokenizer.json").is_file():
        problems.append(at("model", f"{root} has no tokenizer.json"))
    if card.chat_template == "tokenizer":
        tok_config = root / "tokenizer_config.json"
        try:
            has = "chat_template" in json.loads(tok_config.read_text())
        except (OSError, ValueError):
            has = False
        if not has and not (root / "chat_template.jinja").is_file():
            problems.append(
                at("chat_template", f"{tok_config} has no chat_template (nor is there a chat_template.jinja)")
            )
    elif not (card.directory / card.chat_template).is_file():
        problems.append(at("chat_template", f"no file {card.chat_template!r} beside the card"))
    return problems


def load_card(path: str | Path, *, check_checkpoint: bool = True) -> AnyCard:
    """Load a model card of any task. ``path`` may be the YAML, an ONNX file (its card found by
    :func:`~edgeds.card_lookup.card_path`, and it must name that file), or the card's directory.
    The ``task`` selects the schema; a causal-lm card is checked against its checkpoint's
    ``config.json`` (architecture, context length, tokenizer, chat template) unless
    ``check_checkpoint`` is False (a bundle's copy of the card has no checkpoint beside it)."""
    given = Path(path)
    file = card_path(given)
    card = _load_file(file, check_checkpoint=check_checkpoint)
    if given.suffix == ".onnx":
        check_describes(card, file, given)
    return card


def check_describes(card: AnyCard, file: Path, model: Path) -> None:
    """Refuse a card whose ``model:`` is not ``model``, in one line (an explicit ``--card`` skips this)."""
    if describes_other(card, model):
        raise ConfigError.single(
            None,
            None,
            "",
            f"card {display_path(file)} describes {card.model}, not {model.name}: pass the matching --card",
        )


def model_card_for(model: str | Path, card: str | Path | None = None) -> tuple[ModelCard, Path]:
    """The image card (image-classification or object-detection) of the ONNX file ``model`` and the card's file.

    Without ``card`` the card is found beside the model and must name it in ``model:``. With
    ``card`` (a YAML or the directory holding one) that card is used as given: the ONNX file
    ``model`` is what is compiled or run even when the card's ``model:`` names another file
    (:func:`describes_other` tells the caller to record both)."""
    if card is None:
        file = card_path(Path(model))
        loaded = _load_file(file, check_checkpoint=True)
        check_describes(loaded, file, Path(model))
    elif Path(card).suffix == ".onnx":
        raise ConfigError.single(None, None, "--card", f"{card} is a model: --card takes a model card YAML")
    else:
        file = card_path(Path(card))
        loaded = _load_file(file, check_checkpoint=True)
    if not isinstance(loaded, ModelCard):
        raise ConfigError.single(
            display_path(file), None, "task", f"{loaded.task} card, expected image-classification or object-detection"
        )
    return loaded, file


def describes_other(card: AnyCard, model: Path) -> bool:
    """Whether ``card``'s ``model:`` names a file other than ``model``."""
    return card.model_path.resolve() != Path(model).resolve()


def _load_file(path: Path, *, check_checkpoint: bool) -> AnyCard:
    data, smap = load_yaml(path)
    shown = display_path(path)
    task = data.get("task") if isinstance(data, dict) else None
    card: AnyCard
    if task == "causal-lm":
        card = validate_mapping(LMCard, data, smap, shown)
        card._directory = path.parent
        problems = _checkpoint_problems(card, smap, shown) if check_checkpoint else []
        if problems:
            raise ConfigError(problems)
        return card
    if isinstance(data, dict) and task is not None and task not in TASKS:
        line = smap.where(("task",))[1]
        raise ConfigError.single(shown, line, "task", f"unknown task {task!r} (known: {', '.join(TASKS)})")
    schema: type[ModelCard] = ModelCard
    if task == "object-detection":
        schema = DetectionCard
    elif task == "generic":
        schema = GenericCard
    card = validate_mapping(schema, data, smap, shown)
    card._directory = path.parent
    return card


def load_lm_card(path: str | Path) -> LMCard:
    """Load a ``task: causal-lm`` card (see :func:`load_card`); any other task is one clear error."""
    card = load_card(path)
    if not isinstance(card, LMCard):
        raise ConfigError.single(display_path(Path(path)), None, "task", f"{card.task} card, expected causal-lm")
    return card


def load_model_card(path: str | Path) -> ModelCard:
    """Load an image card (``image-classification`` or ``object-detection``, see :func:`load_card`);
    a causal-lm card is one clear error."""
    card = load_card(path)
    if not isinstance(card, ModelCard):
        raise ConfigError.single(
            display_path(Path(path)),
            None,
            "task",
            f"{card.task} card, expected image-classification or object-detection",
        )
    return card
