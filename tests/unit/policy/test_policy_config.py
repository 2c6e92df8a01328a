"""The [policy] table: defaults, presets, per-creditor overrides, validation, versions."""

from __future__ import annotations

import tomllib
from datetime import date, datetime, timedelta

import pytest
from policy_factories import (
    FAMILY,
    NY,
    US_RELATIVE,
    attempts_at,
    collector,
    decide,
    event,
    make_case,
    make_request,
    sh,
)

from policy import PRESETS, ContactSnapshot, PolicyConfigError, load_policy

ISSUE_EXAMPLE = """
[policy]
timezone = "Asia/Shanghai"
default_region = "CN"

[policy.window]
start = "08:00"
end = "21:00"

[policy.appointment]
tolerance = "15m"
max_attempts = 2

[[policy.caps]]
id = "cap.number_hourly"
scope = "number"
relations = ["self", "guarantor", "family", "work", "third_party"]
count = "attempts"
limit = 2
window = "1h"

[[policy.caps]]
id = "cap.number_daily"
scope = "number"
relations = ["self", "guarantor", "family", "work", "third_party"]
count = "attempts"
limit = 4
window = "calendar_day"

[[policy.caps]]
id = "cap.third_party_hourly"
scope = "number"
relations = ["family", "work", "third_party"]
count = "attempts"
limit = 2
window = "1h"

[[policy.caps]]
id = "cap.third_party_daily"
scope = "number"
relations = ["family", "work", "third_party"]
count = "attempts"
limit = 3
window = "calendar_day"

[[policy.caps]]
id = "cap.case_daily"
scope = "case"
relations = ["self", "guarantor", "family", "work", "third_party"]
count = "attempts"
limit = 10
window = "calendar_day"

[policy.creditors.bank-b]
window = { end = "20:30" }
blackout_dates = ["2026-11-26"]
cn_holidays = true
preset = "cn-cba-2026"
caps = [{ id = "cap.number_daily", limit = 3 }]
"""


def test_an_empty_table_gives_the_five_default_caps_and_the_default_window() -> None:
    pol = load_policy({}).default
    assert [c.id for c in pol.caps] == [
        "cap.number_hourly",
        "cap.number_daily",
        "cap.third_party_hourly",
        "cap.third_party_daily",
        "cap.case_daily",
    ]
    assert (pol.window.start, pol.window.end) == ("08:00", "21:00")
    assert pol.timezone == "Asia/Shanghai" and pol.default_region == "CN"
    assert pol.appointment.tolerance == timedelta(minutes=15) and pol.appointment.max_attempts == 2
    assert pol.lookback == timedelta(days=2)


def test_the_issue_example_loads_and_spelling_out_the_defaults_changes_nothing() -> None:
    book = load_policy(tomllib.loads(ISSUE_EXAMPLE)["policy"])
    assert book.default.version == load_policy({}).default.version
    b = book.for_creditor("bank-b")
    assert b.preset == "cn-cba-2026"
    assert (b.window.start, b.window.end) == ("08:00", "20:30")
    assert b.blackout_dates == frozenset({date(2026, 11, 26)}) and b.cn_holidays
    # The preset added its cap after the agency's; the creditor's patch lowered one.
    assert [(c.id, c.limit) for c in b.caps] == [
        ("cap.number_hourly", 2),
        ("cap.number_daily", 3),
        ("cap.third_party_hourly", 2),
        ("cap.third_party_daily", 3),
        ("cap.case_daily", 10),
        ("cap.cba_unanswered_daily", 6),
    ]


def test_an_unknown_creditor_gets_the_defaults() -> None:
    book = load_policy(tomllib.loads(ISSUE_EXAMPLE)["policy"])
    assert book.for_creditor("bank-zzz") is book.default


def test_a_creditor_cap_override_by_id_changes_only_that_field_and_a_new_id_adds_a_cap() -> None:
    book = load_policy(
        {
            "creditors": {
                "bank-c": {
                    "caps": [
                        {"id": "cap.number_daily", "limit": 3},
                        {"id": "cap.weekly", "scope": "case", "limit": 20, "window": "7d"},
                        {"id": "cap.third_party_hourly", "enabled": False},
                    ]
                }
            }
        }
    )
    caps = {c.id: c for c in book.for_creditor("bank-c").caps}
    assert caps["cap.number_daily"].limit == 3 and caps["cap.number_daily"].window == "calendar_day"
    assert caps["cap.weekly"].relations == frozenset({"self", "guarantor", "family", "work", "third_party"})
    assert caps["cap.weekly"].count == "attempts"
    assert "cap.third_party_hourly" not in caps
    assert book.for_creditor("bank-c").lookback == timedelta(days=7)
    assert {c.id for c in book.default.caps} >= {"cap.third_party_hourly"}


