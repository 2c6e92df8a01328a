"""The README's tour, as written, against the demo `scripts/run.sh` starts, on another day.

The shell blocks of the README's "Tour" section are extracted from README.md itself and
run in order in one bash, from the repository root, with the server started by the very
command `scripts/run.sh` ends with (its `exec` line, plus a free port). Both run under
the `faketime` wrapper on a date other than today at 10:00 Beijing time, so the tour's relative
dates (`date -d tomorrow`) and the server's clock agree, and a README pinned to a date
that has passed would fail here. The demo keeps its data in a temporary directory
(`DIALGATE_PATHS_DATA_DIR`), never in the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import require_service
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
SHANGHAI = ZoneInfo("Asia/Shanghai")
MARK = "@@tour-block "

pytestmark = pytest.mark.slow


def tour_blocks(readme: str) -> list[str]:
    section = readme.split("\n## Tour\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def served_command() -> list[str]:
    """The command scripts/run.sh hands over to (its `exec` line), without "$@"."""
    line = next(l for l in (REPO / "scripts" / "run.sh").read_text().splitlines() if l.startswith("exec "))
    return [a for a in shlex.split(line)[1:] if a != "$@"]


def another_day() -> date:
    """A day 100 days from now: never today, and inside no demo case's commission edge."""
    return datetime.now(SHANGHAI).date() + timedelta(days=100)


def wait_until_serving(base: str, server: subprocess.Popen[bytes], deadline_s: float = 120) -> None:
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if server.poll() is not None:
            raise AssertionError(f"the demo exited with {server.returncode}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # polling the port the demo opens once its start-up is done
    raise AssertionError("the demo did not answer /healthz")


def faked_env(tmp_path: Path, day: date) -> dict[str, str]:
    require_service("faketime", shutil.which("faketime") is not None, "apt-get install faketime")
    return {
        **os.environ,
        "TZ": "UTC",
        "DIALGATE_PATHS_DATA_DIR": str(tmp_path / "var"),
        "DIALGATE_LOG_LEVEL": "warning",
        # Read by faked() below: 10:00 Beijing time on `day`.
        "TOUR_FAKETIME": "@" + datetime(day.year, day.month, day.day, 2, 0).strftime("%Y-%m-%d %H:%M:%S"),
    }


def faked(env: dict[str, str], *command: str) -> list[str]:
    """`command` under the faketime wrapper: it starts the clock at the given instant and
    keeps the shared state libfaketime needs alive until the command and all its
    children are done (a bare LD_PRELOAD leaves it to whichever process came first)."""
    return ["faketime", "-f", env["TOUR_FAKETIME"], *command]


@contextlib.contextmanager
def running_demo(env: dict[str, str], log_path: Path) -> Iterator[str]:
    port = free_port()
    with log_path.open("ab") as log:
        # Its own process group, so nothing it started outlives the test.
        server = subprocess.Popen(faked(env, *served_command(), "--port", str(port)), cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(base, server)
            yield base
        finally:
            stop_under_wrapper(server)


def stop_under_wrapper(wrapper: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the service the wrapper started (the wrapper does not pass signals on;
    once its child is gone it removes libfaketime's shared memory and exits)."""
    children = Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    try:
        wrapper.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(wrapper.pid, signal.SIGKILL)
        wrapper.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], date]]:
    day = another_day()
    env = faked_env(tmp_path, day)
    with running_demo(env, tmp_path / "demo.log") as base:
        yield base, env, day


def run_tour(base: str, env: dict[str, str]) -> list[str]:
    blocks = tour_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    script = "".join(f"echo '{MARK}{i}'\n{b}" for i, b in enumerate(blocks))
    assert "DG=http://127.0.0.1:8080\n" in script
    script = script.replace("DG=http://127.0.0.1:8080\n", f"DG={base}\n")
    done = subprocess.run(faked(env, "bash", "-euo", "pipefail", "-c", script), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout.split(MARK)[1:]


def json_docs(text: str) -> list[dict]:
    decoder, docs, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        doc, end = decoder.raw_decode(text, i)
        docs.append(doc)
        i = end
    return docs


def test_every_command_of_the_readme_tour_does_what_the_readme_says_on_another_day(demo) -> None:  # type: ignore[no-untyped-def]
    base, env, day = demo
    assert day != date.today()
    out = {int(chunk.split("\n", 1)[0]): chunk.split("\n", 1)[1] for chunk in run_tour(base, env)}

    assert out[0].strip() == '{"status":"ok"}'  # liveness without a token

    first, *codes = out[1].strip().rsplit("\n", 2)
    dial = json.loads(first)
    assert dial["decision"]["allowed"] is True and dial["attempt_id"]
    assert dial["decision"]["evaluated_at"].startswith(f"{day.isoformat()}T10:00")  # the faked clock, Beijing time
    assert codes == ["201", "403"]  # the third dial within the hour: cap.number_hourly

    assert json_docs(out[2])[0]["decision"]["rule_id"] == "case.paused"

    this_morning, tonight, tomorrow = (d["decision"] for d in json_docs(out[3]))
    assert this_morning["allowed"] is True  # the tour's dials came later: they do not count at 09:00
    assert this_morning["inputs_used"]["counters"]["cap.number_daily"]["count"] == 0
    assert tonight["rule_id"] == "window.outside_hours"
    assert tonight["next_allowed_at"] == f"{(day + timedelta(days=1)).isoformat()}T08:00:00+08:00"
    assert tomorrow["allowed"] is True

    outcome, case = json_docs(out[4])[:2]
    day_before_promise = (day + timedelta(days=2)).isoformat()
    assert outcome["case"]["next_action"]["date"] == day_before_promise
    assert case["case_id"] == "A-1001"

    blocked, summary = json_docs(out[5])[:2]
    assert [i["rule_id"] for i in blocked["items"]] == ["cap.number_hourly"]
    assert summary["by_rule"] == {"cap.number_hourly": 1, "case.paused": 1}

    assert "OK: every chain verifies" in out[6]  # audit verify; policy explain ran without error (set -e)


def ready_with(base: str, token: str) -> int:
    req = urllib.request.Request(base + "/readyz", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_restarted_demo_still_accepts_the_tokens_the_tour_read(tmp_path: Path) -> None:
    env = faked_env(tmp_path, another_day())
    read = [".venv/bin/dialgate", "demo-token", "comp-a"]
    with running_demo(env, tmp_path / "demo.log") as base:
        token = subprocess.run(read, cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip()
        assert ready_with(base, token) == 200
    with running_demo(env, tmp_path / "demo.log") as base:
        assert ready_with(base, token) == 200
        assert subprocess.run(read, cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout.strip() == token
        assert ready_with(base, "dg_not-a-demo-token") == 401
