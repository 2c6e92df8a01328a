"""SVG charts: the numbers drawn are the numbers given, and the charts say so in words."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dialer.console import charts
from dialer.console.contrast import contrast_ratio

SVG = "{http://www.w3.org/2000/svg}"
TEXT = charts.ChartText(title="Blocked per day", desc="a summary", other="other", empty="No data", total="Total")


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("data-count")]


def test_each_day_stack_adds_up_to_the_blocked_dials_of_that_day():
    d0 = date(2026, 11, 1)
    counts = [(d0, "window.night", 3), (d0, "cap.number_daily", 2), (d0 + timedelta(days=2), "window.night", 7)]
    root = parse(charts.blocked_per_day_svg(counts, days=charts.day_span(d0, d0 + timedelta(days=3)), text=TEXT))
    per_day: dict[str, int] = defaultdict(int)
    for r in bars(root):
        per_day[r.get("data-day")] += int(r.get("data-count"))
    assert per_day == {"2026-11-01": 5, "2026-11-03": 7}


def test_bar_heights_are_proportional_to_counts():
    d0 = date(2026, 11, 1)
    root = parse(charts.blocked_per_day_svg([(d0, "a", 2), (d0 + timedelta(days=1), "a", 8)], text=TEXT))
    h = {r.get("data-day"): float(r.get("height")) for r in bars(root)}
    assert abs(h["2026-11-02"] / h["2026-11-01"] - 4.0) < 0.05


def test_chart_is_an_image_named_by_its_title_and_description():
    root = parse(charts.blocked_per_day_svg([(date(2026, 11, 1), "a", 1)], text=TEXT, chart_id="c1"))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "c1-t c1-d"
    assert root.find(f"{SVG}title").text == "Blocked per day"
    assert root.find(f"{SVG}desc").text == "a summary"


def test_every_bar_segment_has_a_tooltip_with_day_rule_and_count():
    root = parse(charts.blocked_per_day_svg([(date(2026, 11, 4), "window.night", 9)], text=TEXT))
    (seg,) = bars(root)
    assert seg.find(f"{SVG}title").text == "2026-11-04 · window.night: 9"


def test_text_from_the_data_is_escaped_not_markup():
    evil = '<script>alert("x")</script>'
    svg = charts.agent_rule_heatmap_svg([(evil, "r&d", 1)], text=TEXT)
    assert "<script>" not in svg
    root = parse(svg)  # still well-formed XML
    assert any(t.text and evil in t.text for t in root.iter(f"{SVG}title"))


def test_empty_data_says_no_data_instead_of_drawing_nothing():
    for svg in (charts.blocked_per_day_svg([], text=TEXT), charts.agent_rule_heatmap_svg([], text=TEXT)):
        root = parse(svg)
        assert [t.text for t in root.iter(f"{SVG}text")] == ["No data"]


def test_long_ranges_are_drawn_per_week_and_keep_every_count():
    d0 = date(2026, 1, 5)  # a Monday
    days = charts.day_span(d0, d0 + timedelta(days=99))
    counts = [(d, "a", 1) for d in days]
    root = parse(charts.blocked_per_day_svg(counts, days=days, text=TEXT))
    segs = bars(root)
    assert len(segs) == 15  # 100 days → 15 ISO weeks
    assert sum(int(r.get("data-count")) for r in segs) == 100
    assert all(date.fromisoformat(r.get("data-day")).weekday() == 0 for r in segs)


def test_rules_beyond_the_palette_are_lumped_into_other_without_losing_counts():
    d0 = date(2026, 11, 1)
    counts = [(d0, f"rule.{i}", 10 + i) for i in range(11)]
    root = parse(charts.blocked_per_day_svg(counts, text=TEXT))
    by_rule = {r.get("data-rule"): int(r.get("data-count")) for r in bars(root)}
    assert len(by_rule) == len(charts.RULE_PALETTE) + 1
    assert by_rule["other"] == 10 + 11 + 12  # the three rarest
    assert sum(by_rule.values()) == sum(n for _, _, n in counts)


def test_a_rule_has_the_same_colour_in_both_charts():
    d0 = date(2026, 11, 1)
    colours = charts.rule_colours({"window.night": 5, "case.dispute": 2})
    day = parse(charts.blocked_per_day_svg([(d0, "window.night", 5), (d0, "case.dispute", 2)], colours=colours, text=TEXT))
    fills = {r.get("data-rule"): r.get("fill") for r in bars(day)}
    assert fills == {"window.night": colours["window.night"], "case.dispute": colours["case.dispute"]}
    heat = charts.agent_rule_heatmap_svg([("a1", "window.night", 5), ("a1", "case.dispute", 2)], colours=colours, text=TEXT)
    assert f'fill="{colours["window.night"]}"' in heat and f'fill="{colours["case.dispute"]}"' in heat


def test_heat_table_shows_who_hits_which_rule_with_row_totals():
    counts = [("agent-01", "window.night", 30), ("agent-01", "case.dispute", 4), ("agent-02", "window.night", 1)]
    root = parse(charts.agent_rule_heatmap_svg(counts, text=TEXT))
    cells = {(r.get("data-agent"), r.get("data-rule")): int(r.get("data-count")) for r in bars(root)}
    assert cells[("agent-01", "window.night")] == 30
    assert cells[("agent-02", "case.dispute")] == 0
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "34" in texts and "1" in texts  # row totals
    # the busiest agent is the first row
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert labels[:2] == ["agent-01", "agent-02"]


def test_heat_table_sums_agents_beyond_the_limit_into_other():
    counts = [(f"agent-{i:02d}", "r", i + 1) for i in range(15)]
    root = parse(charts.agent_rule_heatmap_svg(counts, text=TEXT, max_agents=12))
    cells = {r.get("data-agent"): int(r.get("data-count")) for r in bars(root)}
    assert cells["other"] == 1 + 2 + 3
    assert sum(cells.values()) == sum(range(1, 16))


def test_rule_colours_are_distinguishable_on_white():
    for colour in (*charts.RULE_PALETTE, charts.OTHER_COLOUR):
        assert contrast_ratio(colour, "#ffffff") >= 3.0, colour  # WCAG 1.4.11 non-text contrast


def test_numbers_in_heat_cells_are_readable_at_every_shade():
    for n in range(1, 101):
        fill = charts.heat_colour(n, 100)
        root = parse(charts.agent_rule_heatmap_svg([("a", "r", n), ("b", "r", 100)], text=TEXT))
        for t in root.iter(f"{SVG}text"):
            if t.text == str(n) and t.get("text-anchor") == "middle" and t.get("font-weight") is None:
                assert contrast_ratio(t.get("fill"), fill) >= 4.5


@given(st.integers(min_value=0, max_value=10**7))
def test_axis_maximum_covers_the_peak_with_at_most_five_round_steps(value):
    top, step = charts.nice_max(value)
    assert top >= value
    assert top % step == 0
    assert top // step <= 5
    assert str(step).rstrip("0") in ("1", "2", "5")
