"""The console in a real browser (Playwright driving Debian's Chromium) against a running
`dialgate serve` process seeded through its CLI and HTTP API.

Screenshots of every page land in test-artifacts/console/ (look at them).
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # `tests` is not installed
from tests.conftest import require_service  # noqa: E402
from console_serve import RECORDING_SECONDS, Served, start  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "console"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # the test presses play from script, not with a user gesture
    "--autoplay-policy=no-user-gesture-required",
]
VIEWPORT = {"width": 1366, "height": 768}


def _playwright_ready() -> tuple[bool, str]:
    if not os.path.exists(CHROMIUM):
        return False, "apt-get install chromium (scripts/setup.sh --services does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False, "pip install playwright (the dev extra)"
    return True, ""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    ok, how = _playwright_ready()
    require_service("Chromium + Playwright", ok, how)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = start(tmp_path_factory.mktemp("console-serve"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser, served):  # type: ignore[no-untyped-def]
    ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale="zh-CN")
    ctx.set_default_timeout(15_000)
    pg = ctx.new_page()
    yield pg
    ctx.close()


def shot(pg, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(pg, served: Served, who: str, then: str = "/console/") -> None:  # type: ignore[no-untyped-def]
    pg.goto(f"{served.base}/console/sign-in?next={then}")
    pg.get_by_label("令牌").fill(served.tokens[who])
    pg.get_by_role("button", name="登录").click()
    pg.wait_for_url(re.compile(re.escape(then) + "$"))


def until(pg, event: str, ready: str, value: str, timeout_ms: int = 20_000):  # type: ignore[no-untyped-def]
    """Wait for the audio element's `event` until `ready(a)` holds; return `value(a)`.

    Runs as a promise in the page (event-driven, no polling). Playwright's
    wait_for_function evaluates strings with eval, which the console's CSP forbids."""
    script = f"""([event, ms]) => new Promise((resolve, reject) => {{
        const a = document.getElementById('player');
        const isReady = {ready};
        const get = {value};
        const timer = setTimeout(() => reject(new Error('timed out waiting for ' + event)), ms);
        const check = () => {{ if (isReady(a)) {{ clearTimeout(timer); resolve(get(a)); }}
                              else {{ a.addEventListener(event, check, {{ once: true }}); }} }};
        check();
    }})"""
    return pg.evaluate(script, [event, timeout_ms])


def assert_every_field_labelled(pg) -> None:  # type: ignore[no-untyped-def]
    unlabelled = pg.evaluate(
        """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
                 .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label'))
                 .map(el => el.name || el.id || el.outerHTML.slice(0, 60))"""
    )
    assert unlabelled == [], f"fields without a label on {pg.url}: {unlabelled}"


def table_ids(pg) -> list[str]:  # type: ignore[no-untyped-def]
    return pg.eval_on_selector_all("#blocked-table tbody tr[data-decision]", "rows => rows.map(r => r.dataset.decision)")


def test_sign_in_shows_the_blocked_dials_the_service_logged(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{served.base}/console/blocked")
    page.wait_for_url(re.compile(r"/console/sign-in"))
    assert_every_field_labelled(page)
    shot(page, "01-sign-in")
    page.get_by_label("令牌").fill(served.tokens["comp-a"])
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/console/blocked$"))
    truth = [i["decision_id"] for i in served.blocked_api("comp-a")]
    assert table_ids(page) == truth
    assert page.locator("#result-count").inner_text() == f"共 {len(truth)} 条"
    assert page.locator("svg.chart").count() == 2
    # usable at 1366×768: nothing wider than the window
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    assert_every_field_labelled(page)
    shot(page, "02-blocked-dials")


def test_filters_are_reachable_by_keyboard_and_narrow_the_rows(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, served, "comp-a", "/console/blocked")
    page.locator("#f-from").focus()
    order: list[str] = []
    for _ in range(20):  # a date input takes one Tab per part (year, month, day)
        here = page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        if not order or order[-1] != here:
            order.append(here)
        if here == "筛选":
            break
        page.keyboard.press("Tab")
    assert order == ["f-from", "f-to", "f-creditor", "f-agent", "f-rule", "f-case", "筛选"]
    # every filter field has a visible label naming it
    for fid, label in [("f-from", "开始日期"), ("f-to", "结束日期"), ("f-creditor", "委托方"), ("f-agent", "催收员"),
                       ("f-rule", "规则"), ("f-case", "案件号")]:
        assert page.get_by_label(label, exact=True).get_attribute("id") == fid
    page.get_by_label("规则", exact=True).select_option("contact.not_authorized")
    page.get_by_label("催收员", exact=True).fill("col-a2")
    page.get_by_label("催收员", exact=True).press("Enter")
    page.wait_for_url(re.compile(r"rule=contact.not_authorized"))
    truth = [i["decision_id"] for i in served.blocked_api("comp-a", rule_id="contact.not_authorized", agent="col-a2")]
    assert len(truth) == 2
    assert table_ids(page) == truth
    shot(page, "03-blocked-filtered")


def test_csv_export_holds_exactly_the_filtered_rows(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, served, "comp-a", "/console/blocked")
    page.get_by_label("规则", exact=True).select_option("agent.not_assigned")
    page.get_by_role("button", name="筛选").click()
    page.wait_for_url(re.compile(r"rule=agent.not_assigned"))
    shown = table_ids(page)
    with page.expect_download() as dl:
        page.locator("#csv-link").click()
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_bytes().decode("utf-8-sig"))))
    assert [r["decision_id"] for r in rows] == shown
    assert shown == [i["decision_id"] for i in served.blocked_api("comp-a", rule_id="agent.not_assigned")]
    assert {r["rule_id"] for r in rows} == {"agent.not_assigned"}


