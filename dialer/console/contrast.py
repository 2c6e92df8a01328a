"""WCAG 2.x colour contrast, used to pick chart text colours and to test the palette."""

from __future__ import annotations


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    h = hex_colour.strip().lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    if len(h) != 6:
        raise ValueError(f"not a #rrggbb colour: {hex_colour!r}")
    return tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def relative_luminance(hex_colour: str) -> float:
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in _rgb(hex_colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    la, lb = relative_luminance(a), relative_luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def readable_on(background: str, dark: str = "#1f2933", light: str = "#ffffff") -> str:
    """The one of `dark` / `light` text colours with the higher contrast on `background`."""
    return dark if contrast_ratio(dark, background) >= contrast_ratio(light, background) else light


def mix(a: str, b: str, t: float) -> str:
    """Linear blend from `a` (t=0) to `b` (t=1) in sRGB, as #rrggbb."""
    t = min(1.0, max(0.0, t))
    ca, cb = _rgb(a), _rgb(b)
    return "#" + "".join(f"{round((x + (y - x) * t) * 255):02x}" for x, y in zip(ca, cb))
