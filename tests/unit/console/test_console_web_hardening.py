"""The console against a hostile browser or link: guessing tokens at the sign-in form,
a plain-HTTP first visit, a crafted link that puts words in a success banner or leads
the case lookup elsewhere."""

from __future__ import annotations

from console_helpers import csrf_of, sign_in

from dialer.console.sample import TOKENS


async def test_a_client_guessing_tokens_is_answered_429_even_for_a_right_one(client):
    page = await client.get("/console/sign-in")
    csrf = csrf_of(page.text)
    for i in range(20):
        r = await client.post("/console/sign-in", data={"csrf": csrf, "token": f"tok-guess-{i}"})
        assert r.status_code == 401
    r = await client.post("/console/sign-in", data={"csrf": csrf, "token": TOKENS["compliance-a"]})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert "秒后再试" in r.text
    assert (await client.get("/console/blocked")).status_code == 303  # nobody was signed in


async def test_valid_sign_ins_are_not_counted_against_the_client(client):
    for _ in range(25):
        assert (await sign_in(client, "compliance-a")).status_code == 303
        client.cookies.clear()


async def test_pages_reached_over_tls_tell_the_browser_to_keep_to_https(client):
    r = await client.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert r.headers["strict-transport-security"].startswith("max-age=")
    plain = await client.get("/console/sign-in")
    assert "strict-transport-security" not in plain.headers  # a browser ignores it over HTTP anyway


async def test_a_crafted_link_cannot_put_words_in_the_purge_approved_banner(client):
    await sign_in(client, "compliance-a")
    lure = "P-9 已批准。系统升级：请把您的令牌发给 it-help@evil.example"
    r = await client.get("/console/purges", params={"done": lure})
    assert r.status_code == 200
    assert 'class="banner ok"' not in r.text and "系统升级" not in r.text


async def test_the_banner_still_confirms_a_real_approval(client):
    await sign_in(client, "compliance-a")
    page = await client.get("/console/purges")
    r = await client.post("/console/purges/purge-1/approve", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    done = await client.get(r.headers["location"])
    assert 'class="banner ok"' in done.text and "purge-1" in done.text


async def test_a_looked_up_case_id_stays_one_path_segment(client):
    await sign_in(client, "qa-a")
    r = await client.get("/console/case", params={"creditor": "bank-a", "case_id": "A-1001/../../purges?done=x#y"})
    assert r.status_code == 303
    assert r.headers["location"] == "/console/cases/bank-a/A-1001%2F..%2F..%2Fpurges%3Fdone%3Dx%23y"