def test_a_decision_page_lists_every_check_with_inputs_policy_and_earliest_time(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    truth = served.blocked_api("comp-a", rule_id="cap.number_hourly")[0]
    sign_in(page, served, "comp-a", "/console/blocked")
    page.locator(f'tr[data-decision="{truth["decision_id"]}"] a', has_text="详情").click()
    page.wait_for_url(re.compile(r"/console/decisions/"))
    assert page.locator("#checks tbody tr").count() == len(truth["checks"])
    assert page.locator("#policy-version").inner_text() == truth["policy_version"]
    assert page.locator("#earliest").inner_text() != ""
    assert page.locator("#inputs dt").count() > 0
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    shot(page, "04-decision")


def test_a_case_page_shows_masked_contacts_the_timeline_and_the_call_note(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, served, "comp-a", "/console/blocked")
    # by its address: a text match is case-blind and would also take a details link whose
    # hidden decision id happens to hold "c-1"
    page.locator('#blocked-table a[href="/console/cases/bank-a/C-1"]').first.click()
    page.wait_for_url(re.compile(r"/console/cases/bank-a/C-1$"))
    contacts = page.locator("#contacts").inner_text()
    assert "138****0001" in contacts and "13800000001" not in page.content()
    timeline = page.locator("#timeline")
    assert timeline.locator("li.allowed").count() == 2
    assert timeline.locator("li.blocked").count() == len(served.blocked_api("comp-a", case_id="C-1"))
    assert "客户承诺周五还款 500 元" in timeline.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    shot(page, "05-case")


def test_qa_plays_a_recording_after_giving_a_reason_and_sees_the_access_logged(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    require_service("recordings vault in the service", served.recording_id is not None, served.recording_error or "")
    sign_in(page, served, "qa-a", "/console/cases/bank-a/C-1/recordings")
    assert_every_field_labelled(page)
    shot(page, "06-recordings")
    page.locator(f'tr[data-recording="{served.recording_id}"] a', has_text="播放").click()
    page.wait_for_url(re.compile(r"/console/recordings/"))
    assert page.locator("audio").count() == 0  # no audio before a reason
    assert_every_field_labelled(page)
    reason = "投诉复核 complaint #77"
    page.get_by_label("借阅原因").fill(reason)
    page.get_by_role("button", name="申请播放").click()
    page.wait_for_selector("audio#player")
    duration = until(page, "loadedmetadata", "a => a.readyState >= 1", "a => a.duration")
    assert abs(duration - RECORDING_SECONDS) < 0.05
    page.evaluate("document.getElementById('player').play()")
    assert until(page, "timeupdate", "a => a.currentTime > 1.0", "a => a.currentTime") > 1.0
    # seek: the browser asks for a byte range and plays on from there
    page.evaluate("document.getElementById('player').currentTime = 3.5")
    assert until(page, "timeupdate", "a => a.currentTime > 3.7", "a => a.currentTime") > 3.7
    from playwright.sync_api import expect

    expect(page.locator("#access-log tbody")).to_contain_text(reason)
    log = page.locator("#access-log tbody").inner_text()
    assert "qa-a" in log
    shot(page, "07-recording-playing")


def test_a_second_person_approves_the_purge_and_the_register_records_both(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    require_service("recordings vault in the service", served.purge_id is not None, served.recording_error or "")
    sign_in(page, served, "sup-a", "/console/purges")
    row = page.locator(f'tr[data-purge="{served.purge_id}"]')
    assert "admin" in row.inner_text()
    shot(page, "10-pending-purges")
    asked: list[str] = []

    def answer(dialog):  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.dismiss() if len(asked) == 1 else dialog.accept()

    page.on("dialog", answer)
    row.get_by_role("button").click()  # first time: "cancel" — nothing happens
    assert len(asked) == 1 and "无法恢复" in asked[0]
    assert page.locator(f'tr[data-purge="{served.purge_id}"]').count() == 1
    row.get_by_role("button").click()
    page.wait_for_url(re.compile(r"/console/purges\?done="))
    assert page.locator(f'tr[data-purge="{served.purge_id}"]').count() == 0
    page.get_by_role("link", name="销毁登记表").click()
    page.wait_for_url(re.compile(r"/console/destruction-register$"))
    register = page.locator("#register tbody").inner_text()
    assert served.old_recording_id in register and "admin" in register and "sup-a" in register
    shot(page, "11-destruction-register")
    resp = page.goto(f"{served.base}/console/recordings/{served.old_recording_id}")
    assert resp is not None and resp.status == 404


def test_another_creditors_case_is_not_found(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, served, "comp-a")
    assert_every_field_labelled(page)  # the start page's case lookup
    resp = page.goto(f"{served.base}/console/cases/bank-b/B-1")
    assert resp is not None and resp.status == 404
    assert "未找到" in page.locator("h1").inner_text()
    shot(page, "08-other-creditor-404")


def test_english_switch_and_sign_out(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, served, "comp-a", "/console/blocked")
    page.get_by_role("link", name="English").click()
    page.wait_for_selector("html[lang=en]")
    assert page.locator("h1").inner_text() == "Blocked dials"
    shot(page, "09-blocked-english")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/sign-in"))
    page.goto(f"{served.base}/console/blocked")
    page.wait_for_url(re.compile(r"/console/sign-in"))
    assert page.get_by_label("Token").is_visible()


# The real Swagger UI the server ships, wrapped so the test can read the request
# interceptor DialGate's page hands it: what is under test is the token, the fetch, the
# header on every request, and that nothing is loaded from anywhere but this server.
_SWAGGER_WRAP = """
;(function () {
  var real = window.SwaggerUIBundle;
  window.SwaggerUIBundle = function (cfg) {
    window.__dgAuthorization = cfg.requestInterceptor({url: "/healthz", headers: {}}).headers["Authorization"];
    return real(cfg);
  };
  Object.assign(window.SwaggerUIBundle, real);
})();
"""


def test_the_api_docs_page_shows_the_api_only_with_a_token_and_sends_it_on_every_request(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    def wrap(route):  # type: ignore[no-untyped-def]
        real = route.fetch()
        route.fulfill(response=real, body=real.body() + _SWAGGER_WRAP.encode())

    hosts: set[str] = set()
    page.on("request", lambda req: hosts.add(req.url.split("/")[2]))
    page.route("**/docs/assets/swagger-ui-bundle.js", wrap)
    page.goto(f"{served.base}/docs")
    assert page.locator("#swagger-ui").inner_text() == ""
    page.get_by_label("访问令牌 / Bearer token").fill("dg_not-a-token")
    page.get_by_role("button", name="查看接口 / Show the API").click()
    expect(page.locator("#status")).to_contain_text("令牌无效")
    assert page.locator("#swagger-ui").inner_text() == ""

    token = served.tokens["comp-a"]
    page.get_by_label("访问令牌 / Bearer token").fill(token)
    page.get_by_role("button", name="查看接口 / Show the API").click()
    expect(page.locator("#swagger-ui .info .title")).to_contain_text("DialGate")
    expect(page.locator("#swagger-ui .opblock-summary-path").first).to_be_visible()
    paths = page.locator("#swagger-ui .opblock-summary-path").all_inner_texts()
    assert "/v1/dials" in [p.replace("\u200b", "") for p in paths] and len(paths) >= 10
    assert page.evaluate("window.__dgAuthorization") == f"Bearer {token}"
    page.reload()  # the tab keeps the token: the API shows again without typing it
    expect(page.locator("#swagger-ui .info .title")).to_contain_text("DialGate")
    assert page.evaluate("sessionStorage.getItem('dialgate-api-token')") == token
    page.get_by_role("button", name="清除令牌 / Forget the token").click()
    assert page.locator("#swagger-ui").inner_text() == ""
    assert page.evaluate("sessionStorage.getItem('dialgate-api-token')") is None
    assert hosts == {served.base.split("/")[2]}  # Swagger UI and its style came from DialGate itself
