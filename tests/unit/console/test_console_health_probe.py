"""The health strip's probe of optional components (SIP listener, MQTT bus)."""

from __future__ import annotations

from adapters.db.console_health import component_health


class Probe:
    def __init__(self, answer):  # type: ignore[no-untyped-def]
        self.answer = answer

    def health(self):  # type: ignore[no-untyped-def]
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class AsyncProbe(Probe):
    async def health(self):  # type: ignore[no-untyped-def, override]
        return self.answer


async def test_a_component_that_is_not_wired_is_shown_as_not_enabled():
    item = await component_health("sip", None)
    assert (item.status, item.detail) == ("off", "not enabled")


async def test_the_mqtt_bus_health_dict_says_ok_or_down_with_its_reason():
    up = await component_health("mqtt", Probe({"ok": True, "state": "connected"}))
    down = await component_health("mqtt", Probe({"ok": False, "state": "reconnecting", "last_error": "refused"}))
    assert (up.status, up.detail) == ("ok", "connected")
    assert (down.status, down.detail) == ("down", "refused")


async def test_tuples_bools_coroutines_and_failures_are_all_understood():
    assert (await component_health("sip", Probe(("degraded", "1 of 2 ports")))).status == "degraded"
    assert (await component_health("sip", AsyncProbe(False))).status == "down"
    failed = await component_health("sip", Probe(RuntimeError("boom")))
    assert (failed.status, failed.detail) == ("down", "RuntimeError")
