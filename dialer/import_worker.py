"""A child process that applies one staged import job: `python -m dialer.import_worker`.

Reads on stdin what `dialer.import_jobs.ImportJobs` sends: the store's settings, whether
outbox events are kept, the import id and the batch size. It opens a store of its own
(the SQLite writer lock and WAL are shared with the service through the database file),
applies the job's remaining rows in batches and exits 0 when the job is done. Killed
midway, it leaves the job "applying" at its last committed batch.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def run(spec: dict[str, Any]) -> int:
    from adapters.db.store import SqlAlchemyCaseStore
    from dialer.clock import SystemClock
    from dialer.config import StoreConfig
    from dialer.import_jobs import apply_job

    store = SqlAlchemyCaseStore(StoreConfig(**spec["store"]), events=bool(spec["events"]))
    async with store:
        job = await apply_job(store, SystemClock(), spec["import_id"], int(spec["batch_rows"]))
    return 0 if job.state == "done" else 1


def main() -> None:
    spec = json.loads(sys.stdin.read())
    sys.exit(asyncio.run(run(spec)))


if __name__ == "__main__":
    main()
