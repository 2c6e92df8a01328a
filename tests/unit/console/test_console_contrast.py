"""WCAG AA: every text colour in the console's stylesheet on every background it is used on."""

from __future__ import annotations

import re
from pathlib import Path

import dialer.console
from dialer.console.contrast import contrast_ratio, readable_on

CSS = (Path(dialer.console.__file__).parent / "static" / "console.css").read_text(encoding="utf-8")


def palette() -> dict[str, str]:
    root = re.search(r":root\s*{([^}]*)}", CSS).group(1)
    return dict(re.findall(r"--([a-z0-9-]+):\s*(#[0-9a-fA-F]{3,6})", root))


def rules() -> list[tuple[str, dict[str, str]]]:
    out = []
    body = re.sub(r"/\*.*?\*/", "", CSS, flags=re.S)
    for sel, decls in re.findall(r"([^{}]+){([^{}]*)}", body):
        props = dict((k.strip(), v.strip()) for k, v in re.findall(r"([a-z-]+)\s*:\s*([^;]+)", decls))
        out.append((sel.strip(), props))
    return out


def resolve(value: str, pal: dict[str, str]) -> str | None:
    m = re.search(r"var\(--([a-z0-9-]+)\)", value)
    if m:
        return pal[m.group(1)]
    m = re.match(r"#[0-9a-fA-F]{3,6}$", value)
    return value if m else None


def test_the_ratio_formula_matches_known_values():
    assert round(contrast_ratio("#000000", "#ffffff"), 1) == 21.0
    assert round(contrast_ratio("#777777", "#ffffff"), 2) == 4.48  # the classic just-fails grey
    assert readable_on("#0b3d91") == "#ffffff" and readable_on("#eef4fb") == "#1f2933"


def test_text_that_sets_its_own_background_passes_aa():
    pal = palette()
    checked = 0
    for sel, props in rules():
        if sel.startswith(":root"):
            continue
        fg = resolve(props.get("color", ""), pal)
        bg = resolve(props.get("background", props.get("background-color", "")), pal)
        if fg and bg:
            assert contrast_ratio(fg, bg) >= 4.5, (sel, fg, bg, contrast_ratio(fg, bg))
            checked += 1
    assert checked >= 10


def test_text_colours_pass_aa_on_every_surface_they_can_sit_on():
    pal = palette()
    light_surfaces = ["bg", "surface", "strip-bg", "row-alt", "code-bg"]
    text_vars = ["text", "muted", "link", "ok", "warn", "bad", "off", "alert-text"]
    for t in text_vars:
        for s in light_surfaces:
            assert contrast_ratio(pal[t], pal[s]) >= 4.5, (t, s, round(contrast_ratio(pal[t], pal[s]), 2))
    for t in ("top-text", "top-link"):
        assert contrast_ratio(pal[t], pal["top-bg"]) >= 4.5, t
    # coloured banners and badges
    for fg, bg in [
        ("alert-text", "alert-bg"), ("hold-text", "hold-bg"), ("okbanner-text", "okbanner-bg"),
        ("badge-text", "badge-bg"), ("flag-text", "flag-bg"), ("button-text", "button-bg"),
        ("danger-text", "danger-bg"), ("link", "hold-bg"), ("link", "alert-bg"),
    ]:
        assert contrast_ratio(pal[fg], pal[bg]) >= 4.5, (fg, bg)


def test_focus_ring_is_visible_against_the_page():
    pal = palette()
    assert contrast_ratio(pal["focus"], pal["bg"]) >= 3.0
    assert ":focus-visible" in CSS
