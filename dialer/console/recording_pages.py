"""Recordings for QA: a case's recordings, one recording with its access log, the
access reason (借阅原因) that grants listening, and the audio with HTTP Range.

    GET  /console/cases/{creditor}/{case_id}/recordings?agent=&number=&from=&to=
    GET  /console/recordings/{recording_id}[?grant=]
    POST /console/recordings/{recording_id}/listen      reason → a grant
    GET  /console/recordings/{recording_id}/audio?grant=
    GET  /console/recordings/{recording_id}/access-log  rows only
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from dialer.console.page_kit import MAX_FIELD_CHARS, BadRequest, PageKit, fmt_dt, parse_date
from dialer.console.ports import ConsoleError, NotFound, RecordingFilter
from dialer.http.deps import client_of
from dialer.masking import redact_on_input

_log = structlog.get_logger("dialgate.console")
_RANGE_RE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")  # longer numbers are no byte offsets
MIN_REASON_CHARS = 4


def add_recording_pages(router: APIRouter, kit: PageKit) -> None:
    """A case's recordings, one recording with its access log, the access reason, the audio."""

    @router.get("/cases/{creditor}/{case_id}/recordings")
    async def case_recordings(request: Request, creditor: str, case_id: str) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "recordings")) is not None:
            return r
        p = request.query_params
        raw = {k: (p.get(k) or "").strip()[:MAX_FIELD_CHARS] for k in ("agent", "number", "from", "to")}
        try:
            flt = RecordingFilter(
                agent=raw["agent"] or None, number=raw["number"] or None,
                date_from=parse_date(raw["from"], "from", ctx), date_to=parse_date(raw["to"], "to", ctx),
                tz=ctx.settings.display_tz,
            )
        except BadRequest as bad:
            return await kit.render(ctx, "case_recordings.html", status=400, creditor=creditor, case_id=case_id, raw=raw, recs=[], error=(bad.field_name, str(bad)))
        try:
            await ctx.queries.case(ctx.who, creditor, case_id)
            recs = await ctx.queries.case_recordings(ctx.who, creditor, case_id, flt)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        return await kit.render(ctx, "case_recordings.html", creditor=creditor, case_id=case_id, raw=raw, recs=recs, error=None)

    @router.get("/recordings/{recording_id}")
    async def recording(request: Request, recording_id: str, grant: str | None = None) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "recordings")) is not None:
            return r
        try:
            rec = await ctx.queries.recording(ctx.who, recording_id)
            log = await ctx.queries.access_log(ctx.who, recording_id)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        reason = ctx.grants.reason(grant, ctx.session, recording_id) if grant else None
        return await kit.render(
            ctx, "recording.html", rec=rec, log=log, reason=reason,
            grant=grant if reason else None, error=None, expired=bool(grant and not reason),
        )

    @router.post("/recordings/{recording_id}/listen")
    async def listen(request: Request, recording_id: str) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "recordings")) is not None:
            return r
        form = await kit.form_with_csrf(ctx)
        if form is None:
            return await kit.error_page(ctx, 403, ctx.t("error.csrf"))
        try:
            rec = await ctx.queries.recording(ctx.who, recording_id)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        # Card and ID numbers are masked as the API masks them: the reason travels in the
        # audio link (signed, readable) and is stored in the access log.
        reason = redact_on_input(" ".join((form.get("reason") or "").split())) or ""
        if len(reason) < MIN_REASON_CHARS or len(reason) > 500:
            log = await ctx.queries.access_log(ctx.who, recording_id)
            return await kit.render(
                ctx, "recording.html", status=400, rec=rec, log=log, reason=None, grant=None,
                error=ctx.t("recording.reason_invalid", n=MIN_REASON_CHARS), expired=False,
            )
        grant = ctx.grants.issue(ctx.session, recording_id, reason)
        # The vault logs every byte range read; this records that the reason was given.
        _log.info("console.recording_reason_given", user=ctx.who.name, recording_id=recording_id)
        return kit.finish(ctx, RedirectResponse(f"/console/recordings/{recording_id}?" + urlencode({"grant": grant}), status_code=303))

    @router.get("/recordings/{recording_id}/audio")
    async def audio(request: Request, recording_id: str, grant: str = "") -> Response:
        ctx = await kit.context(request)
        if ctx.principal is None:
            return kit.finish(ctx, Response("sign in first", status_code=401, media_type="text/plain"))
        if not ctx.principal.may("recordings"):
            return kit.finish(ctx, Response("forbidden", status_code=403, media_type="text/plain"))
        reason = ctx.grants.reason(grant, ctx.session, recording_id)
        if reason is None:
            return kit.finish(ctx, Response("an access reason is required (借阅原因)", status_code=403, media_type="text/plain; charset=utf-8"))
        try:
            rec = await ctx.queries.recording(ctx.principal, recording_id)
            rng = _parse_range(request.headers.get("range"), rec.size)
            if isinstance(rng, str):  # "unsatisfiable", the one string it returns
                return kit.finish(ctx, Response(status_code=416, headers={"Content-Range": f"bytes */{rec.size}"}))
            start, end = rng if rng else (None, None)
            client = client_of(request.scope, getattr(request.app.state, "services", None))
            sl = await ctx.queries.read_audio(ctx.principal, recording_id, reason=reason, start=start, end=end, client=client)
        except NotFound:
            return kit.finish(ctx, Response("not found", status_code=404, media_type="text/plain"))
        except ConsoleError as exc:
            return kit.finish(ctx, Response(exc.message, status_code=409, media_type="text/plain; charset=utf-8"))
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(sl.end - sl.start + 1)}
        status = 200
        if rng:
            status = 206
            headers["Content-Range"] = f"bytes {sl.start}-{sl.end}/{sl.total_size}"
        return kit.finish(ctx, StreamingResponse(sl.body, status_code=status, media_type=sl.content_type, headers=headers))

    @router.get("/recordings/{recording_id}/access-log")
    async def access_log_fragment(request: Request, recording_id: str) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "recordings")) is not None:
            return r
        try:
            log = await ctx.queries.access_log(ctx.who, recording_id)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        page = kit.env.get_template("access_log_rows.html").render(
            log=log, t=ctx.t, dt=lambda v: fmt_dt(v, ctx.settings.display_tz)
        )
        return kit.finish(ctx, HTMLResponse(page))


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive for a single `bytes=` range; None to send it all (no or
    unsupported Range: a server may ignore it); "unsatisfiable" for a 416."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix: the last N bytes
        n = int(m.group(2))
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)
