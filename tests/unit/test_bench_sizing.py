"""How bench/runtime_bench.py sizes the batcher it compares with the engine floor."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from edgeds.config import REPO_ROOT


def _runtime_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runtime_bench", REPO_ROOT / "bench" / "runtime_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_at_most_half_the_clients_per_instance_the_largest_as_fast_bucket() -> None:
    pick = _runtime_bench().pipelined_batch
    assert pick({1: 400.0, 2: 450.0, 4: 500.0, 8: 510.0}, 8, 8) == 4  # within 5 %: two batches in flight
    assert pick({1: 400.0, 2: 450.0, 4: 500.0, 8: 600.0}, 8, 8) == 4  # never every client: the fastest half
    assert pick({1: 400.0, 2: 520.0, 4: 500.0, 8: 530.0}, 8, 8) == 2  # the best of the halves
    assert pick({1: 400.0, 2: 450.0}, 2, 1) == 1  # one client per instance: batches of one
    # 2 instances x 4 clients each: b8 is the floor's best, but one instance would take all 8 requests
    assert pick({1: 1300.0, 2: 1320.0, 4: 1350.0, 8: 1450.0}, 8, 4) == 2
    assert pick({1: 1480.0, 2: 1450.0, 4: 1440.0, 8: 1400.0}, 1, 4) == 2  # as fast: the larger batch


def test_the_best_layout_is_the_highest_bucket_floor_of_any_instance_count() -> None:
    bench = _runtime_bench()
    one = {"instances": 1, "per_batch": [{"batch": 4, "samples_per_s": 1200.0}, {"batch": 3, "samples_per_s": 1600.0}]}
    two = {"instances": 2, "per_batch": [{"batch": 1, "samples_per_s": 1450.0}, {"batch": 2, "samples_per_s": 1480.0}]}
    # batch 3 is not a bucket (the engine pads it to 4), so it cannot make one instance the best
    assert bench.best_layout([one, two]) is two
    assert bench.layouts(2) == [1, 2] and bench.layouts(1) == [1]
