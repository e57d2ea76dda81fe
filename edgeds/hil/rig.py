"""The rig schema (``hil/rigs/*.yaml``): devices, expectations per device class, optional hooks.

A rig names either a target (``target:``, real devices reached over SSH) or a simulated rig
(``sim: {devices: N}``: N sshd devices on loopback plus mosquitto, built by the runner for the
run and removed after it). Every device of a rig belongs to one device class (``device_class``);
``expectations`` maps a class to its bounds. Errors carry file:line (edgeds.config helpers).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import REPO_ROOT, validate_mapping
from ..errors import HilError
from ..yamlio import load_yaml

RIGS_DIR = REPO_ROOT / "hil" / "rigs"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Expectations(_Frozen):
    """Bounds for one device class. ``None`` = not checked. Units in the field names."""

    min_fps: float | None = Field(default=None, ge=0, description="samples/s through the agent, closed loop")
    max_p99_ms: float | None = Field(default=None, gt=0, description="p99 request latency through the agent")
    max_accuracy_drop: float | None = Field(
        default=None, ge=0, description="top-1 points lost vs the reference (the bundle's accuracy.top1_drop)"
    )
    max_model_load_s: float | None = Field(default=None, gt=0, description="agent's load_s for the release")
    max_temperature_c: float | None = Field(default=None, description="hottest sensor seen in telemetry")


class Hooks(_Frozen):
    """Shell commands run on the machine driving the rig; ``{host}`` is replaced by the device name."""

    power_cycle: str | None = None
    network_cut: str | None = None
    network_restore: str | None = None
    serial_console: str | None = Field(default=None, description="command that prints the device's console")


class SimRig(_Frozen):
    devices: int = Field(default=2, ge=1, le=16)
    profile: str = "x86-cpu"


class Rig(_Frozen):
    schema_: int = Field(default=1, alias="schema")
    name: str = Field(min_length=1)
    description: str = ""
    target: str | None = Field(default=None, description="target name or path (real devices)")
    sim: SimRig | None = None
    device_class: str = Field(default="default", description="class of this rig's devices")
    expectations: dict[str, Expectations] = Field(default_factory=dict)
    hooks: Hooks = Hooks()
    lease_ttl_s: float = Field(default=1800.0, gt=0, description="a lease older than this is stale")
    lease_wait_s: float = Field(default=0.0, ge=0, description="how long a run waits for a busy rig")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> Rig:
        if (self.target is None) == (self.sim is None):
            raise ValueError("a rig names exactly one of `target` (real devices) or `sim` (simulated rig)")
        return self

    def expectation(self) -> Expectations:
        """The bounds of this rig's device class (empty when the class has none)."""
        return self.expectations.get(self.device_class, Expectations())


def rig_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        return Path(text)
    path = RIGS_DIR / f"{text}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in RIGS_DIR.glob("*.yaml"))
        raise HilError(f"no rig {text!r} in {RIGS_DIR} (known: {', '.join(known) or 'none'})")
    return path


def load_rig(name_or_path: str | Path) -> Rig:
    """Load and validate a rig; ConfigError with file:line on a bad field, HilError when missing."""
    path = rig_path(name_or_path)
    if not path.exists():
        raise HilError(f"rig file {path} does not exist")
    data, smap = load_yaml(path)
    return validate_mapping(Rig, data, smap, path)
