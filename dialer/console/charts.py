"""Server-rendered SVG charts of blocked dials: no JavaScript, no CDN, no external font.

* `blocked_per_day_svg` — stacked bars: blocked dials per day (per ISO week when the
  range is longer than `MAX_DAY_BARS` days), one segment per rule.
* `agent_rule_heatmap_svg` — a heat table of agents × rules, so a reviewer sees at a
  glance who keeps hitting which rule.

Both are `role="img"` with a `<title>` and a `<desc>` that states the gist in words,
and every bar segment or cell carries its own `<title>` (tooltip and screen-reader
text). Rules get the same colour in both charts via `rule_colours`. All text from the
data is XML-escaped. Output is deterministic for the same input.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from xml.sax.saxutils import escape, quoteattr

from dialer.console.contrast import mix, readable_on

# Categorical colours for rules: each has >= 3:1 contrast on white (WCAG 1.4.11,
# graphical objects), and neighbours differ in lightness as well as hue.
RULE_PALETTE: tuple[str, ...] = (
    "#1f5fa8",  # blue
    "#c2410c",  # orange
    "#15803d",  # green
    "#7e22ce",  # purple
    "#b91c1c",  # red
    "#0e7490",  # teal
    "#a16207",  # ochre
    "#be185d",  # magenta
)
OTHER_COLOUR = "#57606a"
TEXT = "#1f2933"
MUTED = "#57606a"
GRID = "#d0d7de"
HEAT_LOW = "#eef4fb"
HEAT_HIGH = "#0b3d91"
MAX_DAY_BARS = 62
OTHER = "\u2026other"  # sorts apart from any rule id or agent name


@dataclass(frozen=True, slots=True)
class ChartText:
    """The words a chart needs, already in the viewer's language."""

    title: str
    desc: str
    other: str = "other"
    empty: str = "No data"
    total: str = "Total"


def rule_colours(rule_totals: Mapping[str, int]) -> dict[str, str]:
    """Colour per rule, most frequent rule first; rules beyond the palette share OTHER_COLOUR."""
    ordered = sorted(rule_totals, key=lambda r: (-rule_totals[r], r))
    return {r: (RULE_PALETTE[i] if i < len(RULE_PALETTE) else OTHER_COLOUR) for i, r in enumerate(ordered)}


