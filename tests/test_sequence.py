"""The sequence watermark: never acknowledges a seq that is not stored, never stores twice."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from fieldhub.hub.ingest.sequence import MAX_ABOVE, SeqTracker


def test_contiguous_run_moves_the_watermark():
    tracker = SeqTracker()
    assert tracker.commit([(1, 1), (2, 1), (3, 1)])
    assert (tracker.acked, tracker.above) == (3, set())


def test_gap_holds_the_watermark_until_filled():
    tracker = SeqTracker()
    tracker.commit([(1, 1), (3, 1), (4, 1)])
    assert tracker.acked == 1
    assert tracker.above == {3, 4}
    assert tracker.is_duplicate(3)
    assert not tracker.is_duplicate(2)
    tracker.commit([(2, 2)])
    assert (tracker.acked, tracker.above) == (4, set())


def test_oldest_releases_a_gap_the_device_gave_up():
    tracker = SeqTracker()
    tracker.commit([(1, 1), (5, 5)])  # the device dropped 2..4 from its outbox
    assert tracker.acked == 5


def test_above_is_bounded():
    tracker = SeqTracker()
    tracker.commit([(s, 2) for s in range(3, MAX_ABOVE + 4)])  # 2 never comes, nobody says so
    assert tracker.acked == MAX_ABOVE + 3
    assert not tracker.above


@given(
    count=st.integers(1, 200),
    seed=st.integers(0, 2**32),
    duplicates=st.integers(0, 50),
)
def test_any_delivery_order_with_duplicates_ends_fully_acknowledged(
    count: int, seed: int, duplicates: int
):
    rng = random.Random(seed)
    deliveries = list(range(1, count + 1)) + [rng.randint(1, count) for _ in range(duplicates)]
    rng.shuffle(deliveries)
    tracker = SeqTracker()
    stored: list[int] = []
    for seq in deliveries:
        if tracker.is_duplicate(seq):
            continue
        stored.append(seq)
        # The outbox holds everything not yet acknowledged, so `oldest` is the watermark + 1.
        tracker.commit([(seq, tracker.acked + 1)])
        # Never acknowledge something not stored.
        assert set(range(1, tracker.acked + 1)) <= set(stored)
    assert sorted(stored) == list(range(1, count + 1))  # each stored exactly once
    assert tracker.acked == count
    assert not tracker.above
