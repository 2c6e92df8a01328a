"""User-facing text in both languages, as one value.

The API, the events and the decision records carry every user-facing text as two
fields: ``<name>`` in English and ``<name>_zh`` in Chinese (``reason`` /
``reason_zh``, ``detail`` / ``detail_zh``, ``message`` / ``message_zh``). Producers
build a `Text` and spread it with `fields`, so the two languages travel together and
the field names follow that one convention:

    ALERT = Text("dispute: calls stopped", "争议：已停止拨打")
    payload = {"attempt_id": attempt_id, **ALERT.fields("message")}

Where one string must carry both (an exception's message, which becomes a problem
document's ``detail``; a console or CLI line), `line` writes Chinese first:
``"案件已暂停 / case is paused"``.

A `Text` is a tuple ``(en, zh)``, so code that unpacks the pair keeps working.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Text"]


class Text(NamedTuple):
    """One user-facing text: `en` for the plain field, `zh` for its ``_zh`` companion."""

    en: str
    zh: str

    def fields(self, name: str) -> dict[str, str]:
        """``{name: en, name + "_zh": zh}``, in that order (payloads keep their bytes)."""
        return {name: self.en, name + "_zh": self.zh}

    def line(self) -> str:
        """Both languages in one string, Chinese first: ``"中文 / English"``."""
        return f"{self.zh} / {self.en}"
