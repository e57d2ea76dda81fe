"""Frozen schemas for profiles and targets, and their YAML loading (model cards: :mod:`edgeds.modelcard`).

Every schema rejects unknown keys. Every loading error is a :class:`~edgeds.errors.ConfigError`
whose lines read ``file:line: field: message``. A profile may ``extends:`` another profile by
name; the child's keys are merged over the parent's (mappings key by key, lists replaced).

Lookup: a name is searched in ``$EDGEDS_PROFILES`` / ``$EDGEDS_TARGETS`` (os.pathsep
separated), then ``./profiles`` / ``./targets``, then the directories shipped beside the
package. A value containing ``/`` or ending in ``.yaml`` is taken as a path.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import backends
from .backends.base import BackendOptions, Precision
from .errors import ConfigError, NotFoundError
from .fieldtypes import BatchAmount, FailureAmount, HostAddress, MqttUrl
from .yamlio import Loc, Problem, SourceMap, deep_merge, display_path, dotted, load_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
# Profiles and targets shipped inside the package (package data), so an installed wheel has them.
SHIPPED_DATA = Path(__file__).resolve().parent / "data"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
NOT_INHERITED = ("name", "description", "extends")
"""Top-level profile keys a child never takes from the profile it ``extends:``."""


class Frozen(BaseModel):
    """Base of every schema: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- profile


class Hardware(Frozen):
    """Facts about the device class a profile compiles for."""

    description: str
    arch: Literal["x86_64", "aarch64"]
    cpu: str
    cpu_cores: int = Field(ge=1)
    memory_mb: int = Field(ge=64)
    accelerators: tuple[str, ...] = ()
    precisions: tuple[Precision, ...] = ("fp32",)


class BackendEntry(Frozen):
    """One link of the backend chain. ``precision`` overrides the profile's."""

    name: str
    precision: Precision | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    require: bool = Field(
        default=False,
        description="the device must open this entry's artifact: a fallback past it fails the deployment",
    )

    @field_validator("name")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in backends.names():
            raise ValueError(f"unknown backend {value!r} (known: {', '.join(backends.names())})")
        return value

    def parsed_options(self) -> BackendOptions:
        """``options`` validated by the backend's own schema."""
        return backends.options_schema(self.name).model_validate(self.options)


