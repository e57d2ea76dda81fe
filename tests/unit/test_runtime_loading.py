"""Opening a bundle as a started engine: batching overrides, verification, who runs the batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeds.bundle import generate_keypair
from edgeds.config import Batching
from edgeds.errors import BundleVerificationError, ConfigError
from edgeds.runtime.loading import Execution, batching_overrides, load_served
from edgeds.sim.bundles import make_bundle

pytest.importorskip("onnxruntime")


def test_overrides_left_unset_keep_the_base() -> None:
    base = Batching(max_batch_size=8, buckets=(1, 4, 8), preferred_batch_sizes=(4, 8), max_queue_delay_us=700)
    assert batching_overrides(base) == base


def test_max_batch_drops_larger_buckets_and_preferred_sizes() -> None:
    base = Batching(max_batch_size=8, buckets=(1, 2, 4, 8), preferred_batch_sizes=(2, 8))
    out = batching_overrides(base, max_batch=4, delay_us=100, queue=16, instances=2)
    assert out.max_batch_size == 4
    assert out.buckets == (1, 2, 4)
    assert out.preferred_batch_sizes == (2,)
    assert (out.max_queue_delay_us, out.max_queue_size, out.instances) == (100, 16, 2)


def test_preferred_sizes_replace_the_base_ones() -> None:
    base = Batching(max_batch_size=8, preferred_batch_sizes=(8,))
    assert batching_overrides(base, preferred=[2, 4]).preferred_batch_sizes == (2, 4)


def test_an_invalid_result_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^batching\.instances: must be >= 1, got 0$"):
        batching_overrides(Batching(), instances=0)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("loading")
    private, public = generate_keypair(root / "keys", "test")
    return make_bundle(root / "bundle", 1, private, max_batch_size=8), public


def test_load_served_applies_overrides_and_starts_inline_by_auto(signed: tuple[Path, Path]) -> None:
    bundle, public = signed
    engine = load_served(bundle, public, True, 1, max_batch=4, instances=2, execution=Execution.auto).engine
    try:
        assert engine.ready and engine.inline
        assert engine.batching.max_batch_size == 4 and engine.batching.instances == 2
        assert len(engine.backends) == 2
        assert engine.name == "tiny" and engine.first_inference_s is not None
    finally:
        engine.close()


def test_load_served_with_workers(signed: tuple[Path, Path]) -> None:
    engine = load_served(signed[0], execution=Execution.workers).engine
    try:
        assert engine.ready and not engine.inline
    finally:
        engine.close()


def test_load_served_verifies_against_the_key(signed: tuple[Path, Path], tmp_path: Path) -> None:
    _, other = generate_keypair(tmp_path, "other")
    with pytest.raises(BundleVerificationError) as err:
        load_served(signed[0], other, True)
    assert err.value.reason == "bad_signature"
    load_served(signed[0], other, False).engine.close()  # verify=False only reads the bundle


def test_serve_offers_every_execution() -> None:
    from typing import get_args, get_type_hints

    from edgeds.cli.serve import serve

    choices = get_args(get_args(get_type_hints(serve, include_extras=True)["execution"])[0])
    assert choices == tuple(e.value for e in Execution)