def test_the_override_takes_effect_in_decisions() -> None:
    pol = load_policy({"creditors": {"bank-a": {"caps": [{"id": "cap.number_daily", "limit": 3}]}}}).for_creditor("bank-a")
    history = attempts_at(sh(2026, 11, 24, 8), sh(2026, 11, 24, 10), sh(2026, 11, 24, 12))
    assert decide(history=history, policy=pol, now=sh(2026, 11, 24, 14)).rule_id == "cap.number_daily"
    assert decide(history=history, now=sh(2026, 11, 24, 14)).allowed


def test_top_level_blackout_dates_add_to_the_creditors_own() -> None:
    book = load_policy({"blackout_dates": ["2026-12-24"], "creditors": {"bank-d": {"blackout_dates": ["2026-12-25"]}}})
    assert book.for_creditor("bank-d").blackout_dates == {date(2026, 12, 24), date(2026, 12, 25)}


@pytest.mark.parametrize(
    ("table", "path", "reason"),
    [
        ({"windw": {}}, "policy.windw", "unknown key"),
        ({"window": {"start": "8am"}}, "policy.window.start", "bad time"),
        ({"window": {"end": "25:00"}}, "policy.window.end", "hours 00-23"),
        ({"window": {"start": "21:00", "end": "08:00"}}, "policy.window", "must be before end"),
        ({"window": {"begin": "08:00"}}, "policy.window.begin", "unknown key"),
        ({"timezone": "Asia/Beijing"}, "policy.timezone", "unknown IANA time zone"),
        ({"default_region": "XX"}, "policy.default_region", "unknown region"),
        ({"appointment": {"tolerance": "15 minutes"}}, "policy.appointment.tolerance", "bad duration"),
        ({"appointment": {"max_attempts": -1}}, "policy.appointment.max_attempts", "must be 0 or more"),
        ({"caps": [{"id": "cap.x", "scope": "number", "limit": -1, "window": "1h"}]}, "policy.caps[0].limit", "must be 0 or more"),
        ({"caps": [{"id": "cap.x", "scope": "number", "limit": True, "window": "1h"}]}, "policy.caps[0].limit", "whole number"),
        ({"caps": [{"id": "cap.x", "scope": "number", "limit": 2, "window": "1w"}]}, "policy.caps[0].window", "bad duration"),
        ({"caps": [{"id": "cap.x", "scope": "number", "limit": 2, "window": "0h"}]}, "policy.caps[0].window", "longer than zero"),
        ({"caps": [{"id": "cap.x", "scope": "number", "limit": 2}]}, "policy.caps[0].window", "missing"),
        ({"caps": [{"id": "cap.x", "scope": "street", "limit": 2, "window": "1h"}]}, "policy.caps[0].scope", "expected one of"),
        ({"caps": [{"id": "cap.x", "scope": "case", "count": "rings", "limit": 2, "window": "1h"}]}, "policy.caps[0].count", "expected one of"),
        ({"caps": [{"id": "cap.x", "scope": "case", "relations": ["self", "cousin"], "limit": 2, "window": "1h"}]}, "policy.caps[0].relations[1]", "unknown relation"),
        ({"caps": [{"id": "cap.x", "scope": "case", "limit": 2, "window": "1h", "colour": "red"}]}, "policy.caps[0].colour", "unknown key"),
        ({"caps": [{"id": "Cap X", "scope": "case", "limit": 2, "window": "1h"}]}, "policy.caps[0].id", "cap id"),
        ({"caps": [{"id": "cap.number_hourly"}, {"id": "cap.number_hourly"}]}, "policy.caps[1].id", "duplicate"),
        ({"creditors": {"bank-b": {"caps": [{"id": "cap.number_daily", "limit": 1}, {"id": "cap.number_daily", "limit": 2}]}}},
         "policy.creditors.bank-b.caps[1].id", "duplicate"),
        ({"preset": "eu-gdpr"}, "policy.preset", "unknown preset"),
        ({"creditors": {"bank-b": {"preset": "cn-cba-2025"}}}, "policy.creditors.bank-b.preset", "unknown preset"),
        ({"creditors": {"bank-b": {"caps": [{"id": "cap.number_daily", "limit": -3}]}}}, "policy.creditors.bank-b.caps[0].limit", "must be 0 or more"),
        ({"creditors": {"bank-b": {"window": {"end": "20:61"}}}}, "policy.creditors.bank-b.window.end", "bad time"),
        ({"creditors": {"bank-b": {"blackout_dates": ["2026-02-30"]}}}, "policy.creditors.bank-b.blackout_dates[0]", "bad date"),
        ({"creditors": {"bank-b": {"cn_holidays": "yes"}}}, "policy.creditors.bank-b.cn_holidays", "true or false"),
        ({"creditors": {"bank-b": {"creditors": {}}}}, "policy.creditors.bank-b.creditors", "unknown key"),
        ({"creditors": {"bank-b": {"caps": [{"id": "cap.brand_new", "limit": 1}]}}}, "policy.creditors.bank-b.caps[0].scope", "missing"),
        ({"creditors": ["bank-b"]}, "policy.creditors", "expected a table"),
        ({"caps": [{"id": "cap.x", "scope": "number", "limit": 2, "window": "99999999999999h"}]},
         "policy.caps[0].window", "longer than 400 days"),
        ({"appointment": {"tolerance": "9999999999d"}}, "policy.appointment.tolerance", "longer than 400 days"),
        # Limits size the history read for every dial of every creditor: one absurd limit
        # overflowed the store's row limit and failed them all, at the first dial.
        ({"creditors": {"bank-b": {"caps": [{"id": "cap.number_daily", "limit": 10**30}]}}},
         "policy.creditors.bank-b.caps[0].limit", "at most 100000"),
        ({"appointment": {"max_attempts": 2**63}}, "policy.appointment.max_attempts", "at most 100000"),
        ({"creditors": {"bank-b": {"appointment": {"tolerance": "2h1s"}}}},
         "policy.creditors.bank-b.appointment.tolerance", "at most 2h"),
    ],
)
def test_bad_configuration_is_refused_with_the_key_path_and_the_reason(table, path, reason) -> None:
    with pytest.raises(PolicyConfigError) as info:
        load_policy(table)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(info.value).startswith(path + ": ")


