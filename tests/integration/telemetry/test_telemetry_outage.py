"""Broker down for 30 s while two devices publish at 10 Hz: every seq arrives at least once.

One outage serves both protocols honestly: two independent publisher processes (MQTT 5 and
MQTT 3.1.1) and two persistent-session consumers (MQTT 5 and 3.1.1) share one mosquitto, so each
publisher and each consumer lives through the same real 30-second outage; running them in
sequence would only double the wait. mosquitto runs with persistence on (as a production broker
would), so the consumers' sessions and their queued QoS 1 messages survive its restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Consumer, PublisherProcess, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0
RATE_HZ = 10.0
DEVICES = {"dev-v5": "5", "dev-v311": "3.1.1"}


def test_30s_broker_outage_loses_nothing_on_mqtt5_and_311(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Any],
    target_file: Callable[[str, str], Path],
    publishers: Callable[..., PublisherProcess],
    consumers: Callable[..., Consumer],
) -> None:
    broker = mosquitto_factory(persistence=True)
    watchers = [
        consumers(broker.url, "5", client_id="watch-v5", persistent=True),
        consumers(broker.url, "3.1.1", client_id="watch-v311", persistent=True),
    ]
    pubs = {
        device: publishers(target_file(broker.url, proto), device, tmp_path / f"{device}.db", RATE_HZ)
        for device, proto in DEVICES.items()
    }
    assert wait_until(lambda: all(len(w.seqs(d)) >= 10 for w in watchers for d in DEVICES), 20)

    broker.stop()
    down_at = time.time()
    time.sleep(OUTAGE_S)
    assert all(p.proc.poll() is None for p in pubs.values())
    broker.start()
    up_at = time.time()

    # Caught up: each device's live (non-historical) samples made after the restart arrive again.
    def live_again(w: Consumer, d: str) -> bool:
        return any(not e.is_historical and e.ts > up_at for e in w.stream(d))

    assert wait_until(lambda: all(live_again(w, d) for w in watchers for d in DEVICES), 30)
    final = {device: pub.terminate() for device, pub in pubs.items()}

    for device, stats in final.items():
        last = stats["last_seq"]
        assert stats["spool_depth"] == 0 and stats["dropped_total"] == 0, stats
        assert last >= (OUTAGE_S + 3) * RATE_HZ * 0.8, stats  # it kept sampling during the outage
        for w in watchers:

            def caught_up(w: Consumer = w, d: str = device, n: int = last) -> bool:
                return set(range(1, n + 1)) <= w.seqs(d)

            assert wait_until(caught_up, 20)
            stream = w.stream(device)
            missing = set(range(1, last + 1)) - {e.seq for e in stream}
            assert not missing, f"{device}: gap {sorted(missing)[:10]}"
            assert len({e.boot_id for e in stream}) == 1
            spooled = {e.seq for e in stream if e.is_historical and down_at < e.ts < up_at}
            assert len(spooled) >= OUTAGE_S * RATE_HZ * 0.8, len(spooled)
            assert w.statuses(device)[-1][1:] == ("offline", "shutdown")