def nice_max(value: int) -> tuple[int, int]:
    """A round axis maximum >= value and its tick step (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1, 1
    raw = value / 4
    mag = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for m in (1, 2, 5, 10):
        step = max(1, int(m * mag))
        if step * 4 >= value:
            break
    top = step * math.ceil(value / step)
    return top, step


def _attr(v: object) -> str:
    return quoteattr(str(v))


def _svg_open(chart_id: str, width: int, height: int, text: ChartText) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" '
        f'font-family="inherit" font-size="12">',
        f'<title id="{chart_id}-t">{escape(text.title)}</title>',
        f'<desc id="{chart_id}-d">{escape(text.desc)}</desc>',
    ]


def buckets_for(days: Sequence[date]) -> tuple[list[date], bool]:
    """The x-axis buckets for a span of days: the days themselves, or ISO-week Mondays."""
    if len(days) <= MAX_DAY_BARS:
        return list(days), False
    weeks = sorted({d - timedelta(days=d.weekday()) for d in days})
    return weeks, True


def day_span(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def blocked_per_day_svg(
    counts: Iterable[tuple[date, str, int]],
    *,
    days: Sequence[date] | None = None,
    colours: Mapping[str, str] | None = None,
    text: ChartText,
    chart_id: str = "perday",
    width: int = 680,
    height: int = 250,
) -> str:
    """Stacked bars of blocked dials per day (or week) by rule."""
    rows = [(d, r, int(n)) for d, r, n in counts if n > 0]
    if days is None:
        days = day_span(min(d for d, _, _ in rows), max(d for d, _, _ in rows)) if rows else []
    buckets, weekly = buckets_for(days)
    totals_by_rule: dict[str, int] = defaultdict(int)
    for _, r, n in rows:
        totals_by_rule[r] += n
    colours = dict(colours) if colours is not None else rule_colours(totals_by_rule)
    shown = [r for r in sorted(totals_by_rule, key=lambda r: (-totals_by_rule[r], r)) if colours.get(r, OTHER_COLOUR) != OTHER_COLOUR]
    lumped = {r for r in totals_by_rule if r not in shown}

    def key_of(d: date) -> date:
        return d - timedelta(days=d.weekday()) if weekly else d

    stack: dict[date, dict[str, int]] = {b: defaultdict(int) for b in buckets}
    for d, r, n in rows:
        b = key_of(d)
        if b in stack:
            stack[b][OTHER if r in lumped else r] += n
    series = shown + ([OTHER] if lumped else [])

    out = _svg_open(chart_id, width, height, text)
    legend_w = 200
    left, right, top, bottom = 44, legend_w + 12, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((sum(v.values()) for v in stack.values()), default=0)
    if not buckets or peak == 0:
        out.append(
            f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" fill="{MUTED}">{escape(text.empty)}</text>'
        )
        out.append("</svg>")
        return "".join(out)
    top_v, step = nice_max(peak)
    # y grid and ticks
    for v in range(0, top_v + 1, step):
        y = top + plot_h - plot_h * v / top_v
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{v}</text>')
    slot = plot_w / len(buckets)
    bar_w = max(1.0, slot * 0.72)
    label_every = max(1, math.ceil(len(buckets) / 12))
    for i, b in enumerate(buckets):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        day_label = b.strftime("%m-%d")
        for s in series:
            n = stack[b].get(s, 0)
            if n <= 0:
                continue
            h = plot_h * n / top_v
            y -= h
            colour = OTHER_COLOUR if s == OTHER else colours.get(s, OTHER_COLOUR)
            name = text.other if s == OTHER else s
            tip = f"{b.isoformat()}{'+' if weekly else ''} · {name}: {n}"
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}" '
                f'data-day="{b.isoformat()}" data-rule={_attr(name)} data-count="{n}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        if i % label_every == 0:
            cx = left + i * slot + slot / 2
            out.append(
                f'<text x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="{MUTED}">{day_label}</text>'
            )
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{MUTED}" stroke-width="1"/>'
    )
    # legend
    lx = width - legend_w
    for j, s in enumerate(series):
        ly = top + j * 20
        colour = OTHER_COLOUR if s == OTHER else colours.get(s, OTHER_COLOUR)
        name = text.other if s == OTHER else s
        total = sum(totals_by_rule[r] for r in lumped) if s == OTHER else totals_by_rule[s]
        out.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 18}" y="{ly + 10}" fill="{TEXT}">{escape(_clip(name, 23))} ({total})</text>')
    out.append("</svg>")
    return "".join(out)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def heat_colour(n: int, peak: int) -> str:
    if n <= 0 or peak <= 0:
        return "#ffffff"
    # sqrt so that a few large cells do not wash out the rest
    return mix(HEAT_LOW, HEAT_HIGH, 0.15 + 0.85 * math.sqrt(n / peak))


def agent_rule_heatmap_svg(
    counts: Iterable[tuple[str, str, int]],
    *,
    colours: Mapping[str, str] | None = None,
    text: ChartText,
    chart_id: str = "heat",
    max_agents: int = 12,
    max_rules: int = 8,
) -> str:
    """A heat table: one row per agent (the `max_agents` with most blocks, the rest
    summed into "other"), one column per rule, cells shaded and labelled by count."""
    rows = [(a, r, int(n)) for a, r, n in counts if n > 0]
    by_agent: dict[str, int] = defaultdict(int)
    by_rule: dict[str, int] = defaultdict(int)
    for a, r, n in rows:
        by_agent[a] += n
        by_rule[r] += n
    agents = sorted(by_agent, key=lambda a: (-by_agent[a], a))
    rules = sorted(by_rule, key=lambda r: (-by_rule[r], r))
    top_agents, rest_agents = agents[:max_agents], set(agents[max_agents:])
    top_rules, rest_rules = rules[:max_rules], set(rules[max_rules:])
    cols = top_rules + ([OTHER] if rest_rules else [])
    row_keys = top_agents + ([OTHER] if rest_agents else [])
    grid: dict[tuple[str, str], int] = defaultdict(int)
    for a, r, n in rows:
        grid[(OTHER if a in rest_agents else a, OTHER if r in rest_rules else r)] += n
    colours = dict(colours) if colours is not None else rule_colours(by_rule)

    label_w, cell_w, cell_h, head_h, total_w = 150, 60, 24, 96, 60
    width = label_w + cell_w * max(1, len(cols)) + total_w + 8
    height = head_h + cell_h * max(1, len(row_keys)) + 8
    out = _svg_open(chart_id, width, height, text)
    if not rows:
        out.append(f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" fill="{MUTED}">{escape(text.empty)}</text>')
        out.append("</svg>")
        return "".join(out)
    peak = max(grid.values())
    for j, r in enumerate(cols):
        cx = label_w + j * cell_w + cell_w / 2
        name = text.other if r == OTHER else r
        colour = OTHER_COLOUR if r == OTHER else colours.get(r, OTHER_COLOUR)
        out.append(f'<rect x="{cx - cell_w / 2 + 4:.1f}" y="{head_h - 8}" width="{cell_w - 8}" height="4" fill="{colour}"/>')
        out.append(
            f'<text transform="translate({cx:.1f},{head_h - 14}) rotate(-35)" fill="{TEXT}">{escape(_clip(name, 18))}</text>'
        )
    tx = label_w + cell_w * len(cols) + total_w / 2
    out.append(f'<text x="{tx:.1f}" y="{head_h - 14}" text-anchor="middle" font-weight="bold" fill="{TEXT}">{escape(text.total)}</text>')
    for i, a in enumerate(row_keys):
        y = head_h + i * cell_h
        name = text.other if a == OTHER else a
        out.append(f'<text x="{label_w - 8}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="end" fill="{TEXT}">{escape(_clip(name, 20))}</text>')
        row_total = 0
        for j, r in enumerate(cols):
            n = grid.get((a, r), 0)
            row_total += n
            fill = heat_colour(n, peak)
            x = label_w + j * cell_w
            rname = text.other if r == OTHER else r
            out.append(
                f'<rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{fill}" stroke="{GRID}" '
                f"data-agent={_attr(name)} data-rule={_attr(rname)} data-count=\"{n}\">"
                f"<title>{escape(f'{name} · {rname}: {n}')}</title></rect>"
            )
            if n:
                out.append(
                    f'<text x="{x + cell_w / 2:.1f}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="middle" '
                    f'fill="{readable_on(fill, "#000000")}">{n}</text>'
                )
        out.append(f'<text x="{tx:.1f}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="middle" font-weight="bold" fill="{TEXT}">{row_total}</text>')
    out.append("</svg>")
    return "".join(out)