def test_toml_local_times_and_dates_are_accepted_like_strings() -> None:
    table = tomllib.loads("[policy]\nblackout_dates = [2026-11-26]\n[policy.window]\nstart = 09:00:00\nend = 18:00:00\n")
    pol = load_policy(table["policy"]).default
    assert (pol.window.start, pol.window.end) == ("09:00", "18:00")
    assert pol.blackout_dates == {date(2026, 11, 26)}


def test_the_version_is_a_sha256_of_the_normalised_effective_policy() -> None:
    a = load_policy({"appointment": {"tolerance": "15m"}}).default
    b = load_policy({"appointment": {"tolerance": "900s"}}).default
    c = load_policy({"appointment": {"tolerance": "20m"}}).default
    assert a.version == b.version == load_policy({}).default.version
    assert a.version != c.version
    assert len(a.version) == 64 and int(a.version, 16) >= 0
    # A creditor with no effective change has the default's version.
    assert load_policy({"creditors": {"bank-q": {"cn_holidays": False}}}).for_creditor("bank-q").version == a.version


def test_the_book_version_changes_when_any_creditor_changes() -> None:
    one = load_policy({"creditors": {"bank-a": {"window": {"end": "20:30"}}}})
    two = load_policy({"creditors": {"bank-a": {"window": {"end": "20:00"}}}})
    assert one.version != two.version
    assert one.default.version == two.default.version
    assert load_policy({"creditors": {"bank-a": {"window": {"end": "20:30"}}}}).version == one.version


def test_the_lookback_covers_the_longest_window_and_at_least_two_days() -> None:
    book = load_policy({"creditors": {"us": {"preset": "us-reg-f"}}})
    # 7 calendar days reach back to the midnight 6 days before today: 8 days covers any zone.
    assert book.for_creditor("us").lookback == timedelta(days=8)
    rolling = load_policy({"creditors": {"x": {"caps": [{"id": "cap.w", "scope": "case", "limit": 9, "window": "9d"}]}}})
    assert rolling.for_creditor("x").lookback == timedelta(days=9)
    assert book.default.lookback == timedelta(days=2)


