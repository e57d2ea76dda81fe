"""How the runtime benchmark sizes the batcher it compares with the engine floor."""

from __future__ import annotations

from edgeds.bench.sizing import batch_candidates, best_layout, choose_batch, layouts


def test_the_batcher_sizes_are_at_most_half_the_clients_per_instance() -> None:
    assert batch_candidates(8) == [1, 2, 4]  # one instance, 8 clients: batches of up to 4 pipeline
    assert batch_candidates(4) == [1, 2]  # 2 instances x 4 clients each: a batch of 4 would idle an instance
    assert batch_candidates(2) == [1] and batch_candidates(1) == [1]


def test_the_most_efficient_measured_size_wins_and_a_larger_one_within_3_percent() -> None:
    assert choose_batch({1: 1300.0, 2: 1200.0}) == 1  # clearly faster
    assert choose_batch({1: 1200.0, 2: 1300.0, 4: 1250.0}) == 2
    assert choose_batch({1: 1300.0, 2: 1270.0}) == 2  # within 3 %: the larger batch shares per-batch work
    assert choose_batch({1: 1300.0, 2: 1250.0, 4: 1290.0}) == 4
    assert choose_batch({1: 500.0}) == 1


def test_the_best_layout_is_the_highest_bucket_floor_of_any_instance_count() -> None:
    one = {"instances": 1, "per_batch": [{"batch": 4, "samples_per_s": 1200.0}, {"batch": 3, "samples_per_s": 1600.0}]}
    two = {"instances": 2, "per_batch": [{"batch": 1, "samples_per_s": 1450.0}, {"batch": 2, "samples_per_s": 1480.0}]}
    # batch 3 is not a bucket (the engine pads it to 4), so it cannot make one instance the best
    assert best_layout([one, two]) is two
    assert layouts(2) == [1, 2] and layouts(1) == [1]
