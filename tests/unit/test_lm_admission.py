"""Property tests of the LM engine's admission policy (simulated clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeds.errors import QueueFull, RequestTooLarge
from edgeds.runtime.lm.admission import Admission, check_fits

# operations: ("offer", timeout or None) | ("finish",) | ("cancel", index) | ("tick", seconds)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.one_of(st.none(), st.floats(0.1, 5.0))),
        st.tuples(st.just("finish"), st.just(0)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("tick"), st.floats(0.0, 2.0)),
    ),
    max_size=80,
)


@given(st.integers(1, 4), st.integers(0, 5), ops)
def test_admission_invariants(
    max_running: int, max_queue: int, operations: list[tuple[str, float | int | None]]
) -> None:
    adm: Admission[int] = Admission(max_running, max_queue)
    now = 0.0
    offered: list[int] = []
    admitted_order: list[int] = []
    running: list[int] = []
    gone: set[int] = set()
    deadlines: dict[int, float] = {}
    for op, arg in operations:
        if op == "offer":
            item = len(offered)
            waiting_before = len(adm)
            deadline = now + arg if isinstance(arg, float) else None
            try:
                adm.offer(item, now, deadline, retry_after_s=3.0)
            except QueueFull as exc:
                assert exc.retry_after_s == 3.0
                # full means: max_queue requests wait beyond the free slots
                assert waiting_before >= max_queue + (max_running - adm.running)
                offered.append(item)
                gone.add(item)
                continue
            offered.append(item)
            if deadline is not None:
                deadlines[item] = deadline
        elif op == "finish" and running:
            running.pop(0)
            adm.release()
        elif op == "cancel" and offered:
            item = offered[int(arg or 0) % len(offered)]
            removed = adm.remove(item)
            assert removed == (item not in gone and item not in admitted_order)
            if removed:
                gone.add(item)
        elif op == "tick":
            now += float(arg or 0.0)
        for item in adm.expire(now):
            assert deadlines[item] <= now and item not in gone
            gone.add(item)
        taken = adm.admit(now)
        admitted_order += taken
        running += taken
        # never more than max_running in the runtime; nothing waits while a slot is free
        assert adm.running == len(running) <= max_running
        assert len(adm) == 0 or adm.running == max_running
        assert len(adm) <= max_queue + max_running
        assert not adm.ready()
        wake = adm.next_deadline()
        assert wake is None or wake > now
    # FIFO: admitted in the order offered
    assert admitted_order == sorted(admitted_order)
    rest = adm.drain()
    assert len(adm) == 0 and set(rest).isdisjoint(gone | set(admitted_order))


def test_n_admitted_the_next_waits_then_full() -> None:
    adm: Admission[str] = Admission(max_running=2, max_queue=1)
    for item in "abc":
        adm.offer(item, 0.0)
    assert adm.admit(0.0) == ["a", "b"] and len(adm) == 1  # the third waits
    with pytest.raises(QueueFull, match=r"1 requests wait for 2 sequences \(max_queue 1\)") as info:
        adm.offer("d", 0.0, retry_after_s=2.0)
    assert info.value.retry_after_s == 2.0
    adm.release()
    assert adm.admit(0.0) == ["c"]


def test_check_fits_says_why() -> None:
    check_fits(100, 28, 128)
    with pytest.raises(
        RequestTooLarge,
        match=r"prompt \(100 tokens\) \+ max_tokens \(29\) = 129 tokens exceeds the context of 128 tokens by 1",
    ) as info:
        check_fits(100, 29, 128)
    assert "exceeds the context" in info.value.reason
