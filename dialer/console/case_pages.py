"""A collector's cases: the worklist and one case.

    GET /console/worklist
    GET /console/cases/{creditor}/{case_id}
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from dialer.console.page_kit import PageKit
from dialer.console.ports import ConsoleError


def add_case_pages(router: APIRouter, kit: PageKit) -> None:
    """The worklist and the case view."""

    @router.get("/worklist")
    async def worklist(request: Request) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "worklist")) is not None:
            return r
        try:
            items = await ctx.queries.worklist(ctx.who)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        missed = [i for i in items if i.first_call_missed]
        by_agent: dict[str, list[Any]] = {}
        for i in items:
            if i.first_call_deadline is None:
                by_agent.setdefault(i.assigned_agent or "—", []).append(i)
        return await kit.render(ctx, "worklist.html", missed=missed, by_agent=sorted(by_agent.items()))

    # -- cases -------------------------------------------------------------------
    @router.get("/cases/{creditor}/{case_id}")
    async def case(request: Request, creditor: str, case_id: str) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "case")) is not None:
            return r
        try:
            c = await ctx.queries.case(ctx.who, creditor, case_id)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        return await kit.render(ctx, "case.html", c=c)

