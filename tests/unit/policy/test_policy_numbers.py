"""normalize_number, the number's zone, masking."""

from __future__ import annotations

import pytest

from policy import NumberFormatError, mask_number, normalize_number, number_zone


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("13800000001", "CN", "+8613800000001"),
        ("138-0000-0001", "CN", "+8613800000001"),
        (" +86 138 0000 0001 ", "CN", "+8613800000001"),
        ("008613800000001", "CN", "+8613800000001"),
        ("021 6123 4567", "CN", "+862161234567"),
        ("(212) 555-0100", "US", "+12125550100"),
        ("+12125550100", "CN", "+12125550100"),
        ("13800000001", "cn", "+8613800000001"),
    ],
)
def test_numbers_are_normalised_to_e164(raw: str, region: str, e164: str) -> None:
    assert normalize_number(raw, region=region) == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("abc", "not a phone number"),
        ("123", "too short"),
        ("1380000000100000", "too long"),
        ("+999123456", "unknown country calling code"),
        ("12345678901", "not a valid number in the numbering plan of CN"),
    ],
)
def test_an_unusable_number_is_refused_naming_what_is_wrong(raw: str, reason: str) -> None:
    with pytest.raises(NumberFormatError) as info:
        normalize_number(raw, region="CN")
    assert reason in str(info.value)
    assert info.value.reason == reason or reason in info.value.reason
    assert isinstance(info.value, ValueError)


def test_the_error_message_masks_the_number() -> None:
    with pytest.raises(NumberFormatError) as info:
        normalize_number("12345678901", region="CN")
    assert "12345678901" not in str(info.value)


def test_a_number_has_a_zone_only_when_phonenumbers_gives_exactly_one() -> None:
    assert number_zone("+12125550100") == "America/New_York"
    assert number_zone("+14155550100") == "America/Los_Angeles"
    assert number_zone("+8613800000001") == "Asia/Shanghai"
    assert number_zone("+79161234567") is None  # several Russian zones
    assert number_zone("not a number") is None


def test_numbers_are_masked_for_logs() -> None:
    assert mask_number("+8613800000001") == "138****0001"
    assert mask_number("13800000001") == "138****0001"
    assert mask_number("+12125550100") == "+121****0100"
    assert mask_number("1001") == "****"


def _fresh_zone(e164: str) -> str | None:
    from phonenumbers import parse
    from phonenumbers import timezone as pn_timezone

    zones = pn_timezone.time_zones_for_number(parse(e164, None))
    return zones[0] if len(zones) == 1 and zones[0] != pn_timezone.UNKNOWN_TIMEZONE else None


@pytest.mark.parametrize(("raw", "region"), [
    ("13800000001", "CN"), ("+8613800000001", "US"), ("021 6123 4567", "CN"), ("(212) 555-0123", "US"),
    ("+1 312 555 0123", "CN"), ("+1 800 555 0123", "CN"), ("020 7946 0018", "GB"), ("+61 2 9374 4000", "CN"),
])
def test_a_normalised_numbers_zone_is_the_one_a_fresh_parse_gives_and_it_normalises_to_itself_anywhere(
    raw: str, region: str
) -> None:
    import policy.numbers as numbers

    numbers._VALID.clear()  # noqa: SLF001 - start cold
    numbers._normalize.cache_clear()  # noqa: SLF001
    e164 = normalize_number(raw, region)
    assert e164 in numbers._VALID  # noqa: SLF001
    assert number_zone(e164) == _fresh_zone(e164)
    for other in ("CN", "US", "GB", "DE"):
        assert normalize_number(e164, other) == e164


def test_the_known_numbers_stay_bounded() -> None:
    import policy.numbers as numbers

    limit = numbers._VALID_MAX  # noqa: SLF001
    numbers._VALID_MAX = 50  # noqa: SLF001
    try:
        for i in range(120):
            normalize_number(f"1391{i:07d}", "CN")
            assert len(numbers._VALID) <= 50  # noqa: SLF001
    finally:
        numbers._VALID_MAX = limit  # noqa: SLF001


def test_the_plain_cn_mobile_shortcut_agrees_with_a_full_parse_on_every_prefix() -> None:
    import phonenumbers
    from phonenumbers import timezone as pn_timezone

    import policy.numbers as numbers

    checked = 0
    for prefix in range(1000, 2000):  # 1000..1999: every 4-digit start of an 11-digit number
        for tail in ("0000000", "5550123", "9999999"):
            nsn = f"{prefix}{tail}"
            parsed = phonenumbers.parse("+86" + nsn, None)
            truth = phonenumbers.is_valid_number(parsed) and phonenumbers.number_type(parsed) in (
                phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
            fast = numbers._cn_mobile("+86" + nsn, "US")  # noqa: SLF001
            assert (fast is not None) <= phonenumbers.is_valid_number(parsed), nsn  # never accepts an invalid one
            if fast is not None:
                checked += 1
                assert fast == "+86" + nsn == numbers._cn_mobile(nsn, "CN")  # noqa: SLF001
                zones = pn_timezone.time_zones_for_number(parsed)
                assert number_zone(fast) == (zones[0] if len(zones) == 1 else None)
            else:
                assert not truth or nsn[0] != "1", nsn  # every valid mobile takes the shortcut
    assert checked > 1000


@pytest.mark.parametrize("raw", ["+86 13800000001", "+8613800000001 ", "+86１3800000001", "+861380000000", "+86138000000012",
                                 "+8612000000001"])
def test_other_spellings_leave_the_shortcut_and_get_the_full_parse(raw: str) -> None:
    import policy.numbers as numbers

    assert numbers._cn_mobile(raw, "CN") is None  # noqa: SLF001
