"""What every console page uses: the settings, the request's context (session,
principal, language), rendering with the security headers, the role guard, error pages
and the CSRF check of POST forms.

`PageKit(queries, settings)` holds them for one router; the pages are added by
`router.console_router` and the `*_pages` modules beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from dialer.auth import RefusalLimiter
from dialer.console.i18n import LANG_COOKIE, LANG_NAMES, LANGS, bilingual, pick_lang, translator, value_label
from dialer.console.ports import (
    CONSOLE_ROLES,
    HEALTH_COMPONENTS,
    ConsoleError,
    ConsoleQueries,
    Forbidden,
    HealthItem,
    NotFound,
    Principal,
)
from dialer.console.security import GrantCodec, Session, SessionCodec, cookie_header, request_is_tls
from dialer.http.inputs import EARLIEST, LATEST

SESSION_COOKIE = "dg_session"
HERE = Path(__file__).parent
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
MAX_FIELD_CHARS = 200
# A signed-in cookie is re-issued with the time of use at most this often: the idle
# limit is then exact to this much, and most requests set no cookie.
RENEW_SEEN_S = 60
HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the domain are not ours to pin


@dataclass(frozen=True)
class ConsoleSettings:
    secret: bytes
    display_tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    session_ttl_s: int = 8 * 3600
    idle_s: int = 30 * 60  # a sign-in not used this long ends: call-floor PCs are shared
    grant_ttl_s: int = 30 * 60
    page_size: int = 50
    default_days: int = 30
    now: Callable[[], float] = time.time


class BadRequest(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


@dataclass
class Ctx:
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
        loader=FileSystemLoader(str(HERE / "templates")),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def fmt_dt(value: datetime | None, tz: ZoneInfo) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        return value.isoformat(sep=" ")
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def parse_date(value: str, field_name: str, ctx: Ctx) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or not EARLIEST.date() <= day < LATEST.date():  # beyond, a day's bounds overflow
        raise BadRequest(field_name, ctx.t("error.bad_date", field=ctx.t(f"filter.{field_name}"), value=value))
    return day


class PageKit:
    """The pages' shared steps over one `ConsoleQueries` port and its settings, each
    a value or a callable taking the `Request`."""

    def __init__(
        self,
        queries: ConsoleQueries | Callable[[Request], ConsoleQueries],
        settings: ConsoleSettings | Callable[[Request], ConsoleSettings],
    ) -> None:
        self.queries = queries
        self.settings = settings
        self.env = _env()
        self._codecs: dict[int, tuple[SessionCodec, GrantCodec]] = {}
        self._refusals = RefusalLimiter()

    def refusals(self, request: Request) -> RefusalLimiter:
        """Refused sign-ins counted per client: the service's own limiter when the console
        runs inside it, so a guesser gets one allowance across the API and the form."""
        auth = getattr(getattr(request.app.state, "services", None), "auth", None)
        shared = getattr(auth, "limiter", None)
        return shared if isinstance(shared, RefusalLimiter) else self._refusals

    def codecs_for(self, s: ConsoleSettings) -> tuple[SessionCodec, GrantCodec]:
        got = self._codecs.get(id(s))
        if got is None:
            got = (SessionCodec(s.secret, s.session_ttl_s, s.now), GrantCodec(s.secret, s.grant_ttl_s, s.now))
            self._codecs[id(s)] = got
        return got

    async def context(self, request: Request) -> Ctx:
        started = time.perf_counter()
        q = _resolve(self.queries, request)
        s = _resolve(self.settings, request)
        codec, grants = self.codecs_for(s)
        session = codec.decode(request.cookies.get(SESSION_COOKIE))
        new_cookie = False
        principal = None
        if session is not None and session.user_id is not None:
            principal = await q.principal(session.user_id)
            idle = int(s.now()) - session.last_seen
            if principal is None or principal.role not in CONSOLE_ROLES or idle > s.idle_s or await q.signed_out(
                session.sid, session.user_id, session.issued_at):
                principal = None
                session = None
            elif idle >= RENEW_SEEN_S:
                session, new_cookie = codec.seen(session), True
        if session is None:
            session, new_cookie = codec.new(None), True
        return Ctx(
            request, q, s, codec, grants, session, new_cookie, principal,
            pick_lang(request.cookies.get(LANG_COOKIE)), started,
        )

    def finish(self, ctx: Ctx, resp: Response) -> Response:
        for k, v in _SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        secure = request_is_tls(ctx.request.url.scheme, ctx.request.headers)
        if secure:
            # Without it a typed or bookmarked http:// address goes out in clear first, and
            # whoever answers it on the call floor's network can serve a fake sign-in form.
            resp.headers.setdefault("Strict-Transport-Security", HSTS)
        if ctx.new_cookie:
            left = ctx.session.issued_at + ctx.settings.session_ttl_s - int(ctx.settings.now())
            resp.headers.append(
                "set-cookie",
                cookie_header(SESSION_COOKIE, ctx.codec.encode(ctx.session), secure=secure, max_age=max(1, left)),
            )
        resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - ctx.started) * 1000:.1f}"
        return resp

    async def render(self, ctx: Ctx, template: str, status: int = 200, **values: Any) -> Response:
        tz = ctx.settings.display_tz
        health = await self._health(ctx) if ctx.principal else ()
        page = self.env.get_template(template).render(
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
        return self.finish(ctx, HTMLResponse(page, status_code=status))

    async def _health(self, ctx: Ctx) -> tuple[HealthItem, ...]:
        try:
            items = {h.component: h for h in await ctx.queries.health()}
        except Exception as exc:  # the strip must never take the page down
            return tuple(HealthItem(c, "down", f"health unavailable: {type(exc).__name__}") for c in HEALTH_COMPONENTS)
        return tuple(items.get(c, HealthItem(c, "off", "")) for c in HEALTH_COMPONENTS)

    async def error_page(self, ctx: Ctx, status: int, message: str) -> Response:
        return await self.render(ctx, "error.html", status=status, status_code=status, message=message)

    async def guard(self, ctx: Ctx, area: str | None) -> Response | None:
        """A redirect to sign-in, a 403 page, or None when the page may be shown."""
        if ctx.principal is None:
            target = "/console/sign-in?" + urlencode({"next": str(ctx.request.url.path) + ("?" + ctx.request.url.query if ctx.request.url.query else "")})
            return self.finish(ctx, RedirectResponse(target, status_code=303))
        if area is not None and not ctx.principal.may(area):
            return await self.error_page(ctx, 403, ctx.t("error.forbidden_role", role=value_label(ctx.lang, "role", ctx.principal.role)))
        return None

    async def on_error(self, ctx: Ctx, exc: ConsoleError) -> Response:
        msg = exc.message_zh if ctx.lang == "zh-CN" else exc.message
        if isinstance(exc, NotFound):
            return await self.error_page(ctx, 404, ctx.t("error.not_found"))
        if isinstance(exc, Forbidden):
            return await self.error_page(ctx, 403, msg)
        return await self.error_page(ctx, 409, msg)

    async def form_with_csrf(self, ctx: Ctx) -> Mapping[str, str] | None:
        form = await ctx.request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not ctx.codec.csrf_ok(ctx.session, values.get("csrf")):
            return None
        return values
