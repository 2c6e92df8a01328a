"""The blocked-dial review: the table with its filters and charts, the CSV export, and
one decision's full record.

    GET /console/blocked?from=&to=&creditor=&agent=&rule=&case=&cursor=
    GET /console/blocked.csv?…                         the same filter, every row
    GET /console/decisions/{decision_id}
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from markupsafe import Markup

from dialer.console import charts
from dialer.console.page_kit import MAX_FIELD_CHARS, BadRequest, Ctx, PageKit, parse_date
from dialer.console.ports import BlockedDialFilter, BlockedSummary, ConsoleError, DecisionRow
from dialer.csv_cells import safe_cell


def add_blocked_pages(router: APIRouter, kit: PageKit) -> None:
    """The blocked dials (table, charts, CSV export) and one decision's record."""

    def blocked_filter(ctx: Ctx, params: Mapping[str, str]) -> tuple[BlockedDialFilter, dict[str, str]]:
        tz = ctx.settings.display_tz
        today = datetime.fromtimestamp(ctx.settings.now(), tz).date()
        raw = {k: (params.get(k) or "").strip()[:MAX_FIELD_CHARS] for k in ("from", "to", "creditor", "agent", "rule", "case")}
        if "from" not in params and "to" not in params:
            raw["from"] = (today - timedelta(days=ctx.settings.default_days - 1)).isoformat()
            raw["to"] = today.isoformat()
        d_from = parse_date(raw["from"], "from", ctx)
        d_to = parse_date(raw["to"], "to", ctx)
        if d_from and d_to and d_from > d_to:
            raise BadRequest("to", ctx.t("error.range_order"))
        flt = BlockedDialFilter(
            date_from=d_from, date_to=d_to,
            creditor=raw["creditor"] or None, agent=raw["agent"] or None,
            rule_id=raw["rule"] or None, case_id=raw["case"] or None, tz=tz,
        )
        return flt, raw

    @router.get("/blocked")
    async def blocked(request: Request) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "blocked")) is not None:
            return r
        who = ctx.who
        opts = await ctx.queries.filter_options(who)
        try:
            flt, raw = blocked_filter(ctx, request.query_params)
        except BadRequest as bad:
            raw = {k: request.query_params.get(k, "") for k in ("from", "to", "creditor", "agent", "rule", "case")}
            return await kit.render(ctx, "blocked.html", status=400, raw=raw, opts=opts, error=(bad.field_name, str(bad)), page=None, charts_svg=None, query="", cursor=None)
        cursor = request.query_params.get("cursor") or None
        try:
            page, summary = await asyncio.gather(
                ctx.queries.blocked_dials(who, flt, cursor, ctx.settings.page_size),
                ctx.queries.blocked_summary(who, flt),
            )
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        if page.total is None:  # the adapter left the count to the chart aggregates
            page = replace(page, total=sum(n for _, _, n in summary.by_agent_rule))
        query = urlencode({k: v for k, v in raw.items() if v or k in ("from", "to")})
        return await kit.render(
            ctx, "blocked.html", raw=raw, opts=opts, error=None, page=page,
            charts_svg=_charts(ctx, flt, summary), query=query, cursor=cursor,
        )

    @router.get("/blocked.csv")
    async def blocked_csv(request: Request) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "blocked")) is not None:
            return r
        try:
            flt, _ = blocked_filter(ctx, request.query_params)
            # Probe the scope before streaming: a 404 must be a 404, not a broken download.
            await ctx.queries.blocked_dials(ctx.who, flt, None, 1)
        except BadRequest as bad:
            return kit.finish(ctx, Response(f"{bad.field_name}: {bad}", status_code=400, media_type="text/plain; charset=utf-8"))
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        rows = ctx.queries.export_blocked_dials(ctx.who, flt)
        name = f"blocked-dials-{flt.date_from or 'all'}-{flt.date_to or 'all'}.csv"
        resp = StreamingResponse(
            _csv_stream(rows, ctx.settings.display_tz),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
        return kit.finish(ctx, resp)

    @router.get("/decisions/{decision_id}")
    async def decision(request: Request, decision_id: str) -> Response:
        ctx = await kit.context(request)
        if (r := await kit.guard(ctx, "decision")) is not None:
            return r
        try:
            d = await ctx.queries.decision(ctx.who, decision_id)
        except ConsoleError as exc:
            return await kit.on_error(ctx, exc)
        return await kit.render(ctx, "decision.html", d=d, inputs=_flatten(d.inputs_used))


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


def _charts(ctx: Ctx, flt: BlockedDialFilter, summary: BlockedSummary) -> dict[str, Any]:
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
