"""The compile cache: a second identical compile is served from it; --no-cache bypasses it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgeds.compile import compile_model
from edgeds.compile.cache import CompileCache, cache_key

from . import _compile_fixtures as fx

# fixtures shared with the other compile tests
cache_env, tiny, profiles = fx.cache_env, fx.tiny, fx.profiles

pytestmark = pytest.mark.usefixtures("cache_env")


def test_key_is_canonical_and_sensitive() -> None:
    base = {"model": "a" * 64, "backend": "onnxruntime", "options": {"x": 1}, "precision": "int8"}
    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))
    for field, value in (("model", "b" * 64), ("backend", "openvino"), ("options", {"x": 2}), ("precision", "fp16")):
        assert cache_key({**base, field: value}) != cache_key(base)


def test_second_compile_is_cached_and_no_cache_bypasses(tiny: Path, profiles: Path, tmp_path: Path) -> None:
    root = tmp_path / "compile-cache"
    first = compile_model(tiny, profiles / "tiny-ort.yaml", out=tmp_path / "a", cache_root=root)
    assert not any(a.cached for a in first.report.attempts)
    started = time.perf_counter()
    second = compile_model(tiny, profiles / "tiny-ort.yaml", out=tmp_path / "b", cache_root=root)
    elapsed = time.perf_counter() - started
    assert all(a.cached for a in second.report.attempts)
    assert second.report.winner is not None and first.report.winner is not None
    assert second.report.winner.accuracy == first.report.winner.accuracy
    assert (tmp_path / "a" / "artifacts" / "model.onnx").read_bytes() == (
        tmp_path / "b" / "artifacts" / "model.onnx"
    ).read_bytes()
    assert elapsed < first.report.seconds + 5  # loose: timing claims live in bench/
    third = compile_model(tiny, profiles / "tiny-ort.yaml", out=tmp_path / "c", cache_root=root, use_cache=False)
    assert not any(a.cached for a in third.report.attempts)


def test_other_precision_or_calibration_misses(tiny: Path, profiles: Path, tmp_path: Path) -> None:
    import numpy as np

    root = tmp_path / "cc"
    compile_model(tiny, profiles / "tiny-ort.yaml", out=tmp_path / "a", cache_root=root)
    fp32 = compile_model(tiny, profiles / "tiny-ort.yaml", out=tmp_path / "b", cache_root=root, precision="fp32")
    assert not fp32.report.attempts[0].cached
    other = np.full((8, 160, 160, 3), 90, np.uint8)
    again = compile_model(
        tiny, profiles / "tiny-ort.yaml", out=tmp_path / "c", cache_root=root, calibration_images=other
    )
    assert not again.report.attempts[0].cached


def test_torn_entry_is_a_miss(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    entry = cache.path("ab" * 32)
    entry.mkdir(parents=True)
    (entry / "entry.json").write_text("{not json")
    assert cache.get("ab" * 32) is None
