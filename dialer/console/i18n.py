"""The console's message catalogs: zh-CN (default) and en, in `locales/<lang>.json`.

Both catalogs have exactly the same keys (a unit test holds them to it). Values may
hold `{name}` fields filled by `str.format`. The language comes from the `dg_lang`
cookie the language switch sets; without it the console speaks Chinese.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path

LANGS: tuple[str, ...] = ("zh-CN", "en")
DEFAULT_LANG = "zh-CN"
LANG_COOKIE = "dg_lang"
LANG_NAMES: Mapping[str, str] = {"zh-CN": "中文", "en": "English"}

_LOCALES = Path(__file__).with_name("locales")


class MissingMessage(KeyError):
    """A template asked for a key no catalog has."""


@lru_cache(maxsize=None)
def catalog(lang: str) -> Mapping[str, str]:
    if lang not in LANGS:
        raise ValueError(f"unknown console language {lang!r}; known: {', '.join(LANGS)}")
    with open(_LOCALES / f"{lang}.json", encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"locales/{lang}.json must be an object of strings")
    return data


def pick_lang(cookie_value: str | None) -> str:
    return cookie_value if cookie_value in LANGS else DEFAULT_LANG


def translator(lang: str, *, strict: bool = False) -> Callable[..., str]:
    """`t(key, **fields)` for one language. Unknown keys raise when `strict` (tests),
    else fall back to the other catalog and then to the key itself."""
    primary = catalog(lang)
    fallback = catalog(DEFAULT_LANG if lang != DEFAULT_LANG else "en")

    def t(key: str, **fields: object) -> str:
        text = primary.get(key)
        if text is None:
            if strict:
                raise MissingMessage(key)
            text = fallback.get(key, key)
        return text.format(**fields) if fields else text

    return t


def bilingual(lang: str, en: str, zh: str) -> str:
    """Pick the language's variant of a value that the domain supplies in both
    (decision reasons, check details)."""
    if lang == "en":
        return en or zh
    return zh or en


def value_label(lang: str, prefix: str, value: object) -> str:
    """The catalog's label for a domain value (`status.paused` → 暂停催收), or the value
    itself when the catalog has none (a value added by the service later still shows)."""
    if value is None:
        return ""
    return catalog(lang).get(f"{prefix}.{value}", str(value))
