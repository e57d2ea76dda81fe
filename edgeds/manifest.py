"""The bundle manifest (``manifest.json``): its schema, the versions this edgeds reads, parsing.

Schema 2 holds one ``task`` per bundle and an ordered list of ``artifacts`` (the profile's
chain): a device opens the first that works there. Each artifact says where it was gated
(``compile-host`` or ``device``) and with what figures. Every file of the bundle is listed with
its sha256, so the sha256 of the exact manifest bytes identifies the whole bundle
(:func:`manifest_digest`, usable as an OCI reference).

Schema 3 adds the ``object-detection`` and ``generic`` tasks and, per artifact, what the device
resolves at load, ``require``, its own layout and golden, and integer I/O parameters. A manifest
is written with the lowest schema that holds it (:meth:`Manifest.needed_schema`), so a bundle
without those stays readable by an edgeds that knows schema 2, and one with them is refused there
as newer ("upgrade edgeds") instead of failing on an unknown field or task. Schema 1 (one
backend, one artifact) is read as a schema-2 manifest with one artifact; a newer schema is
refused with ``unsupported_schema``. The properties :attr:`Manifest.backend`,
:attr:`~Manifest.precision`, :attr:`~Manifest.artifact`, :attr:`~Manifest.backend_options`,
:attr:`~Manifest.device` and :attr:`~Manifest.recipe` are the primary (first) artifact's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BundleError, BundleVerificationError

SCHEMA_VERSION = 3
KNOWN_SCHEMAS = (1, 2, 3)
MANIFEST = "manifest.json"
GOLDEN_INPUTS = "golden/inputs.npy"
GOLDEN_OUTPUTS = "golden/outputs.npz"
GOLDEN_EXTRA_INPUTS = "golden/extra_inputs.npz"
"""A multi-input image model's golden tensor inputs besides the image, keyed by input name."""
GOLDEN_PROMPTS = "golden/prompts.json"
Task = Literal["image-classification", "object-detection", "generic", "causal-lm"]
ArtifactPrecision = Literal["fp32", "fp16", "int8", "int4"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSource(_Frozen):
    """The files a bundle was compiled from when an explicit card's ``model:`` names another file."""

    onnx: str = Field(description="the ONNX file compiled (its name)")
    card: str = Field(description="the model card file (its name)")
    card_model: str = Field(description="the file the card's model: names")


class ModelRef(_Frozen):
    name: str
    version: str
    source: ModelSource | None = Field(
        default=None,
        # written only for a card naming another file, so other manifests stay readable by an older edgeds
        exclude_if=lambda value: value is None,
    )


class FileEntry(_Frozen):
    """One file of the bundle: POSIX path relative to the bundle root, sha256 hex, size in bytes."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TensorInfo(_Frozen):
    """An input or output; ``-1`` marks a variable dimension (batch first)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


class IOInfo(_Frozen):
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


class Requirements(_Frozen):
    """What a device must offer to install the bundle (``backends``: runtimes, any of which will do)."""

    arch: str
    backends: tuple[str, ...]
    min_memory_mb: int = Field(ge=0)
    min_disk_mb: int = Field(ge=0)
    max_bundle_bytes: int | None = Field(default=None, ge=1)


class GoldenInfo(_Frozen):
    """The on-device conformance check of a tensor model: outputs must match within atol/rtol and min_cosine."""

    inputs: str = GOLDEN_INPUTS
    outputs: str = GOLDEN_OUTPUTS
    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)
    min_cosine: float = Field(ge=0, le=1)


class AccuracyInfo(_Frozen):
    """Gate figures of the shipped image artifact vs the FP32 reference (top-1 as fractions, drop in points)."""

    reference_top1: float | None = None
    top1: float | None = None
    top1_drop: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    max_abs_error: float | None = None


class Gated(_Frozen):
    """Where an artifact's quality gate ran and what it measured (the task's gate figures)."""

    where: Literal["compile-host", "device"] = "compile-host"
    device: str | None = Field(default=None, description="the runtime device the gate ran on, e.g. CPU")
    figures: dict[str, Any] = Field(default_factory=dict)