class Batching(Frozen):
    """Dynamic batching with Triton's semantics (docs/runtime.md). Times in microseconds."""

    max_batch_size: int = Field(default=8, ge=1)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = Field(default=0, ge=0)
    max_queue_size: int = Field(default=1024, ge=1)
    default_timeout_us: int | None = Field(default=None, ge=1)
    priority_levels: int = Field(default=1, ge=1)
    preserve_ordering: bool = False
    buckets: tuple[int, ...] = Field(default=(), description="batch sizes compiled/allocated; default powers of 2")
    instances: int = Field(
        default=1,
        ge=1,
        description="concurrent executions (Triton's instance_group count): each instance has its own "
        "backend, input pool and worker, and the backend's CPU threads are split among them",
    )

    @field_validator("preferred_batch_sizes", "buckets")
    @classmethod
    def _sizes_within_max(cls, sizes: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        maximum = info.data.get("max_batch_size")
        for size in sizes:
            if size < 1 or (maximum is not None and size > maximum):
                raise ValueError(f"{size} is outside 1..max_batch_size ({maximum})")
        return sizes

    @classmethod
    def from_manifest(cls, recorded: Mapping[str, Any] | None) -> Batching:
        """The batching a bundle manifest records (``manifest.batching``). Keys this edgeds does not
        know are dropped, so a bundle written by a newer edgeds still loads; known keys are validated."""
        return cls.model_validate({k: v for k, v in dict(recorded or {}).items() if k in cls.model_fields})

    def bucket_sizes(self) -> tuple[int, ...]:
        """Allocated batch sizes: ``buckets``, else powers of two up to and including the max."""
        if self.buckets:
            return tuple(sorted(set(self.buckets) | {self.max_batch_size}))
        sizes = {1, self.max_batch_size}
        size = 2
        while size < self.max_batch_size:
            sizes.add(size)
            size *= 2
        return tuple(sorted(sizes))


class ServerLimits(Frozen):
    """What one client may hold of the device server (``edgeds serve``, the agent): times in seconds,
    sizes in MiB. The defaults suit a 4 GB device on a network shared with untrusted clients."""

    header_timeout_s: float = Field(
        default=10.0, gt=0, description="a request head must arrive whole within this, from its first byte"
    )
    idle_timeout_s: float = Field(default=60.0, gt=0, description="a keep-alive connection idle this long is closed")
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a body's grace: after it, it must keep coming at the rate"
    )
    body_min_rate_kib_s: float = Field(
        default=256.0, gt=0, description="slowest body upload allowed (KiB/s), checked at each sweep after the grace"
    )
    max_body_mb: float = Field(default=64.0, gt=0, description="largest request body (binary tensors)")
    max_json_mb: float = Field(
        default=8.0, gt=0, description="largest JSON part of a request (parsing costs ~13 times its size)"
    )
    max_connections: int = Field(
        default=256, ge=1, description="open connections (fewer when the descriptor limit is lower)"
    )
    reserve_connections: int = Field(
        default=4, ge=1, description="connections beyond the cap kept for health and metrics"
    )
    accept_backoff_s: float = Field(
        default=0.5, gt=0, description="accepting pauses this long when descriptors run out"
    )

    @classmethod
    def from_profile(cls, recorded: Mapping[str, Any] | None, **overrides: Any) -> ServerLimits:
        """The limits of a profile a bundle manifest records (``manifest.profile``), with every
        override that is not None applied. Keys this edgeds does not know are dropped (a bundle
        written by a newer edgeds still serves); the rest are validated."""
        server = dict((recorded or {}).get("server") or {})
        data = {k: v for k, v in server.items() if k in cls.model_fields}
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise override_error(exc, "server") from exc

    @model_validator(mode="before")
    @classmethod
    def _json_follows_a_smaller_body(cls, data: Any) -> Any:
        """A body limit below the JSON default lowers the JSON limit with it, unless that is given."""
        if isinstance(data, dict) and "max_json_mb" not in data and "max_body_mb" in data:
            default = cls.model_fields["max_json_mb"].default
            with contextlib.suppress(TypeError, ValueError):
                if float(data["max_body_mb"]) < default:
                    return {**data, "max_json_mb": float(data["max_body_mb"])}
        return data

    @model_validator(mode="after")
    def _json_within_body(self) -> ServerLimits:
        if self.max_json_mb > self.max_body_mb:
            raise ValueError(f"max_json_mb ({self.max_json_mb}) must not exceed max_body_mb ({self.max_body_mb})")
        return self

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 2**20)

    @property
    def body_min_rate_bytes_s(self) -> float:
        return self.body_min_rate_kib_s * 1024


class MemoryBudget(Frozen):
    """Memory the engine may use on the device, in MiB."""

    budget_mb: int = Field(ge=16)
    workspace_mb: int | None = Field(default=None, ge=16, description="compiler scratch (TensorRT)")


class AccuracyBudget(Frozen):
    """What a compiled candidate must keep relative to the FP32 reference."""

    max_top1_drop: float = Field(default=0.5, ge=0, le=100, description="percentage points")
    min_top1_agreement: float = Field(default=0.98, ge=0, le=1)
    min_cosine: float = Field(default=0.99, ge=0, le=1)
    max_abs_error: float | None = Field(default=None, gt=0)
    # object-detection (edgeds.compile.gates.detection)
    max_map_drop: float = Field(default=1.0, ge=0, le=100, description="mAP@0.5:0.95 percentage points")
    min_box_agreement: float = Field(
        default=0.9, ge=0, le=1, description="share of FP32 boxes matched (IoU >= 0.5, same class); unlabelled sets"
    )


class LatencyBudget(Frozen):
    """Health-check bound used after a deploy, in milliseconds."""

    p99_ms: float = Field(gt=0)


LMPrecision = Literal["int4", "int8", "fp16", "fp32"]


class LLMRuntimeEntry(Frozen):
    """One link of the language-model runtime chain: the runtime, the precision to try first, and
    the runtime's options (checked by the runtime's own schema)."""

    name: str
    precision: LMPrecision = "int4"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        from .backends import lm

        if value not in lm.lm_names():
            raise ValueError(f"unknown LM runtime {value!r} (known: {', '.join(lm.lm_names())})")
        return value

    @model_validator(mode="after")
    def _options_fit_the_runtime(self) -> LLMRuntimeEntry:
        from .backends import lm

        try:
            lm.lm_backend_class(self.name).Options.model_validate(self.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"options.{where}: {_describe(first)} ({self.name})") from None
        return self

    def parsed_options(self) -> BackendOptions:
        """``options`` validated by the runtime's own schema."""
        from .backends import lm

        return lm.lm_backend_class(self.name).Options.model_validate(self.options)


