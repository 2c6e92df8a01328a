"""Creditor actions as API calls, lifting a stop, reopening, and the case history they
leave: who, role, when, which call or file row, old → new, why."""

from __future__ import annotations

from gate_api_support import CASES_A, Api


async def _dispute(api: Api) -> None:
    r = await api.dial("col-a", "C-1", "13800000001")
    aid = r.json()["attempt_id"]
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a",
                       {"disposition": "connected_self", "result": "dispute", "note": "否认欠款"})
    assert r.status_code == 201, r.text
    api.clock.advance(hours=3)


async def _history(api: Api, who: str = "admin", case_id: str = "C-1") -> list[dict]:
    r = await api.get(f"/v1/cases/{case_id}/history", who)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_lifting_a_dispute_with_a_reason_by_a_supervisor_allows_dials_and_is_on_the_history(api: Api) -> None:
    await _dispute(api)
    r = await api.post("/v1/cases/C-1/flags/dispute/lift", "sup-a", {"reason": "银行核实欠款属实 / bank confirmed the debt"})
    assert r.status_code == 200, r.text
    assert r.json()["flags"] == []
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201
    lifted = [e for e in await _history(api) if e["field"] == "agency_flags" and e["new"] == []]
    assert len(lifted) == 1
    e = lifted[0]
    assert (e["actor"], e["role"], e["source"]) == ("sup-a", "supervisor", "api")
    assert e["source_ref"] == "POST /v1/cases/C-1/flags/dispute/lift"
    assert e["old"] == ["dispute"] and e["reason"] == "银行核实欠款属实 / bank confirmed the debt"


async def test_lifting_a_flag_without_a_reason_is_422_naming_the_reason_and_changes_nothing(api: Api) -> None:
    await _dispute(api)
    before = await _history(api)
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        r = await api.post("/v1/cases/C-1/flags/dispute/lift", "sup-a", body)
        assert r.status_code == 422, r.text
        assert "reason" in r.text
    assert await _history(api) == before
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "case.dispute"


async def test_a_collector_may_not_lift_a_flag(api: Api) -> None:
    await _dispute(api)
    r = await api.post("/v1/cases/C-1/flags/dispute/lift", "col-a", {"reason": "客户说已经解决"})
    assert r.status_code == 403
    assert r.json()["details"]["allowed_roles"] == ["admin", "compliance", "supervisor"]


async def test_another_creditors_compliance_cannot_lift_the_flag_and_sees_404(api: Api) -> None:
    await _dispute(api)
    r = await api.post("/v1/cases/C-1/flags/dispute/lift", "comp-b", {"reason": "x"})
    assert r.status_code == 404


async def test_the_banks_own_flag_cannot_be_lifted_by_api_only_by_its_file(api: Api) -> None:
    r = await api.post("/v1/cases:import", "data-a", {"cases": [{**CASES_A[0], "flags": ["litigation"]}]})
    assert r.status_code == 200
    r = await api.post("/v1/cases/C-1/flags/litigation/lift", "comp-a", {"reason": "诉讼已撤"})
    assert r.status_code == 409, r.text
    assert r.json()["details"] == {"flag": "litigation", "set_by": "creditor"}


async def test_lifting_a_flag_the_case_does_not_have_is_409_and_an_unknown_flag_422(api: Api) -> None:
    assert (await api.post("/v1/cases/C-1/flags/dispute/lift", "sup-a", {"reason": "x"})).status_code == 409
    assert (await api.post("/v1/cases/C-1/flags/nonsense/lift", "sup-a", {"reason": "x"})).status_code == 422