# ---------------------------------------------------------------- presets


def test_us_reg_f_allows_seven_attempts_per_case_in_seven_days_and_blocks_the_eighth() -> None:
    pol = load_policy({"creditors": {"bank-a": {"preset": "us-reg-f"}}}).for_creditor("bank-a")
    assert {"cap.regf_case_7d", "cap.regf_quiet_after_conversation"} <= {c.id for c in pol.caps}
    history = attempts_at(*(sh(2026, 11, 17 + d, 10) for d in range(7)))  # 17th..23rd, one a day
    decision = decide(history=history, policy=pol, now=sh(2026, 11, 23, 16, 0))
    assert decision.rule_id == "cap.regf_case_7d"
    # Seven consecutive calendar days, 17th to 23rd: free from the 24th's first lawful minute.
    assert decision.next_allowed_at == sh(2026, 11, 24, 8, 0)
    assert decide(history=history[1:], policy=pol, now=sh(2026, 11, 23, 16, 0)).allowed


def test_us_reg_f_keeps_seven_days_of_quiet_after_a_conversation_with_the_debtor() -> None:
    pol = load_policy({"preset": "us-reg-f"}).default
    history = [event(sh(2026, 11, 20, 9, 30)), event(sh(2026, 11, 20, 9, 30), kind="connected")]
    decision = decide(history=history, policy=pol, now=sh(2026, 11, 26, 10))
    assert decision.rule_id == "cap.regf_quiet_after_conversation"
    # "The date of the telephone conversation is the first day": 20th..26th are quiet.
    assert decision.next_allowed_at == sh(2026, 11, 27, 8, 0)
    assert decide(history=history, policy=pol, now=sh(2026, 11, 27, 8, 0)).allowed
    # A conversation with a relative does not quiet calls to the debtor.
    relative = [event(sh(2026, 11, 20, 9, 30), FAMILY), event(sh(2026, 11, 20, 9, 30), FAMILY, kind="connected")]
    assert decide(history=relative, policy=pol, now=sh(2026, 11, 26, 10)).allowed


def test_cn_cba_2026_cannot_widen_the_agencys_window_past_2100() -> None:
    pol = load_policy({"creditors": {"bank-a": {"preset": "cn-cba-2026"}}}).for_creditor("bank-a")
    assert decide(policy=pol, now=sh(2026, 11, 24, 20, 59, 59)).allowed
    assert decide(policy=pol, now=sh(2026, 11, 24, 21, 0)).rule_id == "window.outside_hours"
    assert decide(policy=pol, now=sh(2026, 11, 24, 7, 59, 59)).rule_id == "window.outside_hours"


def test_a_preset_window_narrows_the_agency_window_where_it_is_stricter() -> None:
    wide = load_policy({"window": {"start": "07:00", "end": "23:00"}, "creditors": {"bank-a": {"preset": "cn-cba-2026"}}})
    pol = wide.for_creditor("bank-a")
    assert (pol.window.start, pol.window.end) == ("08:00", "22:00")


def test_a_preset_never_drops_an_agency_cap() -> None:
    pol = load_policy({"creditors": {"bank-a": {"preset": "cn-cba-2026"}}}).for_creditor("bank-a")
    # Six calls in 50 minutes to one number: the agency's hourly cap stops the third.
    history = attempts_at(sh(2026, 11, 24, 9, 0), sh(2026, 11, 24, 9, 10))
    assert decide(history=history, policy=pol, now=sh(2026, 11, 24, 9, 20)).rule_id == "cap.number_hourly"
    assert pol.dropped_caps == ()


def test_a_creditor_drops_an_agency_cap_only_by_naming_it_and_the_policy_records_it() -> None:
    book = load_policy({"creditors": {"bank-a": {"preset": "cn-cba-2026", "drop_caps": ["cap.number_hourly"]}}})
    pol = book.for_creditor("bank-a")
    assert "cap.number_hourly" not in {c.id for c in pol.caps}
    assert pol.dropped_caps == ("cap.number_hourly",)
    with pytest.raises(PolicyConfigError) as err:
        load_policy({"creditors": {"bank-a": {"drop_caps": ["cap.nope"]}}})
    assert err.value.path == "policy.creditors.bank-a.drop_caps[0]"


