"""Export telemetry: collect what devices publish (live or from a capture) and write JSONL or CSV.

A record is :func:`~edgeds.telemetry.view.record`: the envelope as JSON plus its ``topic``.
:func:`read_capture` converts a JSONL capture (one record per line), :func:`subscribe` listens
to a target's broker for a while; both drop repeats of ``(device_id, boot_id, seq)`` unless told
not to, and count what they could not decode. :func:`write_records` writes them out.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, cast

from ..errors import TelemetryError
from .envelope import Envelope, decode
from .view import Deduper, csv_columns, flatten, record

Format = Literal["jsonl", "csv"]


@dataclass
class Collected:
    """Records in arrival order, with how many repeats were dropped and how many were malformed."""

    records: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    malformed: int = 0


class _Collector:
    def __init__(self, dedupe: bool) -> None:
        self.out = Collected()
        self._dedupe = dedupe
        self._seen = Deduper()

    def take(self, topic: str, env: Envelope) -> None:
        if not self._dedupe or self._seen.first(env):
            self.out.records.append(record(topic, env))
        self.out.duplicates = self._seen.duplicates


def read_capture(path: Path, *, dedupe: bool = True) -> Collected:
    """The records of the JSONL capture at ``path`` (blank lines skipped; a line that is not a
    record counts as malformed). Raises :class:`~edgeds.errors.TelemetryError` when it cannot be read."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TelemetryError(f"cannot read capture {path}: {exc.strerror}") from exc
    collector = _Collector(dedupe)
    for line in lines:
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            collector.take(str(raw.pop("topic", "")), Envelope.model_validate(raw))
        except (ValueError, TypeError):
            collector.out.malformed += 1
    return collector.out


def subscribe(
    target: str | Path,
    *,
    duration_s: float,
    device: str = "+",
    dedupe: bool = True,
    url: str | None = None,
    protocol: str | None = None,
) -> Collected:
    """Every message under ``<prefix>/<device>/#`` on the target's broker during ``duration_s`` seconds.

    ``device`` is one device id or ``+`` (all). ``url`` and ``protocol`` (5 or 3.1.1) override the
    target's ``mqtt``. Blocks for the duration (plus up to 10 s to subscribe; TelemetryError
    when the broker does not answer). A payload that is not an envelope counts as malformed.
    """
    from ..config import load_target
    from .mqtt import Message, MqttSubscriber, Protocol, resolve_settings

    cfg = load_target(target).mqtt
    settings = resolve_settings(cfg, url=url, protocol=cast("Protocol | None", protocol))
    collector = _Collector(dedupe)
    lock = threading.Lock()

    def on_message(msg: Message) -> None:
        try:
            env = decode(msg.payload)
        except TelemetryError:
            with lock:
                collector.out.malformed += 1
            return
        with lock:
            collector.take(msg.topic, env)

    with MqttSubscriber(settings, [f"{cfg.prefix}/{device}/#"], on_message).start(wait_s=10.0):
        time.sleep(duration_s)
    with lock:
        return Collected(list(collector.out.records), collector.out.duplicates, collector.out.malformed)


def write_records(records: list[dict[str, Any]], fmt: Format, out: TextIO) -> None:
    """Write ``records`` to ``out``: ``jsonl`` one compact JSON object per line; ``csv`` a header of
    the envelope columns then every ``payload.*`` column seen (sorted), one row per record."""
    if fmt == "jsonl":
        for rec in records:
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    else:
        rows = [flatten(r) for r in records]
        writer = csv.DictWriter(out, fieldnames=csv_columns(rows), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
