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

from collections.abc import Callable
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from dialer.console.blocked_pages import add_blocked_pages
from dialer.console.case_pages import add_case_pages
from dialer.console.i18n import LANG_COOKIE, LANGS, value_label
from dialer.console.page_kit import HERE, ConsoleSettings, PageKit
from dialer.console.ports import CONSOLE_ROLES, ConsoleQueries
from dialer.console.recording_pages import add_recording_pages
from dialer.console.register_pages import add_register_pages
from dialer.console.security import cookie_header, request_is_tls
from dialer.http.deps import client_of

__all__ = ["ConsoleSettings", "console_router"]

_log = structlog.get_logger("dialgate.console")
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


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
    kit = PageKit(queries, settings)
    static: dict[str, tuple[bytes, str]] = {
        p.name: (p.read_bytes(), _STATIC_TYPES[p.suffix])
        for p in (HERE / "static").iterdir()
        if p.suffix in _STATIC_TYPES
    }

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
        ctx = await kit.context(request)
        return await kit.render(ctx, "sign_in.html", next=_safe_next(next), error=None)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        ctx = await kit.context(request)
        form = await kit.form_with_csrf(ctx)
        if form is None:
            return await kit.render(ctx, "sign_in.html", status=403, next="/console/", error=ctx.t("error.csrf"))
        nxt = _safe_next(form.get("next"))
        client = client_of(ctx.request.scope, getattr(ctx.request.app.state, "services", None))
        limiter = kit.refusals(ctx.request)
        # Checked before the token is looked up, so a guesser learns nothing from a right one.
        wait = limiter.retry_after(client) if client else 0
        if wait:
            _log.warning("console.sign_in_refused", why="too many refused tokens", client=client)
            resp = await kit.render(ctx, "sign_in.html", status=429, next=nxt, error=ctx.t("sign_in.too_many", n=wait))
            resp.headers["Retry-After"] = str(wait)
            return resp
        token = (form.get("token") or "").strip()
        who = await ctx.queries.authenticate(token) if token and len(token) <= 512 else None
        if who is None:
            limited = limiter.refused(client) if client else False
            _log.warning("console.sign_in_refused", why="unknown token", client=client, limited=limited)
            return await kit.render(ctx, "sign_in.html", status=401, next=nxt, error=ctx.t("sign_in.bad_token"))
        if who.role not in CONSOLE_ROLES:
            _log.warning("console.sign_in_refused", why="role has no console", user=who.name, role=who.role, client=client)
            return await kit.render(ctx, "sign_in.html", status=403, next=nxt, error=ctx.t("sign_in.no_console", role=value_label(ctx.lang, "role", who.role)))
        ctx.session, ctx.new_cookie = ctx.codec.new(who.user_id), True
        _log.info("console.signed_in", user=who.name, role=who.role, client=client)
        return kit.finish(ctx, RedirectResponse(nxt, status_code=303))

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        ctx = await kit.context(request)
        form = await kit.form_with_csrf(ctx)
        if form is None:
            return await kit.error_page(ctx, 403, ctx.t("error.csrf"))
        if ctx.principal is not None:
            # The cookie is signed, not stored: without this a copy of it would keep
            # working until it expires.
            await ctx.queries.sign_out(ctx.session.sid, ctx.session.issued_at + ctx.settings.session_ttl_s)
            _log.info("console.signed_out", user=ctx.principal.name)
        ctx.session, ctx.new_cookie, ctx.principal = ctx.codec.new(None), True, None
        return kit.finish(ctx, RedirectResponse("/console/sign-in?signed_out=1", status_code=303))

    # -- home --------------------------------------------------------------------
    @router.get("/")
    async def home(request: Request) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, None)) is not None:
            return r
        opts = await ctx.queries.filter_options(ctx.who)
        return await kit.render(ctx, "home.html", creditors=opts.creditors)

    @router.get("/case")
    async def case_lookup(request: Request, creditor: str = "", case_id: str = "") -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "case")) is not None:
            return r
        if not creditor.strip() or not case_id.strip():
            return await kit.error_page(ctx, 400, ctx.t("error.case_lookup"))
        # Each typed value is one path segment: a "/", "?" or "#" in it must not lead elsewhere.
        target = f"/console/cases/{quote(creditor.strip(), safe='')}/{quote(case_id.strip(), safe='')}"
        return kit.finish(ctx, RedirectResponse(target, status_code=303))

    # The remaining pages, in the order their routes are matched.
    add_blocked_pages(router, kit)
    add_case_pages(router, kit)
    add_recording_pages(router, kit)
    add_register_pages(router, kit)
    return router