def test_cn_cba_2026_counts_six_unanswered_attempts_per_number_per_day() -> None:
    pol = load_policy(
        {"creditors": {"bank-a": {"preset": "cn-cba-2026", "drop_caps": ["cap.number_daily"]}}}
    ).for_creditor("bank-a")
    six = attempts_at(*(sh(2026, 11, 24, 8 + i) for i in range(6)))
    decision = decide(history=six, policy=pol, now=sh(2026, 11, 24, 15))
    assert decision.rule_id == "cap.cba_unanswered_daily"
    assert decision.next_allowed_at == sh(2026, 11, 25, 8, 0)
    # One of the six was answered: five unanswered, so a seventh attempt is allowed.
    answered = six + [event(sh(2026, 11, 24, 9), kind="connected")]
    allowed = decide(history=answered, policy=pol, now=sh(2026, 11, 24, 15))
    assert allowed.allowed
    assert allowed.inputs_used["counters"]["cap.cba_unanswered_daily"]["count"] == 5
    # Per contact method: another number of the same case has its own six.
    assert decide(make_request(number=FAMILY), history=six, policy=pol, now=sh(2026, 11, 24, 15)).allowed


def test_a_preset_selected_at_the_top_applies_to_every_creditor_and_a_creditor_may_patch_it() -> None:
    book = load_policy({"preset": "cn-cba-2026", "creditors": {"bank-e": {"window": {"end": "21:00"}}}})
    assert book.default.preset == "cn-cba-2026" and book.default.window.end == "21:00"
    assert book.for_creditor("bank-e").window.end == "21:00"
    assert [c.id for c in book.for_creditor("bank-e").caps][-1] == "cap.cba_unanswered_daily"
    assert len(book.for_creditor("bank-e").caps) == 6


def test_every_preset_is_documented_in_both_languages() -> None:
    for name, preset in PRESETS.items():
        assert preset["description"] and preset["description_zh"], name
        load_policy({"preset": name})


def test_a_creditor_specific_policy_judges_that_creditors_cases() -> None:
    book = load_policy({"creditors": {"bank-b": {"window": {"end": "20:30"}}}})
    case = make_case("C-bb", creditor="bank-b")
    request = make_request(case=case, agent=collector("a1", frozenset({"bank-b"})))
    pol = book.for_creditor(request.case.creditor)
    assert decide(request, policy=pol, now=sh(2026, 11, 24, 20, 45)).rule_id == "window.outside_hours"
    assert decide(request, policy=book.default, now=sh(2026, 11, 24, 20, 45)).allowed


def test_the_documented_defaults_block_is_exactly_the_built_in_policy() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "policy" / "DEFAULTS.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block is not None
    documented = load_policy(tomllib.loads(block.group(1))["policy"])
    assert documented.default.version == load_policy({}).default.version


def test_a_creditor_on_a_preset_can_re_add_a_built_in_cap_by_id_alone() -> None:
    pol = load_policy({"creditors": {"bank-f": {"preset": "us-reg-f", "caps": [{"id": "cap.case_daily"}]}}}).for_creditor("bank-f")
    caps = {c.id: c for c in pol.caps}
    assert {"cap.regf_case_7d", "cap.regf_quiet_after_conversation", "cap.case_daily"} <= set(caps)
    assert caps["cap.case_daily"].limit == 10 and caps["cap.case_daily"].window == "calendar_day"


def test_a_top_level_cap_list_replaces_the_defaults_and_may_name_built_ins_by_id() -> None:
    pol = load_policy({"caps": [{"id": "cap.number_daily", "limit": 5}, {"id": "cap.case_daily"}]}).default
    assert [(c.id, c.limit) for c in pol.caps] == [("cap.number_daily", 5), ("cap.case_daily", 10)]
    history = attempts_at(sh(2026, 11, 24, 9, 0), sh(2026, 11, 24, 9, 10), sh(2026, 11, 24, 9, 20))
    assert decide(history=history, policy=pol, now=sh(2026, 11, 24, 9, 30)).allowed  # no hourly cap any more


def test_a_top_level_preset_adds_to_a_top_level_cap_list_whatever_their_order_in_the_file() -> None:
    pol = load_policy({"preset": "us-reg-f", "caps": [{"id": "cap.case_daily", "limit": 8}]}).default
    assert [(c.id, c.limit) for c in pol.caps] == [
        ("cap.case_daily", 8), ("cap.regf_case_7d", 7), ("cap.regf_quiet_after_conversation", 1),
    ]


