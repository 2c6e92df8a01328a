"""Catalogs: Chinese by default, English complete, every key a page uses exists."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from dialer.console import i18n

CONSOLE = Path(i18n.__file__).parent


def fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_both_catalogs_have_exactly_the_same_keys():
    assert set(i18n.catalog("zh-CN")) == set(i18n.catalog("en"))


def test_no_message_is_empty_and_placeholders_match_across_languages():
    zh, en = i18n.catalog("zh-CN"), i18n.catalog("en")
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert fields(zh[key]) == fields(en[key]), key


def test_chinese_catalog_is_chinese():
    zh = i18n.catalog("zh-CN")
    assert zh["sign_in.title"] == "登录"
    assert zh["recording.reason"] == "借阅原因"
    assert sum(bool(re.search(r"[\u4e00-\u9fff]", v)) for v in zh.values()) > 0.8 * len(zh)


def test_every_key_the_templates_and_router_ask_for_exists():
    sources = [p.read_text(encoding="utf-8") for p in (CONSOLE / "templates").glob("*.html")]
    sources.append((CONSOLE / "router.py").read_text(encoding="utf-8"))
    keys = set()
    for src in sources:
        keys |= set(re.findall(r"""\bt\(\s*["']([a-z_][a-z0-9_.]*)["']""", src))
    assert len(keys) > 100
    strict = i18n.translator("en", strict=True)
    for key in sorted(keys):
        strict(key, **{f: "x" for f in fields(i18n.catalog("en")[key])})


def test_values_the_templates_label_have_labels_in_both_languages():
    from policy.model import CASE_FLAGS, CASE_STATUSES, RELATIONS, ROLES

    for prefix, values in (("flag", CASE_FLAGS), ("status", CASE_STATUSES), ("relation", RELATIONS), ("role", ROLES)):
        for v in values:
            for lang in i18n.LANGS:
                assert f"{prefix}.{v}" in i18n.catalog(lang), (lang, prefix, v)


def test_a_value_without_a_label_shows_itself():
    assert i18n.value_label("zh-CN", "status", "paused") == "暂停催收"
    assert i18n.value_label("en", "status", "frozen_by_court") == "frozen_by_court"


def test_default_language_is_chinese_and_unknown_cookies_fall_back_to_it():
    assert i18n.DEFAULT_LANG == "zh-CN"
    assert i18n.pick_lang(None) == "zh-CN"
    assert i18n.pick_lang("fr") == "zh-CN"
    assert i18n.pick_lang("en") == "en"


def test_strict_translator_refuses_unknown_keys():
    with pytest.raises(i18n.MissingMessage):
        i18n.translator("zh-CN", strict=True)("no.such.key")


def test_bilingual_values_pick_the_viewers_language_and_fall_back_to_the_other():
    assert i18n.bilingual("en", "night", "夜间") == "night"
    assert i18n.bilingual("zh-CN", "night", "夜间") == "夜间"
    assert i18n.bilingual("zh-CN", "night", "") == "night"


def test_the_services_follow_up_statuses_dispositions_and_results_have_labels():
    from dialer.model import DISPOSITIONS, FOLLOW_UP_STATUSES, RESULTS

    for prefix, values in (("follow_up", FOLLOW_UP_STATUSES), ("disposition", DISPOSITIONS), ("result", RESULTS)):
        for v in values:
            for lang in i18n.LANGS:
                assert f"{prefix}.{v}" in i18n.catalog(lang), (lang, prefix, v)
    assert i18n.value_label("zh-CN", "follow_up", "promise") == "承诺还款"
