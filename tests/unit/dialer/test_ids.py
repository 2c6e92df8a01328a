"""Decision, attempt and event ids: valid UUIDv7, time-ordered, unique."""

from __future__ import annotations

import time
import uuid

from dialer.ids import new_id


def test_an_id_is_a_version_7_rfc_9562_uuid() -> None:
    value = new_id()
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_an_id_starts_with_the_unix_milliseconds_it_was_made_at() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(value.replace("-", "")[:12], 16) <= after


def test_ids_made_a_millisecond_apart_sort_in_time_order() -> None:
    first = new_id()
    deadline = time.monotonic() + 1
    while time.time_ns() // 1_000_000 == int(first.replace("-", "")[:12], 16) and time.monotonic() < deadline:
        pass
    assert new_id() > first


def test_ten_thousand_ids_are_distinct() -> None:
    assert len({new_id() for _ in range(10_000)}) == 10_000
