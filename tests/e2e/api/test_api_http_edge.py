"""The HTTP edge every request crosses: request ids, the bearer header, problem instances,
and the log line a dial leaves behind (request id, caller, masked number)."""

from __future__ import annotations

import json
import re

import structlog

from dialer.logs import configure_logging
from gate_api_support import Api


async def test_an_incoming_request_id_is_echoed_on_the_answer(api: Api) -> None:
    r = await api.client.get("/healthz", headers={**api.auth("qa-a"), "X-Request-Id": "probe-7f3a"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "probe-7f3a"


async def test_a_request_without_an_id_gets_a_fresh_32_hex_digit_id_each_time(api: Api) -> None:
    ids = [(await api.get("/healthz", "qa-a")).headers["x-request-id"] for _ in range(3)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 3


async def test_refusals_carry_a_request_id_too(api: Api) -> None:
    r = await api.client.get("/readyz", headers={"X-Request-Id": "no-token-1"})
    assert r.status_code == 401
    assert r.headers["x-request-id"] == "no-token-1"
    assert r.headers["www-authenticate"] == "Bearer"


async def test_health_answers_exactly_the_status_object_as_json(api: Api) -> None:
    r = await api.get("/healthz", "pbx")
    assert r.headers["content-type"] == "application/json"
    assert r.content == b'{"status":"ok"}'


async def test_liveness_answers_a_probe_without_a_token_and_says_nothing_more(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer dg_not-a-token"}):
        r = await api.client.get("/healthz", headers=headers)
        assert r.status_code == 200
        assert r.content == b'{"status":"ok"}'
        assert "www-authenticate" not in r.headers


async def test_readiness_and_metrics_still_want_a_token(api: Api) -> None:
    for path in ("/readyz", "/metrics"):
        assert (await api.client.get(path)).status_code == 401
    assert (await api.get("/readyz", "pbx")).status_code == 200
    assert (await api.get("/metrics", "admin")).status_code == 200
    assert (await api.get("/metrics", "pbx")).status_code == 403  # counters sum over every creditor


async def test_the_site_root_sends_a_browser_to_the_console(api: Api) -> None:
    r = await api.client.get("/")
    assert r.status_code == 307
    assert r.headers["location"] == "/console/"


async def test_the_bearer_scheme_is_case_insensitive(api: Api) -> None:
    r = await api.client.get("/readyz", headers={"Authorization": f"bearer {api.tokens['qa-a']}"})
    assert r.status_code == 200


async def test_a_problem_instance_is_the_request_path_with_its_reserved_characters_escaped(api: Api) -> None:
    r = await api.get("/v1/cases/no%3Fsuch%23case", "col-a")
    assert r.status_code == 404
    assert r.json()["instance"] == "/v1/cases/no%3Fsuch%23case"


async def test_a_dial_logs_its_decision_with_the_request_id_the_caller_and_the_number_masked(api: Api, capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("info", json=True)
    try:
        r = await api.client.post(
            "/v1/dials", json={"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"},
            headers={**api.auth("col-a"), "X-Request-Id": "req-dial-1"},
        )
        assert r.status_code == 201, r.text
        err = capsys.readouterr().err
    finally:
        structlog.contextvars.clear_contextvars()
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    decided = [e for e in events if e.get("event") == "dial.decided"]
    assert len(decided) == 1, err
    e = decided[0]
    assert (e["request_id"], e["user"], e["role"]) == ("req-dial-1", "col-a", "collector")
    assert e["decision_id"] == r.json()["decision_id"]
    assert e["number"] == "138****0001"
    assert "13800000001" not in err


# POST /v1/dials has a fast path (dialer/http/dials.py:fast_dial) that skips FastAPI's
# routing for a valid body from a valid caller and hands everything else to the route.
# These pin that the answers are the route's in the cases where the two could part.

DIAL = {"case_id": "C-1", "number": "13800000001", "agent_id": "col-a"}


async def test_a_dial_whose_content_type_has_a_charset_is_answered(api: Api) -> None:
    r = await api.client.post("/v1/dials", content=json.dumps(DIAL).encode(),
                              headers={**api.auth("col-a"), "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


async def test_a_json_dial_sent_as_text_plain_is_400_and_writes_nothing(api: Api) -> None:
    before = await api.snapshot()
    r = await api.client.post("/v1/dials", content=json.dumps(DIAL).encode(),
                              headers={**api.auth("col-a"), "Content-Type": "text/plain"})
    assert r.status_code == 400, r.text
    assert r.json()["type"].endswith("/bad-request")
    assert await api.snapshot() == before


async def test_malformed_json_without_a_token_is_401_because_the_token_is_checked_before_the_body_is_read(api: Api) -> None:
    r = await api.client.post("/v1/dials", content=b'{"case_id": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    assert r.json()["type"].endswith("/unauthenticated")


async def test_a_valid_dial_without_a_token_is_401(api: Api) -> None:
    r = await api.client.post("/v1/dials", json=DIAL, headers={"X-Request-Id": "anon-dial"})
    assert r.status_code == 401
    assert r.headers["x-request-id"] == "anon-dial"
    assert r.headers["www-authenticate"] == "Bearer"


async def _asgi_dial(api: Api, chunks: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Drive the app directly with the body split over several ASGI messages."""
    app = api.client._transport.app  # type: ignore[attr-defined]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/dials", "raw_path": b"/v1/dials", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"gate"), (b"content-type", b"application/json"),
                         (b"authorization", api.auth("col-a")["Authorization"].encode())],
             "client": ("127.0.0.1", 1), "server": ("gate", 80), "state": {}}
    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_dial_body_split_over_several_messages_is_read_whole(api: Api) -> None:
    raw = json.dumps(DIAL).encode()
    status, _, body = await _asgi_dial(api, [raw[:7], raw[7:20], raw[20:]])
    assert status == 201, body
    assert json.loads(body)["decision"]["allowed"] is True


async def test_a_refused_body_split_over_several_messages_reaches_the_route_whole(api: Api) -> None:
    raw = json.dumps({**DIAL, "colour": "red"}).encode()
    status, headers, body = await _asgi_dial(api, [raw[:10], raw[10:]])
    assert status == 422, body
    assert headers["content-type"].startswith("application/problem+json")
    assert {e["field"] for e in json.loads(body)["details"]["errors"]} == {"colour"}


async def test_a_dial_while_the_store_is_down_is_503_problem_with_retry_after(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dialer.errors import StoreUnavailable

    async def down(cmd: object) -> object:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(api.svc.gate, "request_dial", down)
    r = await api.post("/v1/dials", "col-a", DIAL)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["type"].endswith("/store-unavailable")
    assert r.json()["instance"] == "/v1/dials"


async def test_the_openapi_schema_declares_bearer_authentication_for_every_endpoint(api: Api) -> None:
    r = await api.get("/openapi.json", "col-a")
    assert r.status_code == 200
    doc = r.json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "The token `dialgate users add` printed once. Every endpoint needs one.",
    }
    assert doc["security"] == [{"bearer": []}]
    assert "/v1/dials" in doc["paths"] and "/v1/blocked-dials" in doc["paths"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []  # liveness only
    assert all("security" not in op for path, ops in doc["paths"].items() if path != "/healthz" for op in ops.values())


async def test_the_docs_page_holds_no_api_description_and_fetches_it_with_the_token_the_user_gives(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "/v1/dials" not in page and "securitySchemes" not in page  # the description comes only with a token
    assert '"Authorization": "Bearer " + token' in page and 'fetch("/openapi.json"' in page
    assert "访问令牌 / Bearer token" in page
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "https:" not in csp and "http://" not in page and "https://" not in page  # nothing from the internet
    assert r.headers["cache-control"] == "no-store"


async def test_the_docs_page_serves_swagger_ui_itself_so_it_works_offline(api: Api) -> None:
    page = (await api.client.get("/docs")).text
    js = await api.client.get("/docs/assets/swagger-ui-bundle.js")
    css = await api.client.get("/docs/assets/swagger-ui.css")
    assert 'src="/docs/assets/swagger-ui-bundle.js"' in page and 'href="/docs/assets/swagger-ui.css"' in page
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in js.content and len(js.content) > 500_000
    assert css.status_code == 200 and b".swagger-ui" in css.content
    missing = await api.client.get("/docs/assets/..%2Fconfig.toml")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


async def test_fastapis_own_unauthenticated_api_pages_are_gone(api: Api) -> None:
    for path in ("/redoc", "/docs/oauth2-redirect"):
        r = await api.client.get(path)
        assert r.status_code == 404, path