async def test_a_pause_by_api_blocks_dials_clears_the_date_and_survives_a_stale_file(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/pause", "data-a", {"reason": "银行通知停催 / bank asked to pause"})
    assert r.status_code == 200, r.text
    assert r.json()["next_action"] == {"status": "paused", "status_zh": "暂停催收", "date": None}
    assert (await api.post("/v1/cases:import", "data-a", {"cases": [CASES_A[0]]})).status_code == 200
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.json()["decision"]["rule_id"] == "case.paused"
    kept = [e for e in await _history(api) if e["field"] == "status" and e["source"] == "import"]
    assert kept[-1]["old"] == kept[-1]["new"] == "paused" and "held by pause" in kept[-1]["reason"]


async def test_resume_sets_waiting_from_today_and_allows_dials(api: Api) -> None:
    await api.post("/v1/cases/C-1/pause", "data-a", {"reason": "停催"})
    r = await api.post("/v1/cases/C-1/resume", "sup-a", {"reason": "银行恢复催收"})
    assert r.status_code == 200, r.text
    assert r.json()["next_action"] == {"status": "waiting", "status_zh": "待跟进", "date": "2026-11-24"}
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201


async def test_resuming_a_case_that_is_not_paused_is_409_in_both_languages(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/resume", "sup-a", {"reason": "x"})
    assert r.status_code == 409
    assert "not paused" in r.json()["detail"] and "未暂停" in r.json()["detail"]


async def test_a_collector_may_not_pause_or_withdraw(api: Api) -> None:
    for action in ("pause", "withdraw", "resume", "reopen"):
        assert (await api.post(f"/v1/cases/C-1/{action}", "col-a", {"reason": "x"})).status_code == 403


async def test_withdrawal_closes_the_case_and_a_stale_file_does_not_reopen_it(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/withdraw", "data-a", {"reason": "银行撤案"})
    assert r.json()["status"] == "withdrawn" and r.json()["next_action"]["date"] is None
    await api.post("/v1/cases:import", "data-a", {"cases": [CASES_A[0]]})
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "case.closed"


async def test_extending_the_commission_lets_a_case_past_its_old_end_be_dialled(api: Api) -> None:
    api.clock.set(api.clock.now().replace(year=2027, month=2, day=2))
    assert (await api.dial("col-a", "C-1", "13800000001")).json()["decision"]["rule_id"] == "case.commission_expired"
    r = await api.post("/v1/cases/C-1/commission", "data-a", {"commission_end": "2027-04-30", "reason": "银行延期"})
    assert r.status_code == 200, r.text
    assert r.json()["commission_end"] == "2027-04-30"
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201
    e = [e for e in await _history(api) if e["field"] == "commission_end"][-1]
    assert (e["old"], e["new"], e["reason"]) == ("2027-01-31", "2027-04-30", "银行延期")


async def test_an_extension_that_does_not_move_the_end_later_is_422(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/commission", "data-a", {"commission_end": "2027-01-01", "reason": "x"})
    assert r.status_code == 422
    assert r.json()["details"]["errors"][0]["field"] == "commission_end"


async def test_reopening_a_repaid_case_by_api_needs_a_reason_and_is_on_the_history(api: Api) -> None:
    await api.post("/v1/repayments:import", "data-a", {"repayments": [
        {"creditor": "bank-a", "case_id": "C-1", "amount": "1000.00", "paid_on": "2026-11-23", "settled": True}]})
    assert (await api.post("/v1/cases/C-1/reopen", "sup-a", {"reason": ""})).status_code == 422
    r = await api.post("/v1/cases/C-1/reopen", "sup-a", {"reason": "还款退票 / payment bounced"})
    assert r.status_code == 200, r.text
    assert (await api.dial("col-a", "C-1", "13800000001")).status_code == 201
    status = [e for e in await _history(api) if e["field"] == "status"]
    assert [(e["old"], e["new"], e["source"]) for e in status] == [("active", "settled", "repayment"),
                                                                     ("settled", "active", "api")]
    assert status[1]["reason"] == "还款退票 / payment bounced"


async def test_the_history_names_the_import_and_row_that_created_the_case_and_masks_numbers(api: Api) -> None:
    items = await _history(api, "qa-a")
    assert items[0]["seq"] == 1 and items[0]["field"] == "case" and items[0]["source"] == "import"
    assert items[0]["actor"] == "data-a" and items[0]["role"] == "data" and items[0]["source_row"] == 1
    assert items[0]["source_ref"]  # the import id
    assert [c["number"] for c in items[0]["new"]["contacts"]] == ["138****0001", "139****0002"]
    assert "张三" not in str(items)  # the debtor's name stays off the append-only record


async def test_a_collector_reads_the_history_of_their_own_case_only(api: Api) -> None:
    assert (await api.get("/v1/cases/C-1/history", "col-a")).status_code == 200
    assert (await api.get("/v1/cases/C-2/history", "col-a")).status_code == 404
    assert (await api.get("/v1/cases/C-1/history", "comp-b")).status_code == 404


async def test_a_number_written_in_a_reason_is_masked_on_the_history(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/pause", "sup-a", {"reason": "客户新号码 13812345678，银行要求暂停"})
    assert r.status_code == 200, r.text
    (e,) = [e for e in await _history(api) if e["source"] == "api" and e["field"] == "status"]
    assert "13812345678" not in e["reason"] and "138****5678" in e["reason"]


async def test_an_extension_outlasts_a_file_that_predates_it_and_a_later_file_end_supersedes_it(api: Api) -> None:
    r = await api.post("/v1/cases/C-1/commission", "data-a", {"commission_end": "2027-04-30", "reason": "银行延期"})
    assert r.status_code == 200, r.text
    await api.post("/v1/cases:import", "data-a", {"cases": [CASES_A[0]]})  # still says 2027-01-31
    case = (await api.get("/v1/cases/C-1", "admin")).json()
    assert case["commission_end"] == "2027-04-30"
    kept = [e for e in await _history(api) if e["field"] == "commission_end" and e["source"] == "import"]
    assert [(e["old"], e["new"], e["reason"]) for e in kept] == [
        ("2027-04-30", "2027-04-30", "file says 2027-01-31; kept the extension to 2027-04-30")]
    await api.post("/v1/cases:import", "data-a", {"cases": [{**CASES_A[0], "commission_end": "2027-06-30"}]})
    assert (await api.get("/v1/cases/C-1", "admin")).json()["commission_end"] == "2027-06-30"


async def test_resume_does_not_lift_a_repayment_closure_or_a_withdrawal_that_a_file_pause_left_held(api: Api) -> None:
    await api.post("/v1/repayments:import", "data-a", {"repayments": [
        {"creditor": "bank-a", "case_id": "C-1", "amount": "1000.00", "paid_on": "2026-11-23", "settled": True}]})
    await api.post("/v1/cases/C-2/withdraw", "data-a", {"reason": "银行撤案"})
    # The bank's next file pauses both: the status is paused, the closure's hold stays.
    r = await api.post("/v1/cases:import", "data-a", {"cases": [{**c, "status": "paused"} for c in CASES_A]})
    assert r.status_code == 200, r.text
    for case_id, number, hold in (("C-1", "13800000001", "repayment"), ("C-2", "13700000003", "withdraw")):
        r = await api.post(f"/v1/cases/{case_id}/resume", "sup-a", {"reason": "银行恢复催收"})
        assert r.status_code == 409, r.text
        assert "reopen" in r.json()["detail"] and "重新打开" in r.json()["detail"]
        assert r.json()["details"]["status_hold"] == hold
        agent = "col-a" if case_id == "C-1" else "col-a2"
        assert (await api.dial(agent, case_id, number)).json()["decision"]["rule_id"] == "case.paused"
