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


def test_ids_made_by_racing_threads_are_distinct() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(5_000)], range(8)))
    assert len({i for batch in batches for i in batch}) == 40_000


def test_a_forked_child_does_not_repeat_the_random_part_of_its_parents_next_id() -> None:
    import os
    import select

    new_id()  # the parent holds drawn random bytes when it forks
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        try:
            os.write(write_end, new_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 10)
        assert ready, "the child did not answer in 10 s"
        child = os.read(read_end, 64).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    parent = new_id()
    assert child[15:] != parent[15:]  # after the millisecond and the version digit