class LLMQuality(Frozen):
    """What a compressed language model must keep against the FP32 checkpoint on the held-out prompts."""

    max_metric_drop: float = Field(default=3.0, ge=0, le=100, description="task metric, percentage points")
    min_token_agreement: float = Field(
        default=0.85, ge=0, le=1, description="greedy tokens equal to the reference's, position by position"
    )
    max_perplexity_ratio: float = Field(default=1.10, ge=1, description="candidate / reference perplexity")
    min_tokenizer_agreement: float = Field(
        default=1.0, ge=0, le=1, description="prompts the runtime tokenizes exactly as tokenizer.json does"
    )


class LLMConfig(Frozen):
    """How a ``causal-lm`` card is compiled and served for this hardware class. The memory budget
    is the profile's ``memory.budget_mb``: KV budget = budget - weights - ``kv_overhead_mb``."""

    runtimes: tuple[LLMRuntimeEntry, ...] = Field(min_length=1, description="the chain, tried in order")
    group_size: int | None = Field(
        default=None, ge=16, description="INT4 group size; None = the largest of 128, 64, 32 dividing the hidden size"
    )
    max_num_seqs: int = Field(default=8, ge=1, description="cap; the KV budget may allow fewer")
    max_queue: int = Field(default=64, ge=0, description="requests waiting in front of the runtime; full -> 429")
    context_length: int | None = Field(default=None, ge=16, description="cap; None = the card's")
    kv_overhead_mb: int = Field(default=64, ge=0, description="runtime scratch kept out of the KV budget")
    quality: LLMQuality = LLMQuality()


