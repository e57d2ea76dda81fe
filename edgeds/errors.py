"""The one error tree of edgeds.

Every error edgeds raises on purpose derives from :class:`EdgedsError`. Errors of vendor
libraries (onnxruntime, openvino, paramiko, paho, ...) are caught at the module that owns
that library and re-raised as one of these, with the original kept as ``__cause__``.

::

    EdgedsError
    ├── ConfigError                  a profile / target / model card is malformed (file:line: field: why)
    │   └── NotFoundError            a named profile / target / model does not exist
    ├── DatasetError                 calibration / validation data missing or drifted
    ├── BackendError
    │   ├── BackendUnavailable       the backend's library is not importable here (install hint)
    │   ├── UnsupportedPrecision     the backend cannot do the asked precision
    │   └── InferenceError           the backend failed while running
    ├── CompileError
    │   ├── InvalidModel             the input is not a loadable ONNX model
    │   ├── AccuracyGateFailed       no candidate passed the accuracy budget
    │   └── ToolchainError           an external toolchain (onnx2tf, trtexec, ...) failed
    ├── BundleError
    │   └── BundleVerificationError  checksum / signature / listing mismatch, unsafe archive
    ├── RequestError                 a request to the runtime is invalid (HTTP 400)
    │   └── RequestTooLarge          prompt + max_tokens can never fit the context (HTTP 400)
    ├── ServiceUnavailable           queue full, request timed out, engine closing (HTTP 503)
    │   ├── QueueFull                the queue in front of an engine is full (LM server: 429 + Retry-After)
    │   └── EngineClosed             the engine is closing or closed
    ├── DeployError
    │   ├── HostKeyError             unknown or changed SSH host key
    │   ├── ConnectionFailed         the device cannot be reached
    │   ├── DeviceError              a step failed on the device
    │   │   └── StepFailed           (raised on the device) I/O, agent reload or health check failed
    │   └── ReleaseRejected          (raised on the device) the bundle must not be installed there
    ├── FleetError                   an OCI registry is unreachable, refuses, or names no such artifact
    ├── TelemetryError               broker URL, TLS files, credentials
    ├── InspectionError              a frame source cannot be opened, a ledger cannot be written
    ├── HilError                     a rig is misconfigured or a lease is held
    └── BenchError                   a benchmark's settings are invalid, its target fails or stops answering
"""

from __future__ import annotations

import re
from pathlib import Path

_VENDOR_LOCATION = re.compile(r"Exception from \S+:\d+:?\s*")


def one_line(text: str) -> str:
    """A library's error message whole, on one line: its lines joined with `` | `` (a line ending in
    ``:`` runs on into the next), blank lines and bare source locations (OpenVINO's ``Exception
    from src/inference/src/cpp/core.cpp:117:``) dropped. Nothing else is cut: reports and
    ``--json`` keep the reason whole."""
    kept = [line for line in (_VENDOR_LOCATION.sub("", raw).strip() for raw in text.splitlines()) if line]
    out = ""
    for line in kept:
        out += line if not out else (" " if out.endswith(":") else " | ") + line
    return out or text.strip()


class EdgedsError(Exception):
    """Base of every error edgeds raises on purpose."""


class ConfigError(EdgedsError):
    """A YAML document does not match its schema.

    ``str(err)`` reads ``<file>:<line>: <field>: <message>``, one line per problem.
    """

    def __init__(self, problems: list[tuple[Path | None, int | None, str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(self.format_problem(*p) for p in problems))

    @staticmethod
    def format_problem(path: Path | None, line: int | None, field: str, message: str) -> str:
        parts = [str(path) if path is not None else None]
        if path is not None and line is not None:
            parts[0] = f"{path}:{line}"
        parts += [field or None, message]
        return ": ".join(p for p in parts if p)

    @classmethod
    def single(cls, path: Path | None, line: int | None, field: str, message: str) -> ConfigError:
        return cls([(path, line, field, message)])


class NotFoundError(ConfigError):
    """A named profile, target or model card does not exist."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        hint = f" (known: {', '.join(known)})" if known else ""
        super().__init__([(None, None, "", f"no {kind} named {name!r}{hint}")])
        self.kind = kind
        self.name = name


class DatasetError(EdgedsError):
    """Calibration or validation data is missing, unreadable or has drifted."""


class BackendError(EdgedsError):
    """A backend failed."""


class BackendUnavailable(BackendError):
    """The backend's library cannot be imported here. ``hint`` says how to install it."""

    def __init__(self, backend: str, reason: str, hint: str) -> None:
        super().__init__(f"backend {backend!r} is not available: {reason}. Install with: {hint}")
        self.backend = backend
        self.reason = reason
        self.hint = hint


class UnsupportedPrecision(BackendError):
    """The backend cannot compile or run the asked precision."""


class InferenceError(BackendError):
    """The backend raised while running a batch."""


class CompileError(EdgedsError):
    """Compiling a model failed."""


class InvalidModel(CompileError):
    """The model file is not a loadable ONNX model."""


class AccuracyGateFailed(CompileError):
    """No candidate passed the profile's accuracy budget."""


class ToolchainError(CompileError):
    """An external toolchain failed or is not installed."""


class BundleError(EdgedsError):
    """A bundle cannot be built or read."""


class BundleVerificationError(BundleError):
    """A bundle failed verification. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class RequestError(EdgedsError):
    """A request to the runtime is invalid (maps to HTTP 400)."""


class RequestTooLarge(RequestError):
    """A request can never be served: its prompt plus ``max_tokens`` exceed the context.

    ``reason`` says by how much, in tokens, in one line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServiceUnavailable(EdgedsError):
    """The runtime cannot take the request now (maps to HTTP 503)."""


class QueueFull(ServiceUnavailable):
    """The bounded queue in front of an engine is full.

    ``retry_after_s`` is the caller's hint for when to retry (seconds; the LM server sends it as
    ``Retry-After``), or None when the queue gives none (the vision batcher).
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineClosed(ServiceUnavailable):
    """The engine is closing or closed and takes no new request."""


class DeployError(EdgedsError):
    """A deployment step failed."""


class HostKeyError(DeployError):
    """A device presented an unknown or changed SSH host key."""


class ConnectionFailed(DeployError):
    """A device could not be reached."""


class DeviceError(DeployError):
    """A step failed on the device."""


class StepFailed(DeviceError):
    """Raised on the device by a deploy step (I/O, agent reload, health check).

    The step reports it as a ``FAILED_*`` status in its result; it does not cross the wire as an error.
    """


class ReleaseRejected(DeployError):
    """Raised on the device: the offered bundle must not be installed there.

    ``reason`` is the short code the step reports with status ``REJECTED`` (``bad_signature``,
    ``downgrade``, ``incompatible_device``, ...); ``message`` says why in words.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class FleetError(EdgedsError):
    """Publishing to or pulling from an OCI registry failed: a registry URL that is not allowed, a
    registry that cannot be reached or refuses, a reference that names no edgeds bundle. A blob or
    bundle that fails its check is a :class:`BundleVerificationError` instead."""


class TelemetryError(EdgedsError):
    """Telemetry is misconfigured (broker URL, TLS files, credentials)."""


class InspectionError(EdgedsError):
    """The inspection pipeline cannot run: a source that cannot be opened, an unwritable ledger."""


class HilError(EdgedsError):
    """A hardware-in-the-loop rig is misconfigured or busy."""


class BenchError(EdgedsError):
    """A benchmark cannot run: invalid settings (CPU lists, scenarios), a target that fails a valid
    request or stops answering, a load generator that cannot be built or fails."""
