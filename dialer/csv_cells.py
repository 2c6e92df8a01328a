"""CSV cells safe to open in a spreadsheet, for every CSV the service writes."""

from __future__ import annotations

import re

# A cell a spreadsheet would run as a formula (`=`, `@`, a tab or carriage return first,
# or `+`/`-` followed by anything but a number or a masked number).
FORMULA = re.compile(r"^[=@\t\r]|^[+-](?![\d*\s]+$)")


def safe_cell(value: object) -> str:
    """The cell's text, with a leading apostrophe when it would run as a formula. Masked
    phone numbers (`+86138****0001`) and signed numbers stay as they are."""
    s = "" if value is None else str(value)
    return "'" + s if FORMULA.match(s) else s
