"""Planning an incremental verification: new recordings since the last completed run,
a rolling sample of the older ones that covers the archive in N runs, resumption."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from recordings import verify_plan as vp

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


def archive(n: int, start: datetime = T0) -> list[tuple[str, datetime]]:
    return [(f"rec{i:04d}", start + timedelta(minutes=i)) for i in range(n)]


def run_all(state: vp.VerifyState, run: vp.Run) -> vp.VerifyState:
    for rid in vp.remaining(run):
        run = vp.advance(run, rid, True, 100)
    return vp.complete(state, run, T0 + timedelta(days=1), 1.0)


def test_the_first_run_reads_everything_as_new() -> None:
    run = vp.plan(archive(5), vp.VerifyState(), T0, sample=2)
    assert run.ids == ("rec0000", "rec0001", "rec0002", "rec0003", "rec0004") and run.new == 5


def test_the_next_run_reads_only_what_was_stored_since_plus_the_sample() -> None:
    state = run_all(vp.VerifyState(), vp.plan(archive(6), vp.VerifyState(), T0, sample=0))
    later = archive(6) + [("rec9000", T0 + timedelta(hours=5))]
    run = vp.plan(later, state, T0, sample=2)
    assert run.ids[: run.new] == ("rec9000",)
    assert run.ids[run.new :] == ("rec0000", "rec0001")


def test_daily_samples_cover_the_whole_archive_in_n_runs_and_wrap_around() -> None:
    items = archive(10)
    state = run_all(vp.VerifyState(), vp.plan(items, vp.VerifyState(), T0, sample=0))
    size = vp.sample_size(len(items), 4)  # 3 a day
    seen: list[str] = []
    for _ in range(4):
        run = vp.plan(items, state, T0, sample=size)
        assert run.new == 0
        seen += run.ids
        state = run_all(state, run)
    assert set(seen) == {rid for rid, _ in items}
    assert seen[:3] == ["rec0000", "rec0001", "rec0002"] and seen[9:] == ["rec0009", "rec0000", "rec0001"]


def test_an_interrupted_run_survives_the_state_file_and_resumes_after_the_last_one_read() -> None:
    state = vp.VerifyState()
    run = vp.plan(archive(4), state, T0, sample=0)
    run = vp.advance(run, "rec0000", True, 100)
    run = vp.advance(run, "rec0001", False, 100)
    saved = vp.VerifyState.from_json(vp.VerifyState(None, None, run).to_json())
    assert saved.run is not None
    assert list(vp.remaining(saved.run)) == ["rec0002", "rec0003"]
    assert saved.run.failed == ("rec0001",) and saved.run.bytes_done == 200


def test_completing_a_run_records_its_figures_and_moves_the_high_water_mark() -> None:
    items = archive(3)
    state = run_all(vp.VerifyState(), vp.plan(items, vp.VerifyState(), T0, sample=0))
    assert state.last_complete == items[-1][1] and state.run is None
    [entry] = state.history
    assert (entry["checked"], entry["new"], entry["bytes"]) == (3, 3, 300)
