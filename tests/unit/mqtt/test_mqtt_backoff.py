from __future__ import annotations

import random

import pytest

from adapters.mqtt.backoff import Backoff


def test_delays_grow_with_each_try_but_never_pass_the_cap():
    b = Backoff(base=0.1, cap=2.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(200)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    # The window doubles: the first try stays within base, later ones reach near the cap.
    assert delays[0] <= 0.1
    assert max(delays[20:]) > 1.0


def test_delays_are_jittered_so_clients_do_not_retry_in_lock_step():
    a = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(2))
    assert [round(a.next_delay(), 6) for _ in range(6)] != [round(b.next_delay(), 6) for _ in range(6)]


def test_reset_starts_again_from_the_smallest_window():
    b = Backoff(base=0.2, cap=30.0, rng=random.Random(3))
    for _ in range(30):
        b.next_delay()
    b.reset()
    assert b.next_delay() <= 0.2


def test_a_cap_below_the_base_is_refused():
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(base=5.0, cap=1.0)
