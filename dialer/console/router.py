"""The console's pages: `console_router(queries, settings)` returns an APIRouter for `/console`.

Server-rendered Jinja2 pages, a little vanilla JS, no build step, no CDN. Every page
resolves the session cookie to a `Principal` (re-read through the port on each request,
so a revoked user is out at once), checks the page's role (403 otherwise) and passes
the principal to every data call, which scopes by creditor (another creditor's id →
404). Every POST form carries the session's CSRF token.

`queries` and `settings` may be values or callables taking the `Request` (for a
composition root that builds its adapters in the app's lifespan).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from dialer.console import charts
from dialer.console.i18n import LANG_COOKIE, LANG_NAMES, LANGS, bilingual, pick_lang, translator, value_label
from dialer.console.ports import (
    CONSOLE_ROLES,
    HEALTH_COMPONENTS,
    BlockedDialFilter,
    BlockedSummary,
    ConsoleError,
    ConsoleQueries,
    DecisionRow,
    Forbidden,
    HealthItem,
    NotFound,
    Principal,
    RecordingFilter,
    Refused,
)
from dialer.console.security import GrantCodec, Session, SessionCodec, cookie_header, request_is_tls
from dialer.csv_cells import safe_cell
from dialer.http.deps import client_of
from dialer.http.inputs import EARLIEST, LATEST

SESSION_COOKIE = "dg_session"
_log = structlog.get_logger("dialgate.console")
_HERE = Path(__file__).parent
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_RANGE_RE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")  # longer numbers are no byte offsets
MIN_REASON_CHARS = 4
MAX_FIELD_CHARS = 200


@dataclass(frozen=True)
class ConsoleSettings:
    secret: bytes
    display_tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    session_ttl_s: int = 8 * 3600
    grant_ttl_s: int = 30 * 60
    page_size: int = 50
    default_days: int = 30
    now: Callable[[], float] = time.time


class _BadRequest(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


@dataclass
class _Ctx:
    request: Request
    queries: ConsoleQueries
    settings: ConsoleSettings
    codec: SessionCodec
    grants: GrantCodec
    session: Session
    new_cookie: bool
    principal: Principal | None
    lang: str
    started: float

    @property
    def t(self) -> Callable[..., str]:
        return translator(self.lang)

    @property
    def who(self) -> Principal:
        """The signed-in principal, on a page past `guard`."""
        assert self.principal is not None  # `guard` answered the request otherwise
        return self.principal


def _resolve(value: Any, request: Request) -> Any:
    return value(request) if callable(value) else value


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(_HERE / "templates")),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _safe_next(target: str | None) -> str:
    """Only same-site console paths: no scheme, no `//host`, no backslashes."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target and "\n" not in target:
        return target
    return "/console/"


