"""What a device step answers the host: the final statuses of a deployment and the progress-event callback.

A step reads one JSON request (stdin, or one ``{"command": ..., "request": ...}`` line per step in
a ``session``) and writes ONE JSON result object on stdout; progress events go to stderr as JSON
lines ``{"event": <name>, ...}`` while it runs. ``plan`` and ``apply`` results carry ``status``
(one of :data:`STATUSES`, or ``ready`` / ``already_installed`` from ``plan``) and, when REJECTED,
a short ``reason`` code (``bad_signature``, ``downgrade``, ``insufficient_disk``, ...). A step
that raised answers ``{"status": "error", "error": "<Type>: <message>"}``; the host raises
:class:`edgeds.errors.DeviceError` for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The final status of one host's deployment (docs/deploy.md lists what leads to each).
SUCCEEDED = "SUCCEEDED"
FAILED_NO_STATE_CHANGE = "FAILED_NO_STATE_CHANGE"
FAILED_ROLLBACK_COMPLETE = "FAILED_ROLLBACK_COMPLETE"
FAILED_UNABLE_TO_ROLLBACK = "FAILED_UNABLE_TO_ROLLBACK"
REJECTED = "REJECTED"
STATUSES = (SUCCEEDED, FAILED_NO_STATE_CHANGE, FAILED_ROLLBACK_COMPLETE, FAILED_UNABLE_TO_ROLLBACK, REJECTED)

# A progress event: (name, data). The step's command line writes it to stderr as one JSON line.
Emit = Callable[[str, dict[str, Any]], None]


def quiet(event: str, data: dict[str, Any]) -> None:
    """The :data:`Emit` that drops every event (in-process callers that do not watch progress)."""
    return None