class ArtifactEntry(_Frozen):
    """One runtime's artifact: a file or a directory under ``artifacts/``."""

    runtime: str = Field(description="backend (tensor models) or LM runtime name")
    precision: ArtifactPrecision
    path: str = Field(description="bundle-relative, under artifacts/")
    options: dict[str, Any] = Field(default_factory=dict, description="the runtime's options")
    device: str | None = Field(default=None, description="runtime device (OpenVINO's), None = the runtime's")
    recipe: dict[str, Any] | None = Field(default=None, description="built on the device from this (TensorRT)")
    gated: Gated | None = Field(default=None, description="None: not gated (a schema-1 bundle says nothing)")
    weights: dict[str, Any] = Field(default_factory=dict, description="weight format: group size, INT8 share, ...")
    # The fields below are written only when set, so a manifest without them stays readable by an
    # edgeds that does not know them.
    require: bool = Field(
        default=False,
        description="the device must open this artifact: falling back past it fails the deployment",
        exclude_if=lambda value: not value,
    )
    resolved_on_device: str | None = Field(
        default=None,
        description="what the device decides at load, e.g. 'OpenVINO device HETERO:GPU,CPU', 'TensorRT engine'",
        exclude_if=lambda value: value is None,
    )
    layout: Literal["NCHW", "NHWC"] | None = Field(
        default=None,
        description="this artifact's input layout; None = the manifest's layout",
        exclude_if=lambda value: value is None,
    )
    golden: GoldenInfo | None = Field(
        default=None,
        description="this artifact's own golden check; None = the manifest's golden",
        exclude_if=lambda value: value is None,
    )
    io_quantization: dict[str, Any] | None = Field(
        default=None,
        description="integer I/O of a fully quantized artifact: {tensor name: {dtype, scale, zero_point}}",
        exclude_if=lambda value: value is None,
    )


class LMGolden(_Frozen):
    """The on-device check of a language model: greedy outputs of the golden prompts (token ids)."""

    prompts: str = GOLDEN_PROMPTS
    count: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    min_token_agreement: float = Field(ge=0, le=1)