def console_router(
    queries: ConsoleQueries | Callable[[Request], ConsoleQueries],
    settings: ConsoleSettings | Callable[[Request], ConsoleSettings],
) -> APIRouter:
    """The `/console` pages over a `ConsoleQueries` port."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    env = _env()
    static: dict[str, tuple[bytes, str]] = {
        p.name: (p.read_bytes(), _STATIC_TYPES[p.suffix])
        for p in (_HERE / "static").iterdir()
        if p.suffix in _STATIC_TYPES
    }
    codecs: dict[int, tuple[SessionCodec, GrantCodec]] = {}

    def codecs_for(s: ConsoleSettings) -> tuple[SessionCodec, GrantCodec]:
        got = codecs.get(id(s))
        if got is None:
            got = (SessionCodec(s.secret, s.session_ttl_s, s.now), GrantCodec(s.secret, s.grant_ttl_s, s.now))
            codecs[id(s)] = got
        return got

    async def context(request: Request) -> _Ctx:
        started = time.perf_counter()
        q = _resolve(queries, request)
        s = _resolve(settings, request)
        codec, grants = codecs_for(s)
        session = codec.decode(request.cookies.get(SESSION_COOKIE))
        new_cookie = False
        principal = None
        if session is not None and session.user_id is not None:
            principal = await q.principal(session.user_id)
            if principal is None or principal.role not in CONSOLE_ROLES or await q.signed_out(
                session.sid, session.user_id, session.issued_at):
                principal = None
                session = None
        if session is None:
            session, new_cookie = codec.new(None), True
        return _Ctx(
            request, q, s, codec, grants, session, new_cookie, principal,
            pick_lang(request.cookies.get(LANG_COOKIE)), started,
        )

    def fmt_dt(value: datetime | None, tz: ZoneInfo) -> str:
        if value is None:
            return ""
        if value.tzinfo is None:
            return value.isoformat(sep=" ")
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    def finish(ctx: _Ctx, resp: Response) -> Response:
        for k, v in _SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        if ctx.new_cookie:
            secure = request_is_tls(ctx.request.url.scheme, ctx.request.headers)
            resp.headers.append(
                "set-cookie",
                cookie_header(SESSION_COOKIE, ctx.codec.encode(ctx.session), secure=secure, max_age=ctx.settings.session_ttl_s),
            )
        resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - ctx.started) * 1000:.1f}"
        return resp

    async def render(ctx: _Ctx, template: str, status: int = 200, **values: Any) -> Response:
        tz = ctx.settings.display_tz
        health = await _health(ctx) if ctx.principal else ()
        page = env.get_template(template).render(
            t=ctx.t,
            lang=ctx.lang,
            langs=[(code, LANG_NAMES[code]) for code in LANGS],
            me=ctx.principal,
            csrf=ctx.codec.csrf_token(ctx.session),
            here=str(ctx.request.url.path) + (f"?{ctx.request.url.query}" if ctx.request.url.query else ""),
            dt=lambda v: fmt_dt(v, tz),
            bi=lambda en, zh: bilingual(ctx.lang, en, zh),
            tv=lambda prefix, value: value_label(ctx.lang, prefix, value),
            health=health,
            tz_name=str(tz),
            **values,
        )
        return finish(ctx, HTMLResponse(page, status_code=status))

    async def _health(ctx: _Ctx) -> tuple[HealthItem, ...]:
        try:
            items = {h.component: h for h in await ctx.queries.health()}
        except Exception as exc:  # the strip must never take the page down
            return tuple(HealthItem(c, "down", f"health unavailable: {type(exc).__name__}") for c in HEALTH_COMPONENTS)
        return tuple(items.get(c, HealthItem(c, "off", "")) for c in HEALTH_COMPONENTS)

    async def error_page(ctx: _Ctx, status: int, message: str) -> Response:
        return await render(ctx, "error.html", status=status, status_code=status, message=message)

    async def guard(ctx: _Ctx, area: str | None) -> Response | None:
        """A redirect to sign-in, a 403 page, or None when the page may be shown."""
        if ctx.principal is None:
            target = "/console/sign-in?" + urlencode({"next": str(ctx.request.url.path) + ("?" + ctx.request.url.query if ctx.request.url.query else "")})
            return finish(ctx, RedirectResponse(target, status_code=303))
        if area is not None and not ctx.principal.may(area):
            return await error_page(ctx, 403, ctx.t("error.forbidden_role", role=value_label(ctx.lang, "role", ctx.principal.role)))
        return None

    async def on_error(ctx: _Ctx, exc: ConsoleError) -> Response:
        msg = exc.message_zh if ctx.lang == "zh-CN" else exc.message
        if isinstance(exc, NotFound):
            return await error_page(ctx, 404, ctx.t("error.not_found"))
        if isinstance(exc, Forbidden):
            return await error_page(ctx, 403, msg)
        return await error_page(ctx, 409, msg)

    async def form_with_csrf(ctx: _Ctx) -> Mapping[str, str] | None:
        form = await ctx.request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not ctx.codec.csrf_ok(ctx.session, values.get("csrf")):
            return None
        return values

    # -- static, language --------------------------------------------------------
    @router.get("/static/{name}")
    async def static_file(name: str) -> Response:
        got = static.get(name)
        if got is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body, ctype = got
        return Response(body, media_type=ctype, headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})

    @router.get("/lang")
    async def switch_lang(request: Request, to: str = "zh-CN", next: str = "/console/") -> Response:
        resp = RedirectResponse(_safe_next(next), status_code=303)
        if to in LANGS:
            resp.headers.append(
                "set-cookie",
                cookie_header(LANG_COOKIE, to, secure=request_is_tls(request.url.scheme, request.headers), max_age=365 * 86400),
            )
        return resp

    # -- sign-in / sign-out ------------------------------------------------------
    @router.get("/sign-in")
    async def sign_in_form(request: Request, next: str = "/console/") -> Response:
        ctx = await context(request)
        return await render(ctx, "sign_in.html", next=_safe_next(next), error=None)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        ctx = await context(request)
        form = await form_with_csrf(ctx)
        if form is None:
            return await render(ctx, "sign_in.html", status=403, next="/console/", error=ctx.t("error.csrf"))
        nxt = _safe_next(form.get("next"))
        token = (form.get("token") or "").strip()
        who = await ctx.queries.authenticate(token) if token and len(token) <= 512 else None
        client = client_of(ctx.request.scope, getattr(ctx.request.app.state, "services", None))
        if who is None:
            _log.warning("console.sign_in_refused", why="unknown token", client=client)
            return await render(ctx, "sign_in.html", status=401, next=nxt, error=ctx.t("sign_in.bad_token"))
        if who.role not in CONSOLE_ROLES:
            _log.warning("console.sign_in_refused", why="role has no console", user=who.name, role=who.role, client=client)
            return await render(ctx, "sign_in.html", status=403, next=nxt, error=ctx.t("sign_in.no_console", role=value_label(ctx.lang, "role", who.role)))
        ctx.session, ctx.new_cookie = ctx.codec.new(who.user_id), True
        _log.info("console.signed_in", user=who.name, role=who.role, client=client)
        return finish(ctx, RedirectResponse(nxt, status_code=303))

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        ctx = await context(request)
        form = await form_with_csrf(ctx)
        if form is None:
            return await error_page(ctx, 403, ctx.t("error.csrf"))
        if ctx.principal is not None:
            # The cookie is signed, not stored: without this a copy of it would keep
            # working until it expires.
            await ctx.queries.sign_out(ctx.session.sid, ctx.session.issued_at + ctx.settings.session_ttl_s)
            _log.info("console.signed_out", user=ctx.principal.name)
        ctx.session, ctx.new_cookie, ctx.principal = ctx.codec.new(None), True, None
        return finish(ctx, RedirectResponse("/console/sign-in?signed_out=1", status_code=303))

    # -- home --------------------------------------------------------------------
    @router.get("/")
    async def home(request: Request) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, None)) is not None:
            return r
        opts = await ctx.queries.filter_options(ctx.who)
        return await render(ctx, "home.html", creditors=opts.creditors)

    @router.get("/case")
    async def case_lookup(request: Request, creditor: str = "", case_id: str = "") -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "case")) is not None:
            return r
        if not creditor.strip() or not case_id.strip():
            return await error_page(ctx, 400, ctx.t("error.case_lookup"))
        return finish(ctx, RedirectResponse(f"/console/cases/{creditor.strip()}/{case_id.strip()}", status_code=303))

    # -- blocked dials -----------------------------------------------------------
    def blocked_filter(ctx: _Ctx, params: Mapping[str, str]) -> tuple[BlockedDialFilter, dict[str, str]]:
        tz = ctx.settings.display_tz
        today = datetime.fromtimestamp(ctx.settings.now(), tz).date()
        raw = {k: (params.get(k) or "").strip()[:MAX_FIELD_CHARS] for k in ("from", "to", "creditor", "agent", "rule", "case")}
        if "from" not in params and "to" not in params:
            raw["from"] = (today - timedelta(days=ctx.settings.default_days - 1)).isoformat()
            raw["to"] = today.isoformat()
        d_from = _parse_date(raw["from"], "from", ctx)
        d_to = _parse_date(raw["to"], "to", ctx)
        if d_from and d_to and d_from > d_to:
            raise _BadRequest("to", ctx.t("error.range_order"))
        flt = BlockedDialFilter(
            date_from=d_from, date_to=d_to,
            creditor=raw["creditor"] or None, agent=raw["agent"] or None,
            rule_id=raw["rule"] or None, case_id=raw["case"] or None, tz=tz,
        )
        return flt, raw

    @router.get("/blocked")
    async def blocked(request: Request) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "blocked")) is not None:
            return r
        who = ctx.who
        opts = await ctx.queries.filter_options(who)
        try:
            flt, raw = blocked_filter(ctx, request.query_params)
        except _BadRequest as bad:
            raw = {k: request.query_params.get(k, "") for k in ("from", "to", "creditor", "agent", "rule", "case")}
            return await render(ctx, "blocked.html", status=400, raw=raw, opts=opts, error=(bad.field_name, str(bad)), page=None, charts_svg=None, query="", cursor=None)
        cursor = request.query_params.get("cursor") or None
        try:
            page, summary = await asyncio.gather(
                ctx.queries.blocked_dials(who, flt, cursor, ctx.settings.page_size),
                ctx.queries.blocked_summary(who, flt),
            )
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        if page.total is None:  # the adapter left the count to the chart aggregates
            page = replace(page, total=sum(n for _, _, n in summary.by_agent_rule))
        query = urlencode({k: v for k, v in raw.items() if v or k in ("from", "to")})
        return await render(
            ctx, "blocked.html", raw=raw, opts=opts, error=None, page=page,
            charts_svg=_charts(ctx, flt, summary), query=query, cursor=cursor,
        )

    @router.get("/blocked.csv")
    async def blocked_csv(request: Request) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "blocked")) is not None:
            return r
        try:
            flt, _ = blocked_filter(ctx, request.query_params)
            # Probe the scope before streaming: a 404 must be a 404, not a broken download.
            await ctx.queries.blocked_dials(ctx.who, flt, None, 1)
        except _BadRequest as bad:
            return finish(ctx, Response(f"{bad.field_name}: {bad}", status_code=400, media_type="text/plain; charset=utf-8"))
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        rows = ctx.queries.export_blocked_dials(ctx.who, flt)
        name = f"blocked-dials-{flt.date_from or 'all'}-{flt.date_to or 'all'}.csv"
        resp = StreamingResponse(
            _csv_stream(rows, ctx.settings.display_tz),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
        return finish(ctx, resp)

    @router.get("/decisions/{decision_id}")
    async def decision(request: Request, decision_id: str) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "decision")) is not None:
            return r
        try:
            d = await ctx.queries.decision(ctx.who, decision_id)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        return await render(ctx, "decision.html", d=d, inputs=_flatten(d.inputs_used))

    # -- worklist -----------------------------------------------------------------
    @router.get("/worklist")
    async def worklist(request: Request) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "worklist")) is not None:
            return r
        try:
            items = await ctx.queries.worklist(ctx.who)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        missed = [i for i in items if i.first_call_missed]
        by_agent: dict[str, list[Any]] = {}
        for i in items:
            if i.first_call_deadline is None:
                by_agent.setdefault(i.assigned_agent or "—", []).append(i)
        return await render(ctx, "worklist.html", missed=missed, by_agent=sorted(by_agent.items()))

    # -- cases and recordings ----------------------------------------------------
    @router.get("/cases/{creditor}/{case_id}")
    async def case(request: Request, creditor: str, case_id: str) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "case")) is not None:
            return r
        try:
            c = await ctx.queries.case(ctx.who, creditor, case_id)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        return await render(ctx, "case.html", c=c)

    @router.get("/cases/{creditor}/{case_id}/recordings")
    async def case_recordings(request: Request, creditor: str, case_id: str) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "recordings")) is not None:
            return r
        p = request.query_params
        raw = {k: (p.get(k) or "").strip()[:MAX_FIELD_CHARS] for k in ("agent", "number", "from", "to")}
        try:
            flt = RecordingFilter(
                agent=raw["agent"] or None, number=raw["number"] or None,
                date_from=_parse_date(raw["from"], "from", ctx), date_to=_parse_date(raw["to"], "to", ctx),
                tz=ctx.settings.display_tz,
            )
        except _BadRequest as bad:
            return await render(ctx, "case_recordings.html", status=400, creditor=creditor, case_id=case_id, raw=raw, recs=[], error=(bad.field_name, str(bad)))
        try:
            await ctx.queries.case(ctx.who, creditor, case_id)
            recs = await ctx.queries.case_recordings(ctx.who, creditor, case_id, flt)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        return await render(ctx, "case_recordings.html", creditor=creditor, case_id=case_id, raw=raw, recs=recs, error=None)

    @router.get("/recordings/{recording_id}")
    async def recording(request: Request, recording_id: str, grant: str | None = None) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "recordings")) is not None:
            return r
        try:
            rec = await ctx.queries.recording(ctx.who, recording_id)
            log = await ctx.queries.access_log(ctx.who, recording_id)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        reason = ctx.grants.reason(grant, ctx.session, recording_id) if grant else None
        return await render(
            ctx, "recording.html", rec=rec, log=log, reason=reason,
            grant=grant if reason else None, error=None, expired=bool(grant and not reason),
        )

    @router.post("/recordings/{recording_id}/listen")
    async def listen(request: Request, recording_id: str) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "recordings")) is not None:
            return r
        form = await form_with_csrf(ctx)
        if form is None:
            return await error_page(ctx, 403, ctx.t("error.csrf"))
        try:
            rec = await ctx.queries.recording(ctx.who, recording_id)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        reason = " ".join((form.get("reason") or "").split())
        if len(reason) < MIN_REASON_CHARS or len(reason) > 500:
            log = await ctx.queries.access_log(ctx.who, recording_id)
            return await render(
                ctx, "recording.html", status=400, rec=rec, log=log, reason=None, grant=None,
                error=ctx.t("recording.reason_invalid", n=MIN_REASON_CHARS), expired=False,
            )
        grant = ctx.grants.issue(ctx.session, recording_id, reason)
        # The vault logs every byte range read; this records that the reason was given.
        _log.info("console.recording_reason_given", user=ctx.who.name, recording_id=recording_id)
        return finish(ctx, RedirectResponse(f"/console/recordings/{recording_id}?" + urlencode({"grant": grant}), status_code=303))

    @router.get("/recordings/{recording_id}/audio")
    async def audio(request: Request, recording_id: str, grant: str = "") -> Response:
        ctx = await context(request)
        if ctx.principal is None:
            return finish(ctx, Response("sign in first", status_code=401, media_type="text/plain"))
        if not ctx.principal.may("recordings"):
            return finish(ctx, Response("forbidden", status_code=403, media_type="text/plain"))
        reason = ctx.grants.reason(grant, ctx.session, recording_id)
        if reason is None:
            return finish(ctx, Response("an access reason is required (借阅原因)", status_code=403, media_type="text/plain; charset=utf-8"))
        try:
            rec = await ctx.queries.recording(ctx.principal, recording_id)
            rng = _parse_range(request.headers.get("range"), rec.size)
            if isinstance(rng, str):  # "unsatisfiable", the one string it returns
                return finish(ctx, Response(status_code=416, headers={"Content-Range": f"bytes */{rec.size}"}))
            start, end = rng if rng else (None, None)
            client = client_of(request.scope, getattr(request.app.state, "services", None))
            sl = await ctx.queries.read_audio(ctx.principal, recording_id, reason=reason, start=start, end=end, client=client)
        except NotFound:
            return finish(ctx, Response("not found", status_code=404, media_type="text/plain"))
        except ConsoleError as exc:
            return finish(ctx, Response(exc.message, status_code=409, media_type="text/plain; charset=utf-8"))
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(sl.end - sl.start + 1)}
        status = 200
        if rng:
            status = 206
            headers["Content-Range"] = f"bytes {sl.start}-{sl.end}/{sl.total_size}"
        return finish(ctx, StreamingResponse(sl.body, status_code=status, media_type=sl.content_type, headers=headers))

    @router.get("/recordings/{recording_id}/access-log")
    async def access_log_fragment(request: Request, recording_id: str) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "recordings")) is not None:
            return r
        try:
            log = await ctx.queries.access_log(ctx.who, recording_id)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        page = env.get_template("access_log_rows.html").render(
            log=log, t=ctx.t, dt=lambda v: fmt_dt(v, ctx.settings.display_tz)
        )
        return finish(ctx, HTMLResponse(page))

    # -- destruction -------------------------------------------------------------
    @router.get("/destruction-register")
    async def destruction_register(request: Request, cursor: str | None = None) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "register")) is not None:
            return r
        try:
            page = await ctx.queries.destruction_register(ctx.who, cursor, ctx.settings.page_size)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        return await render(ctx, "destruction.html", page=page, cursor=cursor)

    async def purges_page(ctx: _Ctx, status: int = 200, error: str | None = None, done: str | None = None) -> Response:
        try:
            pending = await ctx.queries.pending_purges(ctx.who)
        except ConsoleError as exc:
            return await on_error(ctx, exc)
        return await render(ctx, "purges.html", status=status, pending=pending, error=error, done=done)

    @router.get("/purges")
    async def purges(request: Request, done: str | None = None) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "register")) is not None:
            return r
        return await purges_page(ctx, done=done)

    @router.post("/purges/{purge_id}/approve")
    async def approve(request: Request, purge_id: str) -> Response:
        ctx = await context(request)
        if (r := await guard(ctx, "purge_approve")) is not None:
            return r
        form = await form_with_csrf(ctx)
        if form is None:
            return await error_page(ctx, 403, ctx.t("error.csrf"))
        try:
            await ctx.queries.approve_purge(ctx.who, purge_id)
        except NotFound as exc:
            return await on_error(ctx, exc)
        except ConsoleError as exc:
            _log.warning("console.purge_refused", user=ctx.who.name, purge_id=purge_id, why=exc.message)
            msg = exc.message_zh if ctx.lang == "zh-CN" else exc.message
            return await purges_page(ctx, status=409 if isinstance(exc, Refused) else 403, error=msg)
        _log.info("console.purge_approved", user=ctx.who.name, purge_id=purge_id)
        return finish(ctx, RedirectResponse("/console/purges?" + urlencode({"done": purge_id}), status_code=303))

    return router


def _parse_date(value: str, field_name: str, ctx: _Ctx) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or not EARLIEST.date() <= day < LATEST.date():  # beyond, a day's bounds overflow
        raise _BadRequest(field_name, ctx.t("error.bad_date", field=ctx.t(f"filter.{field_name}"), value=value))
    return day


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


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Inputs used, as (dotted key, value) lines for a definition list."""
    out: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for k in sorted(value, key=str):
            out.extend(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
        for i, v in enumerate(value):
            out.extend(_flatten(v, f"{prefix}[{i}]"))
    elif isinstance(value, (list, tuple, set, frozenset)):
        out.append((prefix, ", ".join(str(v) for v in value) or "—"))
    else:
        out.append((prefix, "—" if value is None else str(value)))
    return out


CSV_COLUMNS = (
    "decision_id", "time", "creditor", "case_id", "agent_id", "number", "rule_id",
    "reason_zh", "reason", "next_allowed_at", "policy_version", "channel",
    # Last, so files read by column position keep their meaning: "dial" or "recheck".
    "kind",
)
_cell = safe_cell  # the one guard every CSV export uses


async def _csv_stream(rows: AsyncIterator[DecisionRow], tz: ZoneInfo) -> AsyncIterator[bytes]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    # BOM first: spreadsheet programs on Chinese Windows then read the file as UTF-8.
    buf.write("\ufeff")
    w.writerow(CSV_COLUMNS)
    n = 0
    async for r in rows:
        w.writerow(
            [
                _cell(v)
                for v in (
                    r.decision_id, r.at.astimezone(tz).isoformat(timespec="seconds"), r.creditor, r.case_id, r.agent_id,
                    r.number_masked, r.rule_id, r.reason_zh, r.reason,
                    r.next_allowed_at.astimezone(tz).isoformat(timespec="seconds") if r.next_allowed_at else "",
                    r.policy_version, r.channel, r.kind,
                )
            ]
        )
        n += 1
        if n % 500 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def _charts(ctx: _Ctx, flt: BlockedDialFilter, summary: BlockedSummary) -> dict[str, Any]:
    t = ctx.t
    by_rule: dict[str, int] = {}
    for _, r, n in summary.by_day_rule:
        by_rule[r] = by_rule.get(r, 0) + n
    total = sum(by_rule.values())
    colours = charts.rule_colours(by_rule)
    days = None
    if flt.date_from and flt.date_to:
        days = charts.day_span(flt.date_from, flt.date_to)
    top_rule = max(by_rule, key=lambda r: (by_rule[r], r)) if by_rule else "—"
    agent_tot: dict[str, int] = {}
    for a, _, n in summary.by_agent_rule:
        agent_tot[a] = agent_tot.get(a, 0) + n
    top_agent = max(agent_tot, key=lambda a: (agent_tot[a], a)) if agent_tot else "—"
    per_day = charts.blocked_per_day_svg(
        summary.by_day_rule, days=days, colours=colours,
        text=charts.ChartText(
            title=t("chart.per_day.title"),
            desc=t("chart.per_day.desc", total=total, rules=len(by_rule), top=top_rule, top_n=by_rule.get(top_rule, 0)),
            other=t("chart.other"), empty=t("chart.empty"), total=t("chart.total"),
        ),
    )
    heat = charts.agent_rule_heatmap_svg(
        summary.by_agent_rule, colours=colours,
        text=charts.ChartText(
            title=t("chart.heat.title"),
            desc=t("chart.heat.desc", agents=len(agent_tot), top=top_agent, top_n=agent_tot.get(top_agent, 0)),
            other=t("chart.other"), empty=t("chart.empty"), total=t("chart.total"),
        ),
    )
    return {"per_day": Markup(per_day), "heat": Markup(heat), "total": total, "by_rule": sorted(by_rule.items(), key=lambda kv: -kv[1])}
