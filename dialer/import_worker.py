"""A child process that applies one staged import job: `python -m dialer.import_worker`.

Reads on stdin what `dialer.import_jobs.ImportJobs` sends: the store's settings, whether
outbox events are kept, the creditors' default regions, the import id, the spooled
upload and its submitter, the limits. It opens a store of its own (the SQLite writer
lock and WAL are shared with the service through the database file), validates and
stages the upload if that is not done yet, applies the remaining rows in batches and
exits 0 when the job is done or refused. Killed midway, it leaves the job "validating"
(the upload still spooled) or "applying" at its last committed batch.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator


async def run(spec: dict[str, Any]) -> int:
    from dialer.bootstrap import store_for
    from dialer.clock import SystemClock
    from dialer.config import StoreConfig
    from dialer.import_jobs import run_in_child

    config = StoreConfig(**spec["store"])
    events = bool(spec["events"])

    @asynccontextmanager
    async def applying() -> AsyncIterator[Any]:
        # Batches need not wait for their own flush to disk (SQLite FULL → NORMAL):
        # a batch commits together with its rows_done, so one lost to a power cut is
        # lost with its rows_done and applied again on resume; and every later durable
        # commit (the gate's decisions) flushes the WAL up to it, so no durable decision
        # rests on a batch that could be lost. Staging keeps the store's own setting:
        # the spooled upload is deleted once its rows are staged.
        relaxed = replace(config, sqlite_synchronous="NORMAL") if config.sqlite_synchronous.upper() == "FULL" else config
        batches = store_for(relaxed, events=events)
        async with batches:
            yield batches

    store = store_for(config, events=events)
    async with store:
        job = await run_in_child(spec, store, SystemClock(), applying)
    return 0 if job.state in ("done", "refused") else 1


def lower_priority() -> None:
    """The gate's decisions come first on a busy machine: when a batch lets the
    database's writer lock go, the service's waiting thread should run before this
    process takes the lock again. A batch's lock hold stays bounded in wall time
    (`batch_ms`), so a lower priority lengthens the import, not the gate's wait."""
    os.nice(10)


def main() -> None:
    lower_priority()
    # The worker holds a whole file's rows while it validates and stages them, then
    # batches read ahead: with the default thresholds the collector would traverse
    # those live rows again every few hundred allocations, several times the work of
    # parsing them. Nothing here builds reference cycles worth collecting that often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    spec = json.loads(sys.stdin.read())
    sys.exit(asyncio.run(run(spec)))


if __name__ == "__main__":
    main()