def test_the_agencys_own_version_of_a_preset_cap_is_kept() -> None:
    mine = {"id": "cap.cba_unanswered_daily", "scope": "number", "count": "unanswered", "limit": 4, "window": "calendar_day"}
    book = load_policy({"caps": [mine], "creditors": {"bank-a": {"preset": "cn-cba-2026"}}})
    assert [(c.id, c.limit) for c in book.for_creditor("bank-a").caps] == [("cap.cba_unanswered_daily", 4)]


@pytest.mark.parametrize("creditor", ["Bank-B", "bank-b ", "bank b", "-bank-b", "银行乙"])
def test_a_creditor_id_no_case_can_carry_is_refused_rather_than_silently_never_applied(creditor) -> None:
    # Case creditors are lower-case ids (imports refuse others): a section under any
    # other spelling would leave bank-b's cases on the defaults' 21:00 end, unnoticed.
    with pytest.raises(PolicyConfigError) as info:
        load_policy({"creditors": {creditor: {"window": {"end": "20:30"}}}})
    assert info.value.path.startswith("policy.creditors.")
    assert "lower-case" in info.value.reason


def test_a_creditor_id_as_cases_carry_it_is_accepted() -> None:
    book = load_policy({"creditors": {"bank-b": {"window": {"end": "20:30"}}, "cmb_2.cc": {}}})
    assert book.for_creditor("bank-b").window.end == "20:30"


def test_an_appointment_tolerance_up_to_two_hours_is_accepted() -> None:
    assert load_policy({"appointment": {"tolerance": "2h"}}).default.appointment.tolerance == timedelta(hours=2)


def test_a_top_level_cap_list_that_leaves_out_agency_caps_records_them_as_dropped() -> None:
    # Meant as "one more cap", it replaces the list: the hourly and daily number caps go.
    pol = load_policy({"caps": [
        {"id": "cap.case_weekly", "scope": "case", "limit": 30, "window": "7 calendar_days"},
        {"id": "cap.number_daily", "enabled": False},
    ]}).default
    assert [c.id for c in pol.caps] == ["cap.case_weekly"]
    assert pol.dropped_caps == (
        "cap.number_hourly", "cap.number_daily", "cap.third_party_hourly", "cap.third_party_daily", "cap.case_daily",
    )


def test_a_top_level_cap_list_that_names_every_agency_cap_drops_none() -> None:
    table = {"caps": [{"id": c} for c in (
        "cap.number_hourly", "cap.number_daily", "cap.third_party_hourly", "cap.third_party_daily", "cap.case_daily",
    )]}
    assert load_policy(table).default.dropped_caps == ()


def test_a_window_key_beside_a_preset_cannot_widen_the_window_past_the_presets() -> None:
    # Keys are applied after the preset of their own table: the window key replaced the
    # narrowed window, so Regulation F's 8 a.m. start became 7 a.m.
    pol = load_policy({"creditors": {"us": {"preset": "us-reg-f", "window": {"start": "07:00"}}}}).for_creditor("us")
    assert (pol.window.start, pol.window.end) == ("08:00", "21:00")
    case = make_case("C-us", contacts=(ContactSnapshot(US_RELATIVE, "self"),))
    request = make_request(number=US_RELATIVE, case=case)
    assert decide(request, policy=pol, now=datetime(2026, 11, 24, 7, 30, tzinfo=NY)).rule_id == "window.outside_hours"


def test_a_creditor_window_cannot_widen_past_a_preset_chosen_at_the_top() -> None:
    book = load_policy({"preset": "cn-cba-2026", "window": {"end": "23:00"}, "creditors": {"bank-e": {"window": {"end": "23:30"}}}})
    assert book.default.window.end == "22:00"
    assert book.for_creditor("bank-e").window.end == "22:00"


def test_a_window_that_misses_the_presets_window_entirely_is_refused() -> None:
    with pytest.raises(PolicyConfigError) as info:
        load_policy({"creditors": {"us": {"preset": "us-reg-f", "window": {"start": "21:00", "end": "23:00"}}}})
    assert info.value.path == "policy.creditors.us.window"
    assert "us-reg-f" in info.value.reason