class Profile(Frozen):
    """A class of hardware and how to compile for it."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    name: str = Field(pattern=NAME_PATTERN)
    description: str
    extends: str | None = None
    hardware: Hardware
    precision: Precision = "fp32"
    backends: tuple[BackendEntry, ...] = Field(min_length=1)
    batching: Batching = Batching()
    memory: MemoryBudget
    accuracy: AccuracyBudget = AccuracyBudget()
    latency: LatencyBudget
    server: ServerLimits = ServerLimits()
    llm: LLMConfig | None = Field(default=None, description="language models; None = this profile compiles none")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def chain(self) -> list[tuple[str, Precision, BackendOptions]]:
        """The backend chain as ``(name, precision, options)``, in order."""
        return [(e.name, e.precision or self.precision, e.parsed_options()) for e in self.backends]


# --------------------------------------------------------------------------- target


class HostEntry(Frozen):
    """One device of a target."""

    name: str = Field(pattern=NAME_PATTERN)
    address: HostAddress = Field(description="IP address or host name edgeds reaches over SSH")
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    install_dir: str | None = None
    agent_host: HostAddress | None = Field(
        default=None, description="address the agent binds here; default agent.http_host"
    )


class SshConfig(Frozen):
    """How edgeds reaches the devices. Key auth only; host keys pinned in ``known_hosts``."""

    user: str = "edgeds"
    key: str | None = Field(default=None, description="private key file; ~ expanded")
    known_hosts: str | None = Field(default=None, description="pinned host keys; default beside the target")
    connect_timeout_s: float = Field(default=10.0, gt=0)


class TlsConfig(Frozen):
    """TLS for the MQTT connection. Paths; ~ expanded."""

    ca: str
    cert: str | None = None
    key: str | None = None


class SpoolConfig(Frozen):
    """Bounds of the on-device telemetry spool."""

    max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    max_age_s: float = Field(default=7 * 24 * 3600, gt=0)


class MqttConfig(Frozen):
    """Broker connection. ``url`` None means the embedded broker (local target only)."""

    url: MqttUrl | None = Field(default=None, description="mqtt://host:port or mqtts://host:port")
    protocol: Literal["5", "3.1.1"] = "5"
    prefix: str = "edgeds"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    telemetry_interval_s: float = Field(default=5.0, gt=0)
    spool: SpoolConfig = SpoolConfig()


class RolloutPolicy(Frozen):
    """Fleet rollout: canary first, then batches; abort past the failure threshold."""

    canary: int = Field(default=1, ge=0)
    batch: BatchAmount = Field(default="25%", description="hosts per batch: N (>= 1) or P% (1..100)")
    max_failures: FailureAmount = Field(default="0", description="abort above: N or P% (0..100)")
    parallelism: int = Field(default=8, ge=1)
    host_timeout_s: float = Field(default=900.0, gt=0)


class AgentTls(Frozen):
    """TLS of the agent's HTTP endpoint: PEM files on the machine that runs ``edgeds device setup``
    (~ expanded; relative paths from the target file's directory), installed on every device."""

    cert: str = Field(description="the server certificate (chain)")
    key: str = Field(description="its private key")


class AgentConfig(Frozen):
    """The on-device agent's HTTP endpoint, who may call it, and the user it runs as."""

    http_host: HostAddress = Field(default="127.0.0.1", description="address the agent binds")
    http_port: int = Field(default=8000, ge=1, le=65535)
    swap_mode: Literal["zero_downtime", "unload_first"] = Field(
        default="zero_downtime", description="unload_first: memory-constrained devices; the gap is reported"
    )
    api_keys_file: str | None = Field(
        default=None,
        description="API keys, one a line, on the machine that runs setup (installed on every device); "
        "callers then send 'Authorization: Bearer <key>'",
    )
    api_keys_env: str | None = Field(
        default=None,
        description="environment variable (on the machine that runs setup) holding API keys, comma-separated",
    )
    metrics_public: bool = Field(default=False, description="/metrics answers without a key")
    publish_logs: bool = Field(
        default=True, description="publish the agent's log lines (INFO and up) on <prefix>/<device>/log"
    )
    tls: AgentTls | None = None
    user: str = Field(
        default="edgeds",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="the unprivileged user a systemd unit runs the agent as (setup creates it when missing)",
    )


class InspectionStation(Frozen):
    """One camera station run by the inspection agent."""

    name: str = Field(pattern=NAME_PATTERN)
    source: str
    thresholds: dict[str, float] = Field(default_factory=dict)
    uncertain_below: float = Field(default=0.5, ge=0, le=1)
    alarm_consecutive_rejects: int | None = Field(default=None, ge=1)
    model: str | None = Field(default=None, description="bundle or model for this station; None = the agent's")
    accept_classes: tuple[str, ...] = Field(default=("ok",), min_length=1, description="classes that pass")
    fps: float | None = Field(default=None, gt=0, description="pace a file source like a camera; None = as read")
    queue_size: int = Field(default=8, ge=1, description="frames buffered between the source and the engine")
    queue_policy: Literal["drop_oldest", "drop_newest", "block"] | None = Field(
        default=None, description="when the queue is full; None = drop_oldest for live/paced sources, else block"
    )
    save_rejects: bool = True
    rejects_budget_mb: int = Field(default=512, ge=1, description="disk budget of saved rejected frames")
    rejects_format: Literal["jpg", "png"] = Field(default="jpg", description="jpg (quality 95) or lossless png")
    ledger_max_mb: int = Field(default=256, ge=1, description="bound of the station's JSONL ledger files")


class Target(Frozen):
    """Concrete devices and how to reach them."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    profile: str = Field(description="profile name, or 'auto' to detect this machine's")
    local: bool = False
    hosts: tuple[HostEntry, ...] = ()
    ssh: SshConfig = SshConfig()
    install_dir: str = "~/edgeds"
    mqtt: MqttConfig = MqttConfig()
    rollout: RolloutPolicy = RolloutPolicy()
    agent: AgentConfig = AgentConfig()
    inspection: tuple[InspectionStation, ...] = ()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # Set by load_target: the file and line of ``profile:``, for errors about the profile it names.
    _profile_source: tuple[Path | None, int | None] = (None, None)

    @model_validator(mode="after")
    def _hosts_xor_local(self) -> Target:
        if self.local and self.hosts:
            raise ValueError("a local target has no hosts")
        if not self.local and not self.hosts:
            raise ValueError("a remote target needs at least one host (or set local: true)")
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError("host names must be unique")
        return self


# --------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def override_error(exc: ValidationError, section: str) -> ConfigError:
    """A settings object rebuilt from command-line overrides failed validation: one
    ``section.field: message`` line per problem (no file: the values came from flags)."""
    problems: list[Problem] = [
        (None, None, dotted((section, *(p for p in e["loc"] if isinstance(p, (str, int))))), _describe(e))
        for e in exc.errors()
    ]
    return ConfigError(problems)


def _describe(error: Any) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {value!r}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {value!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "string_pattern_mismatch":
        return f"{message}, got {value!r}"
    return message


def _problem_order(problem: Problem) -> tuple[str, int]:
    return (str(problem[0]), problem[1] or 0)


def locate(
    smap: SourceMap, loc: Loc, path: Path, message: str, anchor: Loc | None = None, *, missing: bool = False
) -> Problem:
    """The ``file:line: field: message`` problem at ``loc``, blamed on the loaded file (see
    :meth:`SourceMap.blame`). A value inherited from another file names where it was written. A
    field ``missing`` where the loaded file writes nothing around it says where it may be set:
    here, or in the mapping it inherits, or in the profile it extends."""
    blame = smap.blame(loc, anchor)
    origin = blame.inherited_from
    if missing and origin is not None:
        message = f"{message}: set it here or at {origin[0]}:{origin[1]}"
    elif missing and blame.anchored:
        message = f"{message}: set it here or in the profile this one extends"
    elif origin is not None:
        message = f"{message} (inherited from {origin[0]}:{origin[1]})"
    return (blame.path or path, blame.line, dotted(loc), message)


def _inherit_anchor(loc: Loc) -> Loc | None:
    """Where a profile blames what it inherits or fails to set: its ``extends:`` line, except
    for the keys a child never inherits."""
    return None if loc and loc[0] in NOT_INHERITED else ("extends",)


def validate_mapping(
    model: type[M], data: Any, smap: SourceMap, path: Path, loc_prefix: Loc = (), *, inherits: bool = False
) -> M:
    """``data`` (loaded from ``path`` with ``smap``) validated by ``model``; every problem becomes a
    ``file:line: field: message`` line of one :class:`ConfigError`, blamed on the loaded file.
    ``inherits``: ``data`` holds values merged from the file it ``extends:``."""
    if not isinstance(data, dict):
        raise ConfigError.single(path, 1, "", f"expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [(tuple(p for p in e["loc"] if isinstance(p, (str, int))), e) for e in exc.errors()]
        failed_within = {o[:end] for o, _ in errors for end in range(len(o))}
        problems: list[Problem] = []
        for field_loc, error in errors:
            if error["type"] == "too_short" and field_loc in failed_within:
                continue  # a list whose items failed also reads as too short: the items' problems say why
            loc = (*loc_prefix, *field_loc)
            anchor = _inherit_anchor(loc) if inherits else None
            problems.append(locate(smap, loc, path, _describe(error), anchor, missing=error["type"] == "missing"))
        raise ConfigError(sorted(problems, key=_problem_order)) from exc


def _search_dirs(kind: str) -> list[Path]:
    env = os.environ.get(f"EDGEDS_{kind.upper()}")
    dirs = [Path(p) for p in env.split(os.pathsep) if p] if env else []
    dirs += [Path.cwd() / kind, SHIPPED_DATA / kind]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def _list(kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in _search_dirs(kind):
        for file in sorted(directory.glob("*.yaml")):
            found.setdefault(file.stem, file)
    return found


def _resolve(kind: str, name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        return Path(text)
    known = _list(kind)
    if text not in known:
        raise NotFoundError(kind[:-1], text, sorted(known))
    return known[text]


def list_profiles() -> dict[str, Path]:
    """Every profile name found on the search path, with its file."""
    return _list("profiles")


def list_targets() -> dict[str, Path]:
    """Every target name found on the search path, with its file."""
    return _list("targets")


def _raw_profile(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], SourceMap]:
    data, smap = load_yaml(path)
    shown = display_path(path)
    if not isinstance(data, dict):
        raise ConfigError.single(shown, 1, "", "expected a mapping at the top level")
    parent = data.get("extends")
    if parent is None:
        return data, smap
    line = smap.where(("extends",))[1]
    if not isinstance(parent, str):
        raise ConfigError.single(shown, line, "extends", f"must be a profile name, got {parent!r}")
    try:
        parent_path = _resolve("profiles", parent)
    except NotFoundError as exc:
        raise ConfigError.single(shown, line, "extends", str(exc)) from exc
    if parent_path.resolve() in seen:
        raise ConfigError.single(shown, line, "extends", f"cycle through {parent!r}")
    base, base_map = _raw_profile(parent_path, (*seen, parent_path.resolve()))
    base = {k: v for k, v in base.items() if k not in NOT_INHERITED}
    return deep_merge(base, data), smap.merged_over(base_map, data, dropped=NOT_INHERITED)


def _backend_option_problems(data: dict[str, Any], smap: SourceMap, path: Path) -> list[Problem]:
    """Validate each known backend's ``options:`` with that backend's own schema."""
    problems: list[Problem] = []
    entries = data.get("backends")
    if not isinstance(entries, list):
        return problems
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("name") not in backends.names():
            continue
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            continue
        try:
            backends.options_schema(entry["name"]).model_validate(options)
        except ValidationError as exc:
            for error in exc.errors():
                loc = ("backends", index, "options", *(p for p in error["loc"] if isinstance(p, (str, int))))
                problems.append(locate(smap, loc, path, _describe(error), ("extends",)))
    return problems


def load_profile(name_or_path: str | Path) -> Profile:
    """Load and validate a profile by name or path (``extends:`` resolved)."""
    path = _resolve("profiles", name_or_path)
    data, smap = _raw_profile(path, (path.resolve(),))
    shown = display_path(path)
    option_problems = _backend_option_problems(data, smap, shown)
    try:
        profile = validate_mapping(Profile, data, smap, shown, inherits="extends" in data)
    except ConfigError as exc:
        raise ConfigError(sorted(exc.problems + option_problems, key=_problem_order)) from exc
    if option_problems:
        raise ConfigError(option_problems)
    return profile


def load_target(name_or_path: str | Path) -> Target:
    """Load and validate a target by name or path. ``local`` falls back to the embedded default."""
    try:
        path = _resolve("targets", name_or_path)
    except NotFoundError:
        if str(name_or_path) == "local":
            return LOCAL_TARGET
        raise
    data, smap = load_yaml(path)
    shown = display_path(path)
    target = validate_mapping(Target, data, smap, shown)
    target._profile_source = (shown, smap.where(("profile",))[1])
    return target


LOCAL_TARGET = Target.model_validate(
    {
        "name": "local",
        "description": "this machine, no SSH (embedded default)",
        "profile": "auto",
        "local": True,
        "install_dir": "~/.local/share/edgeds",
    }
)


@dataclass(frozen=True)
class Unloadable:
    """A file on the search path that does not load: its name, its file and why."""

    name: str
    path: Path
    error: ConfigError


def scan_profiles() -> tuple[dict[str, Profile], list[Unloadable]]:
    """Every profile on the search path that loads (in :func:`list_profiles` order), and every
    one that does not, with its error: one broken file does not hide the others."""
    loaded: dict[str, Profile] = {}
    broken: list[Unloadable] = []
    for name, path in list_profiles().items():
        try:
            loaded[name] = load_profile(path)
        except ConfigError as exc:
            broken.append(Unloadable(name, path, exc))
    return loaded, broken


def scan_targets() -> tuple[list[Target], list[Unloadable]]:
    """Every target on the search path that loads, in :func:`list_targets` order, the embedded
    :data:`LOCAL_TARGET` first unless a file named ``local`` replaces it; and every file that
    does not load, with its error."""
    found = list_targets()
    targets: list[Target] = [] if "local" in found else [LOCAL_TARGET]
    broken: list[Unloadable] = []
    for name, path in found.items():
        try:
            targets.append(load_target(path))
        except ConfigError as exc:
            broken.append(Unloadable(name, path, exc))
    return targets, broken


def load_targets() -> list[Target]:
    """Every target on the search path, loaded, in :func:`list_targets` order; the embedded
    :data:`LOCAL_TARGET` first unless a file named ``local`` replaces it. Raises the first
    broken file's :class:`ConfigError` (:func:`scan_targets` reports them all instead)."""
    targets, broken = scan_targets()
    if broken:
        raise broken[0].error
    return targets


def detect_profile_name(machine: str | None = None, probe_tegra: Callable[[], bool] | None = None) -> str:
    """The shipped profile that fits this machine (used by ``profile: auto``)."""
    machine = machine or platform.machine()
    is_tegra = probe_tegra() if probe_tegra else Path("/etc/nv_tegra_release").exists()
    if is_tegra:
        return "jetson-orin-nx"
    if machine in ("aarch64", "arm64"):
        return "raspberry-pi-5"
    return "x86-cpu"


def resolve_target_profile(target: Target) -> Profile:
    """The profile a target uses, detecting this machine's for ``profile: auto``. A profile that
    does not exist is a :class:`ConfigError` at the target's ``profile:`` line."""
    name = detect_profile_name() if target.profile == "auto" else target.profile
    try:
        return load_profile(name)
    except NotFoundError as exc:
        path, line = target._profile_source
        if path is None:
            raise
        raise ConfigError.single(path, line, "profile", str(exc)) from exc
