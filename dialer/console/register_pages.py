"""Destruction under dual control: the register, and the purges waiting for their
second person.

    GET  /console/destruction-register[?cursor=]
    GET  /console/purges[?done=]
    POST /console/purges/{purge_id}/approve
"""

from __future__ import annotations

from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from dialer.console.page_kit import Ctx, PageKit
from dialer.console.ports import ConsoleError, NotFound, Refused

_log = structlog.get_logger("dialgate.console")


def add_register_pages(router: APIRouter, kit: PageKit) -> None:
    """The destruction register and purge approval."""

    @router.get("/destruction-register")
    async def destruction_register(request: Request, cursor: str | None = None) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "register")) is not None:
            return r
        try:
            page = await ctx.queries.destruction_register(ctx.who, cursor, ctx.settings.page_size)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        return await kit.render(ctx, "destruction.html", page=page, cursor=cursor)

    async def purges_page(ctx: Ctx, status: int = 200, error: str | None = None, done: str | None = None) -> Response:
        try:
            pending = await ctx.queries.pending_purges(ctx.who)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        return await kit.render(ctx, "purges.html", status=status, pending=pending, error=error, done=done)

    @router.get("/purges")
    async def purges(request: Request, done: str | None = None, mac: str | None = None) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "register")) is not None:
            return r
        # The banner confirms only what this sign-in approved: a crafted link's text is dropped.
        shown = done if done and ctx.codec.notice_ok(ctx.session, done, mac) else None
        return await purges_page(ctx, done=shown)

    @router.post("/purges/{purge_id}/approve")
    async def approve(request: Request, purge_id: str) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "purge_approve")) is not None:
            return r
        form = await kit.form_with_csrf(ctx)
        if form is None:
            return await kit.error_page(ctx, 403, ctx.t("error.csrf"))
        try:
            await ctx.queries.approve_purge(ctx.who, purge_id)
        except NotFound as exc:
            return await kit.on_error(ctx, exc)
        except ConsoleError as exc:
            _log.warning("console.purge_refused", user=ctx.who.name, purge_id=purge_id, why=exc.message)
            msg = exc.message_zh if ctx.lang == "zh-CN" else exc.message
            return await purges_page(ctx, status=409 if isinstance(exc, Refused) else 403, error=msg)
        _log.info("console.purge_approved", user=ctx.who.name, purge_id=purge_id)
        done = urlencode({"done": purge_id, "mac": ctx.codec.notice_mac(ctx.session, purge_id)})
        return kit.finish(ctx, RedirectResponse("/console/purges?" + done, status_code=303))