class LLMInfo(_Frozen):
    """What serving a causal-lm bundle needs beyond the artifact (``task: causal-lm`` only)."""

    architecture: str
    context_length: int = Field(ge=1)
    kv_plan: dict[str, Any] = Field(default_factory=dict, description="edgeds.backends.lm.kv's plan, as computed")
    chat_template: str = Field(description="bundle-relative Jinja file")
    tokenizer: str = Field(description="bundle-relative directory of the checkpoint's tokenizer files")
    generation: dict[str, Any] = Field(default_factory=dict, description="sampling defaults")
    special_tokens: dict[str, str | None] = Field(default_factory=dict)
    max_num_seqs: int = Field(ge=1)
    max_queue: int = Field(ge=0)
    golden: LMGolden


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 manifest as schema 2: its one backend becomes the one artifact (not gated here
    as far as the manifest says: schema 1 kept the figures in ``accuracy``)."""
    out = {k: v for k, v in data.items() if k not in ("backend", "precision", "backend_options", "device")}
    out.pop("artifact", None)
    out.pop("recipe", None)
    out["schema_version"] = 2
    out.setdefault("task", "image-classification")
    out["artifacts"] = [
        {
            "runtime": data.get("backend"),
            "precision": data.get("precision"),
            "path": data.get("artifact"),
            "options": data.get("backend_options") or {},
            "device": data.get("device"),
            "recipe": data.get("recipe"),
        }
    ]
    return out


def _schema_of(data: Any) -> Any:
    if not isinstance(data, dict):
        return None
    if "schema_version" in data:
        return data["schema_version"]
    return 1 if "artifacts" not in data and "backend" in data else 2


def newer_schema_message(schema: Any) -> str:
    known = ", ".join(str(v) for v in KNOWN_SCHEMAS)
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        return f"manifest schema {schema} is newer than this edgeds (knows {known}): upgrade edgeds"
    return f"manifest schema {schema!r} is not one this edgeds knows ({known})"


class Manifest(_Frozen):
    """``manifest.json``, schema 2. ``version`` is monotonic per model name: devices refuse a lower one."""

    schema_version: Literal[2, 3] = 2
    task: Task = "image-classification"
    model: ModelRef
    version: int = Field(ge=0)
    created_at: str
    expires_at: str | None = Field(default=None, description="ISO 8601 UTC; devices refuse the bundle after it")
    artifacts: tuple[ArtifactEntry, ...] = Field(min_length=1, description="in order: the device opens the first")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    fixed_batch: int | None = Field(
        default=None,
        ge=1,
        description="the model's fixed batch size: every batch it runs has exactly this many rows",
        # not written when None, so a dynamic-batch manifest stays readable by an edgeds without the field
        exclude_if=lambda value: value is None,
    )
    profile: dict[str, Any] = Field(default_factory=dict)
    batching: dict[str, Any] = Field(default_factory=dict)
    io: IOInfo
    labels: tuple[str, ...] = ()
    tools: dict[str, str] = Field(default_factory=dict)
    files: tuple[FileEntry, ...] = ()
    requirements: Requirements
    golden: GoldenInfo | None = Field(default=None, description="tensor golden (image-classification)")
    accuracy: AccuracyInfo = AccuracyInfo()
    llm: LLMInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_older_schemas(cls, data: Any) -> Any:
        schema = _schema_of(data)
        if schema == 1:
            return _upgrade_v1(data)
        if schema is not None and schema not in KNOWN_SCHEMAS:
            raise ValueError(newer_schema_message(schema))
        return data

    @model_validator(mode="after")
    def _task_parts(self) -> Manifest:
        if self.task in ("image-classification", "object-detection", "generic") and self.golden is None:
            raise ValueError(f"an {self.task} bundle needs golden (tensor outputs)")
        if self.task == "causal-lm" and self.llm is None:
            raise ValueError("a causal-lm bundle needs llm (tokenizer, template, KV plan, golden prompts)")
        return self

    # -- the primary artifact, as schema 1 named it ----------------------------------------------
    @property
    def primary(self) -> ArtifactEntry:
        """The first artifact: what a device opens unless its runtime is missing there."""
        return self.artifacts[0]

    @property
    def backend(self) -> str:
        return self.primary.runtime

    @property
    def precision(self) -> ArtifactPrecision:
        return self.primary.precision

    @property
    def backend_options(self) -> dict[str, Any]:
        return self.primary.options

    @property
    def device(self) -> str | None:
        return self.primary.device

    @property
    def artifact(self) -> str:
        """The primary artifact's bundle-relative path (a file, or a directory for LM runtimes)."""
        return self.primary.path

    @property
    def recipe(self) -> dict[str, Any] | None:
        return self.primary.recipe

    @property
    def tensor_golden(self) -> GoldenInfo:
        """The tensor golden of an image model; a causal-lm manifest raises :class:`BundleError`."""
        if self.golden is None:
            raise BundleError(f"a {self.task} bundle has no tensor golden")
        return self.golden

    def needed_schema(self) -> Literal[2, 3]:
        """The lowest schema that holds this manifest: 3 when an artifact uses a field schema 2 does
        not know (``require``, ``resolved_on_device``, ``layout``, ``golden``, ``io_quantization``) or
        the task is one schema 2 does not know (``object-detection``, ``generic``)."""
        newer = ("require", "resolved_on_device", "layout", "golden", "io_quantization")
        uses = any(key in a.model_dump(exclude_defaults=True) for a in self.artifacts for key in newer)
        return 3 if uses or self.task in ("object-detection", "generic") else 2

    def golden_for(self, index: int) -> GoldenInfo:
        """The golden check of artifact ``index``: its own, else the manifest's (tensor models)."""
        own = self.artifacts[index].golden
        return own if own is not None else self.tensor_golden

    def layout_for(self, index: int) -> str:
        """The input layout of artifact ``index``: its own, else the manifest's."""
        return self.artifacts[index].layout or self.layout

    def unlisted_artifacts(self, listed: Iterable[str]) -> list[str]:
        """Artifact paths that are neither a listed file nor a directory holding one."""
        paths = set(listed)
        return [
            a.path for a in self.artifacts if a.path not in paths and not any(p.startswith(a.path + "/") for p in paths)
        ]

    def to_json_bytes(self) -> bytes:
        """The canonical bytes written to ``manifest.json`` (sorted keys, 2-space indent, LF)."""
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def fixed_batching(batching: Mapping[str, Any], batch: int) -> dict[str, Any]:
    """``batching`` (a manifest's ``batching`` block) for a model whose batch is fixed at ``batch``:
    at most ``batch`` rows per execution and one bucket, ``batch`` (smaller batches are padded to
    it); preferred sizes above it are dropped. Other keys are kept as they are."""
    out = dict(batching)
    out["max_batch_size"] = batch
    out["buckets"] = [batch]
    out["preferred_batch_sizes"] = [int(p) for p in out.get("preferred_batch_sizes") or () if int(p) <= batch]
    return out


def manifest_digest(raw: bytes) -> str:
    """``sha256:<hex>`` of the exact manifest bytes: names the bundle's whole content (every file's
    sha256 is in it), usable as an OCI reference."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def parse_manifest(raw: bytes | str, where: str = MANIFEST) -> Manifest:
    """Parse manifest bytes of any known schema. Raises :class:`BundleVerificationError`:
    ``unsupported_schema`` for a schema this edgeds does not know (one line), else
    ``malformed_manifest`` with the first problem."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BundleVerificationError("malformed_manifest", f"{where}: not JSON: {exc}") from exc
    schema = _schema_of(data)
    if schema is not None and schema not in KNOWN_SCHEMAS:
        raise BundleVerificationError("unsupported_schema", newer_schema_message(schema))
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise BundleVerificationError(
            "malformed_manifest", f"{where}: {loc}: {message} ({exc.error_count()} problem(s))"
        ) from exc
