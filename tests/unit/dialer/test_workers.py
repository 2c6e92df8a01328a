"""The HTTP worker pool's rules: one primary per pool, and configurations a pool cannot
run correctly are refused with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.config import build_config
from dialer.errors import ConfigError
from dialer.workers import PRIMARY, SECONDARY, _held, check_pool, elect


def test_the_first_process_to_lock_the_pool_file_is_primary_and_the_others_secondary(tmp_path: Path) -> None:
    lock = str(tmp_path / "primary.lock")
    held = len(_held)
    assert elect(lock) == PRIMARY
    assert elect(lock) == SECONDARY  # flock belongs to the open file: a second open is a second process
    assert elect(lock) == SECONDARY
    import os

    os.close(_held.pop())  # the primary exits
    assert len(_held) == held
    assert elect(lock) == PRIMARY  # its replacement takes the role
    os.close(_held.pop())


def test_a_pool_over_an_in_memory_database_is_refused(tmp_path: Path) -> None:
    cfg = build_config({"paths": {"data_dir": str(tmp_path)}, "store": {"url": "sqlite+aiosqlite://"},
                        "http": {"workers": 2}})
    with pytest.raises(ConfigError, match="in-memory database is private to one process"):
        check_pool(cfg)


def test_a_pool_with_the_pbx_user_agent_is_refused() -> None:
    cfg = build_config({"http": {"workers": 3}, "pbx": {"mode": "sip_ua"}})
    with pytest.raises(ConfigError, match='cannot run with \\[pbx\\] mode = "sip_ua"'):
        check_pool(cfg)


def test_one_worker_or_a_file_database_needs_no_checks(tmp_path: Path) -> None:
    check_pool(build_config({"store": {"url": "sqlite+aiosqlite://"}}))
    check_pool(build_config({"paths": {"data_dir": str(tmp_path)}, "http": {"workers": 2}}))


@pytest.mark.parametrize("workers", [0, 65, -1])
def test_worker_counts_outside_1_to_64_are_refused(workers: int) -> None:
    with pytest.raises(ConfigError, match="http.workers: expected 1 to 64"):
        build_config({"http": {"workers": workers}})


def test_a_dead_pools_run_directory_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    import os

    from dialer.workers import _remove_dead_pools

    import fcntl

    dead, live = tmp_path / ".serve-pool-dead", tmp_path / ".serve-pool-live"
    for d in (dead, live):
        (d / "metrics").mkdir(parents=True)
        (d / "supervisor.lock").touch()
    alive = os.open(live / "supervisor.lock", os.O_RDWR)
    fcntl.flock(alive, fcntl.LOCK_EX)  # its supervisor still runs
    try:
        _remove_dead_pools(tmp_path)
        assert not dead.exists() and live.exists()
    finally:
        os.close(alive)


POOL_POLICY = "DIALGATE_POOL_POLICY"  # the policy book version the pool's supervisor started with


def _pool_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: str, now: str) -> Path:
    """A pool started on config text `started` whose file now reads `now`."""
    from dialer.bootstrap import load_policies
    from dialer.config import load_config
    from dialer.workers import CONFIG_ENV, LOCK_ENV

    path = tmp_path / "config.toml"
    path.write_text(started, encoding="utf-8")
    monkeypatch.setenv(POOL_POLICY, load_policies(load_config(path, env={})).version)
    path.write_text(now, encoding="utf-8")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "primary.lock"))
    return path


def test_a_worker_restarted_after_the_policy_file_changed_refuses_to_start_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool started with bank-b's night collection ending at 20:30; someone widened
    # it in the file while serving. A worker that dies and is restarted must not decide
    # on the new text while the others decide on the old, unannounced.
    base = f'[paths]\ndata_dir = "{tmp_path}"\n[policy.creditors.bank-b]\n'
    _pool_worker(tmp_path, monkeypatch, base + 'window = { end = "20:30" }\n', base + 'window = { end = "21:00" }\n')
    from dialer.workers import worker_app

    held = len(_held)
    with pytest.raises(ConfigError, match="restart the service"):
        worker_app()
    assert len(_held) == held  # refused before it took any role


def test_a_worker_restarted_on_the_policy_the_pool_started_with_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    text = f'[paths]\ndata_dir = "{tmp_path}"\n[policy.creditors.bank-b]\nwindow = {{ end = "20:30" }}\n'
    _pool_worker(tmp_path, monkeypatch, text, text + "# a comment changes no policy\n")
    from dialer.workers import worker_app

    held = len(_held)
    assert worker_app() is not None
    while len(_held) > held:
        os.close(_held.pop())
