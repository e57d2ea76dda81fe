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


def test_half_the_concurrency_when_it_is_as_fast_else_the_best_bucket() -> None:
    pick = _runtime_bench().pipelined_batch
    assert pick({1: 400.0, 2: 450.0, 4: 500.0, 8: 510.0}, 8, 8) == 4  # within 5 %: two batches in flight
    assert pick({1: 400.0, 2: 450.0, 4: 500.0, 8: 600.0}, 8, 8) == 8  # b8 clearly better: keep it
    assert pick({1: 400.0, 2: 520.0, 4: 500.0, 8: 530.0}, 8, 8) == 2  # the best of the halves
    assert pick({1: 400.0, 2: 450.0}, 2, 1) == 2  # no bucket fits half of concurrency 1
