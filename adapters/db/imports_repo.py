"""Import jobs and their staged rows (`ImportJobRepository`) over the store's connection.

Tables: `import_jobs`, `import_rows` (migration ``versions/1851_import_jobs.py``,
mirrored in `adapters/db/tables.py`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.db import tables as t
from dialer.model import ImportJob

_UNFINISHED = ("validating", "applying")
# A job's batches run these once each per batch: built once (a statement built per call
# cost more than running it).
_JOB = select(t.import_jobs).where(t.import_jobs.c.id == bindparam("id"))
_JOB_LOCKED = _JOB.with_for_update()
_NEXT_ROWS = (
    select(t.import_rows.c.seq, t.import_rows.c.payload)
    .where(t.import_rows.c.import_id == bindparam("id"), t.import_rows.c.seq > bindparam("after"))
    .order_by(t.import_rows.c.seq)
    .limit(bindparam("limit"))
)
_ADVANCE = (
    update(t.import_jobs).where(t.import_jobs.c.id == bindparam("job"))
    .values(rows_done=bindparam("through"), summary=bindparam("new_summary"), updated_at=bindparam("now"))
)
_DROP_APPLIED = delete(t.import_rows).where(
    t.import_rows.c.import_id == bindparam("id"), t.import_rows.c.seq <= bindparam("through")
)


def job_from_row(r: Any) -> ImportJob:
    """An `import_jobs` row (a mapping of its columns) as the job."""
    return ImportJob(
        import_id=r["id"],
        kind=r["kind"],
        state=r["state"],
        actor=r["actor"],
        creditors=tuple(json.loads(r["creditors"])),
        rows_total=r["rows_total"],
        rows_done=r["rows_done"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        file_name=r["file_name"],
        encoding=r["encoding"],
        summary=json.loads(r["summary"]),
        errors=tuple(json.loads(r["errors"])) if r["errors"] else (),
        finished_at=r["finished_at"],
    )


class SqlImportJobRepository:
    def __init__(self, conn: AsyncConnection, is_postgres: bool = False) -> None:
        self.conn = conn
        self.is_postgres = is_postgres

    async def create(self, job: ImportJob) -> None:
        await self.conn.execute(
            insert(t.import_jobs).values(
                id=job.import_id, kind=job.kind, state=job.state, actor=job.actor,
                creditors=json.dumps(sorted(job.creditors)), file_name=job.file_name, encoding=job.encoding,
                rows_total=job.rows_total, rows_done=job.rows_done, summary=json.dumps(job.summary),
                errors=json.dumps(list(job.errors), ensure_ascii=False) if job.errors else None,
                created_at=job.created_at, updated_at=job.updated_at, finished_at=job.finished_at,
            )
        )

    async def stage(self, import_id: str, first_seq: int, payloads: Sequence[str]) -> None:
        if payloads:
            await self.conn.execute(
                insert(t.import_rows),
                [{"import_id": import_id, "seq": first_seq + i, "payload": p} for i, p in enumerate(payloads)],
            )

    async def get(self, import_id: str) -> ImportJob | None:
        row = (await self.conn.execute(_JOB, {"id": import_id})).mappings().first()
        return None if row is None else job_from_row(row)

    async def lock(self, import_id: str) -> ImportJob | None:
        row = (await self.conn.execute(_JOB_LOCKED if self.is_postgres else _JOB, {"id": import_id})).mappings().first()
        return None if row is None else job_from_row(row)

    async def next_rows(self, import_id: str, after: int, limit: int) -> list[tuple[int, str]]:
        rows = await self.conn.execute(_NEXT_ROWS, {"id": import_id, "after": after, "limit": limit})
        return [(int(seq), payload) for seq, payload in rows]

    async def advance(self, import_id: str, through: int, summary: dict[str, int], now: datetime) -> None:
        await self.conn.execute(_ADVANCE, {"job": import_id, "through": through,
                                           "new_summary": json.dumps(summary), "now": now})
        await self.conn.execute(_DROP_APPLIED, {"id": import_id, "through": through})

    async def finish(
        self, import_id: str, state: str, now: datetime, *, errors: Sequence[dict[str, Any]] | None = None,
        rows_total: int | None = None, encoding: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if state in ("done", "refused", "failed"):
            values["finished_at"] = now
        if errors is not None:
            values["errors"] = json.dumps(list(errors), ensure_ascii=False)
        if rows_total is not None:
            values["rows_total"] = rows_total
        if encoding is not None:
            values["encoding"] = encoding
        await self.conn.execute(update(t.import_jobs).where(t.import_jobs.c.id == import_id).values(**values))
        if state in ("refused", "failed"):
            await self.conn.execute(delete(t.import_rows).where(t.import_rows.c.import_id == import_id))

    async def unfinished(self) -> list[ImportJob]:
        rows = await self.conn.execute(
            select(t.import_jobs).where(t.import_jobs.c.state.in_(_UNFINISHED)).order_by(t.import_jobs.c.created_at)
        )
        return [job_from_row(r) for r in rows.mappings()]
