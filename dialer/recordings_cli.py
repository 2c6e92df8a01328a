"""`dialgate keys …` and `dialgate recordings …`: the vault from the command line.

Mounted by `dialer/cli.py` as ``app.add_typer(keys_app, name="keys")`` and
``app.add_typer(recordings_app, name="recordings")``.

Every command takes `--config FILE`. The CLI runs on the vault's host with access to
the key file, so it is trusted like the service itself; still, every command that
reads audio names its user and reason and is written into the access log, and a
purge needs a request by one person and an approval by another.

Exit codes: 0 ok, 1 a check failed (verify found a mismatch), 2 bad usage, config or
a refused operation.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import typer

from dialer.masking import redact_on_input
from recordings.config import RecordingsConfig, parse_recordings_config
from recordings.errors import VaultError
from recordings.model import UNMATCHED_SCOPE, Actor, IngestRequest, Link, RecordingFilter
from recordings.vault import Vault

keys_app = typer.Typer(help="录音加密密钥 / recording encryption keys (per creditor).", no_args_is_help=True)
recordings_app = typer.Typer(help="录音库 / the recordings vault.", no_args_is_help=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="config.toml (defaults apply when omitted)")
# Who reads audio or approves a destruction is not taken as typed: the person's own API
# token names them, so the access log and the second signature are a real user's.
TokenFileOpt = typer.Option(
    None, "--token-file", help="a file holding your API token (else $DIALGATE_TOKEN): who you are / 操作人令牌文件",
)
TOKEN_ENV = "DIALGATE_TOKEN"

MEDIA_BY_SUFFIX = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".opus": "audio/ogg"}
PIECE = 64 * 1024
_GRACE = timedelta(hours=1)  # the service may be ingesting right now: spare young blobs


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _load(config: Optional[Path]) -> tuple[RecordingsConfig, Any]:
    """The ``[recordings]`` table, typed, and the service configuration."""
    from dialer.config import load_config
    from dialer.errors import ConfigError

    try:
        cfg = load_config(config)
        return parse_recordings_config(dict(_thaw(cfg.section("recordings"))), cfg.paths.data_dir), cfg
    except VaultError as exc:
        raise _fail(f"config: {exc.message}") from None
    except ConfigError as exc:
        raise _fail(f"config: {exc}") from None


def _thaw(v: Any) -> Any:
    if hasattr(v, "items"):
        return {k: _thaw(x) for k, x in v.items()}
    return v


def _now() -> datetime:
    return datetime.now(timezone.utc)


@asynccontextmanager
async def open_vault(config: Optional[Path]) -> AsyncIterator[tuple[Vault, RecordingsConfig]]:
    """The vault over the service database (migrated first when the config says so),
    the same one `dialgate serve` uses."""
    async with _opened(config, None) as (vault, rcfg, _):
        yield vault, rcfg


@asynccontextmanager
async def open_vault_as(config: Optional[Path], token_file: Optional[Path]) -> AsyncIterator[tuple[Vault, Actor]]:
    """`open_vault`, and the person the token (`token_file`, else $DIALGATE_TOKEN) names,
    as the HTTP API resolves one: an enabled user, with their role and creditor scope."""
    token = _token(token_file)
    async with _opened(config, token) as (vault, _, actor):
        assert actor is not None
        yield vault, actor


def _token(token_file: Optional[Path]) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _fail(f"令牌文件无法读取 / cannot read the token file {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise _fail(f"需要操作人令牌 / give your API token: --token-file PATH or ${TOKEN_ENV}")
    return token


@asynccontextmanager
async def _opened(config: Optional[Path], token: str | None) -> AsyncIterator[tuple[Vault, RecordingsConfig, Actor | None]]:
    from dialer.auth import Authenticator
    from dialer.bootstrap import build_vault, open_store
    from dialer.errors import ApiError

    rcfg, cfg = _load(config)
    async with open_store(cfg, migrated=cfg.store.migrate_on_start) as store:
        actor = None
        if token is not None:
            try:
                who = await Authenticator(store, cache_s=0).authenticate(f"Bearer {token}", client="cli")
            except ApiError as exc:
                raise _fail(f"令牌无效 / the token was refused: {exc}") from None
            actor = Actor(user=who.name, role=who.role, creditors=who.scope())
        vault = build_vault(rcfg, store, _now)
        await vault.anchor_register()
        yield vault, rcfg, actor


def _run(coro: Any) -> Any:
    from dialer.errors import StoreUnavailable

    try:
        return asyncio.run(coro)
    except StoreUnavailable as exc:
        raise _fail(f"store: {exc}") from None
    except VaultError as exc:
        extra = {k: v for k, v in exc.details.items() if k != "recording_id"}
        raise _fail(f"{exc.message} [{exc.error_id}]{' ' + json.dumps(extra, ensure_ascii=False, default=str) if extra else ''}") from None


# -- keys ------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    config: Optional[Path] = ConfigOpt,
    creditor: list[str] = typer.Option([], "--creditor", help="creditor id (repeatable); those in [recordings.creditors] are included"),
) -> None:
    """Create the key file (0600) with one key per creditor, and one for unmatched recordings."""

    async def go() -> list[tuple[str, str]]:
        async with open_vault(config) as (vault, rcfg):
            scopes = sorted({*rcfg.creditors, *creditor}) + [UNMATCHED_SCOPE]
            return [(s, vault.keys.create(s)) for s in scopes]

    for scope, key_id in _run(go()):
        typer.echo(f"{scope}\t{key_id}")


@keys_app.command("rotate")
def keys_rotate(
    creditor: str = typer.Option(..., "--creditor", help="creditor id, or _unmatched"),
    token_file: Optional[Path] = TokenFileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """New key for a creditor; every data key is rewrapped (audio untouched). The old
    key is destroyed later by `keys retire`. An admin's token names who did it."""

    async def go() -> Any:
        async with open_vault_as(config, token_file) as (vault, actor):
            return await vault.rotate_keys(creditor, actor)

    r = _run(go())
    typer.echo(f"{r.scope}: new key {r.new_key_id}; {r.rewrapped} data keys rewrapped; "
               f"destroy the old key with `dialgate keys retire --creditor {r.scope}` after an hour")


@keys_app.command("retire")
def keys_retire(
    creditor: str = typer.Option(..., "--creditor", help="creditor id, or _unmatched"),
    token_file: Optional[Path] = TokenFileOpt,
    grace_minutes: float = typer.Option(60.0, "--grace-minutes", help="only keys superseded at least this long ago"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Destroy a creditor's superseded keys (anything still wrapped under them is
    rewrapped first); backups wrapped under them become unreadable."""

    async def go() -> Any:
        async with open_vault_as(config, token_file) as (vault, actor):
            return await vault.retire_keys(creditor, actor, grace=timedelta(minutes=grace_minutes))

    r = _run(go())
    typer.echo(f"{r.scope}: retired {', '.join(r.retired) or '-'}; {r.rewrapped} data keys rewrapped; active {r.new_key_id}")


@keys_app.command("destroy")
def keys_destroy(
    creditor: str = typer.Option(..., "--creditor"),
    confirm: str = typer.Option(..., "--confirm", help="type the creditor id again"),
    token_file: Optional[Path] = TokenFileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """End of commission: destroy a creditor's keys. Its recordings become unreadable
    everywhere, backups included. Irreversible."""
    if confirm != creditor:
        raise _fail("--confirm 与 --creditor 不一致 / --confirm must repeat the creditor id")

    async def go() -> int:
        async with open_vault_as(config, token_file) as (vault, actor):
            return await vault.destroy_creditor_keys(creditor, actor)

    n = _run(go())
    typer.echo(f"{creditor}: 密钥已销毁 / keys destroyed; {n} recordings are now unreadable")


# -- recordings --------------------------------------------------------------------------


def _file_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            yield piece


@recordings_app.command("ingest")
def rec_ingest(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    started_at: Optional[datetime] = typer.Option(None, "--started-at", help="call start, ISO 8601 with offset (default: the attempt's time)"),
    attempt_id: Optional[str] = typer.Option(None, "--attempt-id"),
    call_id: Optional[str] = typer.Option(None, "--call-id", help="SIP Call-ID"),
    duration: Optional[float] = typer.Option(None, "--duration", help="seconds"),
    media_type: Optional[str] = typer.Option(None, "--media-type", help="default: from the file suffix"),
    creditor: Optional[str] = typer.Option(None, "--creditor", help="default: the attempt's; unknown calls are kept as unmatched"),
    case: Optional[str] = typer.Option(None, "--case"),
    agent: Optional[str] = typer.Option(None, "--agent"),
    number: Optional[str] = typer.Option(None, "--number", help="E.164; stored masked"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Seal one audio file into the vault (idempotent by attempt id / Call-ID); an
    attempt known to the gate links the recording to its case, agent and number."""
    if (attempt_id is None) == (call_id is None):
        raise _fail("须给出 --attempt-id 或 --call-id 之一 / give exactly one of --attempt-id, --call-id")
    if started_at is not None and started_at.tzinfo is None:
        raise _fail("--started-at 须带时区 / --started-at needs a UTC offset, e.g. 2026-11-23T09:30:00+08:00")
    mt = media_type or MEDIA_BY_SUFFIX.get(file.suffix.lower())
    if mt is None:
        raise _fail(f"无法从后缀判断音频类型 / cannot tell the media type of {file.name}; use --media-type")

    async def go() -> Any:
        link = Link(creditor=creditor, case_id=case, agent=agent, number=number)
        start, attempt_at = started_at, None
        if attempt_id and creditor is None:
            from dialer.bootstrap import open_store

            async with open_store(_load(config)[1]) as store:
                async with store.read() as uow:
                    att = await uow.attempts.get(attempt_id)
            if att is not None:
                link = Link(creditor=att.creditor, case_id=att.case_id, agent=att.agent_id, number=att.number)
                start, attempt_at = start or att.at, att.at
        if start is None:
            raise _fail("--started-at: 未知呼叫须给出开始时间 / required when the call is not a known attempt")
        req = IngestRequest(
            source_kind="attempt" if attempt_id else "call",
            source_id=attempt_id or call_id or "",
            started_at=start,
            media_type=mt,
            duration_s=duration,
            link=link,
            attempt_at=attempt_at,
        )
        async with open_vault(config) as (vault, _):
            await vault.recover(orphan_grace=_GRACE)
            return await vault.ingest(req, _file_pieces(file), Actor("cli", "admin"))

    res = _run(go())
    r = res.recording
    typer.echo(json.dumps({"recording_id": r.recording_id, "sha256": r.sha256, "retain_until": r.retain_until.isoformat(),
                           "state": r.state, "created": res.created}, ensure_ascii=False))


@recordings_app.command("link")
def rec_link(
    recording_id: str = typer.Argument(...),
    attempt_id: str = typer.Option(..., "--attempt-id", help="the attempt the unmatched recording belongs to"),
    token_file: Optional[Path] = TokenFileOpt,
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Attach an unmatched recording to its attempt (its data key is rewrapped under the
    creditor's key), as the admin the token names."""

    async def go() -> Any:
        from dialer.bootstrap import open_store

        async with open_store(_load(config)[1]) as store:
            async with store.read() as uow:
                att = await uow.attempts.get(attempt_id)
        if att is None:
            raise _fail(f"没有该拨号记录 / no attempt {attempt_id}")
        async with open_vault_as(config, token_file) as (vault, actor):
            return await vault.link(recording_id, actor, Link(att.creditor, att.case_id, att.agent_id, att.number))

    r = _run(go())
    typer.echo(f"{r.recording_id}: linked to {r.creditor}/{r.case_id} (agent {r.agent}, {r.number_masked}); retain until {r.retain_until}")


@recordings_app.command("fetch")
def rec_fetch(
    recording_id: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the decrypted audio"),
    reason: str = typer.Option(..., "--reason", help="借阅原因 / why (written in the access log)"),
    token_file: Optional[Path] = TokenFileOpt,
    force: bool = typer.Option(False, "--force", help="overwrite --out"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Decrypt one recording to a file (0600), verifying its SHA-256; the access is logged
    under the user the token names (QA, compliance or a supervisor of its creditor)."""
    if out.exists() and not force:
        raise _fail(f"{out} 已存在 / {out} exists; use --force")
    tmp = out.with_name(f".{out.name}.part")

    async def go() -> int:
        async with open_vault_as(config, token_file) as (vault, actor):
            # Card and ID numbers are masked before the access log keeps the reason, as the API does.
            stream = await vault.open_audio(recording_id, actor, reason=redact_on_input(reason), client="cli",
                                            purpose="fetch")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in stream.chunks:
                        f.write(chunk)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                stream.close()
            os.replace(tmp, out)
            return stream.total

    n = _run(go())
    typer.echo(f"{recording_id}: {n} bytes → {out} (已校验 / SHA-256 verified)")


@recordings_app.command("list")
def rec_list(
    case: Optional[str] = typer.Option(None, "--case"),
    agent: Optional[str] = typer.Option(None, "--agent"),
    number: Optional[str] = typer.Option(None, "--number", help="E.164"),
    creditor: Optional[str] = typer.Option(None, "--creditor"),
    from_: Optional[datetime] = typer.Option(None, "--from", help="started at or after (ISO 8601)"),
    to: Optional[datetime] = typer.Option(None, "--to", help="started before (ISO 8601)"),
    unmatched: bool = typer.Option(False, "--unmatched", help="only recordings of unknown calls"),
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(200, "--limit"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Recording metadata, filtered (numbers are shown masked)."""
    flt = RecordingFilter(
        creditors=frozenset({creditor}) if creditor else None,
        case_id=case,
        agent=agent,
        started_from=_aware(from_),
        started_to=_aware(to),
        state="unmatched" if unmatched else None,
        limit=limit,
    )

    async def go() -> list[Any]:
        async with open_vault(config) as (vault, _):
            return await vault.list(Actor("cli", "admin"), flt, number=number)

    for r in _run(go()):
        row = {
            "recording_id": r.recording_id, "creditor": r.creditor, "case_id": r.case_id, "agent": r.agent,
            "number": r.number_masked, "started_at": r.started_at.isoformat(), "duration_s": r.duration_s,
            "size": r.size, "sha256": r.sha256, "retain_until": r.retain_until.isoformat(), "state": r.state,
            "hold": r.hold.reason if r.hold else None,
        }
        if as_json:
            typer.echo(json.dumps(row, ensure_ascii=False))
        else:
            typer.echo("\t".join("-" if v is None else str(v) for k, v in row.items() if k != "sha256"))


def _aware(d: Optional[datetime]) -> Optional[datetime]:
    if d is not None and d.tzinfo is None:
        raise _fail("时间须带时区 / --from/--to need a UTC offset")
    return d


@recordings_app.command("verify")
def rec_verify(
    recording_ids: list[str] = typer.Argument(None, help="default: every recording"),
    incremental: bool = typer.Option(
        False, "--incremental", "-i",
        help="only what was stored since the last completed run, plus a rolling sample; resumes an interrupted run",
    ),
    full_every: int = typer.Option(30, "--full-every", min=1, help="with -i: sample so the whole archive is re-read every N runs (days)"),
    sample: Optional[int] = typer.Option(None, "--sample", min=0, help="with -i: older recordings to re-read this run (overrides --full-every)"),
    restart: bool = typer.Option(False, "--restart", help="with -i: drop an interrupted run and plan a new one"),
    state_file: Optional[Path] = typer.Option(None, "--state", help="with -i: progress file (default <data_dir>/verify-state.json)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar with the rate (MiB/s)"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Decrypt blobs and compare each SHA-256 with the one stored at ingest; check the
    register: its keyed chain, its head, and one entry per destroyed recording.

    With --incremental: what was stored since the last completed run plus a rolling
    sample of older recordings, so daily runs re-read everything every --full-every days;
    an interrupted run (Ctrl-C, a crash) resumes where it stopped."""
    if recording_ids and incremental:
        raise _fail("--incremental 不能与录音编号同用 / --incremental takes no recording ids")

    async def go() -> tuple[list[Any], list[str], dict[str, Any]]:
        from dialer.audit import register_problems
        from dialer.evidence import EvidenceKey

        async with open_vault(config) as (vault, rcfg):
            actor = Actor("cli", "admin")
            if incremental:
                path = state_file or (rcfg.data_dir / "verify-state.json")
                results, stats = await _verify_incremental(vault, actor, path, full_every, sample, restart, progress)
            else:
                ids = recording_ids or [r.recording_id for r in await vault.list(actor, RecordingFilter(limit=None))]
                results, stats = await _verify_ids(vault, actor, ids, progress)
            key = vault.sealer
            assert isinstance(key, EvidenceKey)  # build_vault seals the register with the store's evidence key
            return results, await register_problems(vault.repo, key), stats

    results, chain, stats = _run(go())
    bad = [r for r in results if not r.ok]
    for r in results:
        if not r.ok or not incremental:
            typer.echo(f"{'OK  ' if r.ok else 'FAIL'}\t{r.recording_id}{'' if r.ok else chr(9) + (r.problem or '')}")
    seconds = max(stats["seconds"], 1e-9)
    typer.echo(
        f"共 {len(results)} 条，{len(bad)} 条异常 / {len(results)} checked, {len(bad)} failed"
        f" — {stats['bytes'] / 1024**2:.1f} MiB in {stats['seconds']:.1f} s,"
        f" {stats['bytes'] / 1024**2 / seconds:.1f} MiB/s, {len(results) / seconds:.1f} recordings/s"
    )
    if incremental:
        typer.echo(
            f"新增 {stats['new']} 条，抽检 {stats['sampled']} 条 / incremental: {stats['new']} new since the last run, "
            f"{stats['sampled']} sampled{', resumed an interrupted run' if stats['resumed'] else ''}"
        )
    for problem in chain:
        typer.echo(f"REGISTER\t{problem}")
    typer.echo("destruction register chain: " + ("完整 / OK" if not chain else "已被篡改 / BROKEN"))
    if bad or chain:
        raise typer.Exit(1)


def _progress_bar(enabled: bool, total_recordings: int) -> Any:
    from rich.progress import (
        BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
    )

    return Progress(
        TextColumn("校验 / verify"), BarColumn(), MofNCompleteColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), disable=not enabled or total_recordings == 0, transient=False,
    )


async def _verify_ids(vault: Vault, actor: Actor, ids: list[str], progress: bool) -> tuple[list[Any], dict[str, Any]]:
    import time

    recs = [await vault.get(i, actor) for i in ids]
    results = []
    nbytes = 0
    started = time.perf_counter()
    with _progress_bar(progress, len(recs)) as bar:
        task = bar.add_task("verify", total=sum(r.size for r in recs))
        for rec in recs:
            [res] = await vault.verify(actor, [rec.recording_id])
            results.append(res)
            nbytes += rec.size
            bar.update(task, advance=rec.size)
    return results, {"bytes": nbytes, "seconds": time.perf_counter() - started}


async def _verify_incremental(
    vault: Vault, actor: Actor, path: Path, full_every: int, sample: Optional[int], restart: bool, progress: bool
) -> tuple[list[Any], dict[str, Any]]:
    import time

    from recordings import verify_plan as vp
    from recordings.errors import NoSuchRecording

    state = _load_verify_state(path)
    resumed = state.run is not None and not restart
    if not resumed:
        listed = await vault.list(actor, RecordingFilter(limit=None))
        size = sample if sample is not None else vp.sample_size(len(listed), full_every)
        run = vp.plan(((r.recording_id, r.created_at) for r in listed), state, _now(), sample=size)
        state = vp.VerifyState(state.last_complete, state.cursor, run, state.history)
        _save_verify_state(path, state)
    run = state.run
    assert run is not None
    results = []
    sizes: dict[str, int] = {}
    for rid in vp.remaining(run):
        try:
            sizes[rid] = (await vault.get(rid, actor)).size
        except NoSuchRecording:
            sizes[rid] = 0  # purged since planned: nothing left to read
    started = time.perf_counter()
    saved = started
    try:
        with _progress_bar(progress, len(run.ids)) as bar:
            task = bar.add_task("verify", total=run.bytes_done + sum(sizes.values()), completed=run.bytes_done)
            for rid in vp.remaining(run):
                if sizes[rid]:
                    [res] = await vault.verify(actor, [rid])
                    results.append(res)
                    run = vp.advance(run, rid, res.ok, sizes[rid])
                else:
                    run = vp.advance(run, rid, True, 0)
                bar.update(task, advance=sizes[rid])
                if time.perf_counter() - saved >= 1.0:  # resumable within a second of work
                    _save_verify_state(path, replace(state, run=run))
                    saved = time.perf_counter()
    except BaseException:
        _save_verify_state(path, replace(state, run=run))
        raise
    seconds = time.perf_counter() - started
    _save_verify_state(path, vp.complete(state, run, _now(), seconds))
    return results, {
        "bytes": run.bytes_done, "seconds": seconds, "new": run.new, "sampled": len(run.ids) - run.new, "resumed": resumed,
    }


def _load_verify_state(path: Path) -> Any:
    from recordings import verify_plan as vp

    try:
        return vp.VerifyState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return vp.VerifyState()
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(f"{path}: 校验进度文件无法读取 / verify state unreadable ({exc}); move it away or use --state") from None


def _save_verify_state(path: Path, state: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(state.to_json(), ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)  # a crash mid-write keeps the previous state


@recordings_app.command("purge")
def rec_purge(
    token_file: Optional[Path] = TokenFileOpt,
    request: bool = typer.Option(False, "--request", help="operator (admin): list what is due and ask"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only show what would be destroyed"),
    approve: Optional[str] = typer.Option(None, "--approve", help="purge id to approve (a different person)"),
    creditor: Optional[str] = typer.Option(None, "--creditor", help="limit the request to one creditor"),
    config: Optional[Path] = ConfigOpt,
) -> None:
    """Destruction under dual control: one person requests (an admin), another approves
    (compliance or a supervisor); each acts with their own API token, which names them."""
    if sum([request, dry_run, approve is not None]) != 1:
        raise _fail("须给出 --request、--dry-run 或 --approve 之一 / give one of --request, --dry-run, --approve ID")

    async def go() -> Any:
        async with open_vault_as(config, token_file) as (vault, actor):
            if approve is not None:
                return await vault.approve_purge(approve, actor)
            return await vault.request_purge(actor, creditor=creditor, dry_run=dry_run)

    res = _run(go())
    if approve is not None:
        typer.echo(f"purge {res.purge_id}: destroyed {len(res.destroyed)}, skipped {len(res.skipped)} "
                   f"(requested by {res.requested_by}, approved by {res.approved_by})")
        for rid in res.destroyed:
            typer.echo(f"destroyed\t{rid}")
        for rid in res.skipped:
            typer.echo(f"skipped\t{rid}")
        return
    for r in res.due:
        typer.echo(f"due\t{r.recording_id}\t{r.creditor}\t{r.case_id}\t{r.retain_until.isoformat()}")
    for r in res.held:
        typer.echo(f"held\t{r.recording_id}\t{r.creditor}\t{r.case_id}\t{(r.hold.reason if r.hold else 'case hold')}")
    if res.request is not None:
        typer.echo(f"purge {res.request.purge_id} requested: {len(res.due)} recordings; "
                   f"another person approves with their token: dialgate recordings purge --approve {res.request.purge_id}")
    else:
        typer.echo(f"试运行，未销毁任何录音 / dry run: {len(res.due)} due, {len(res.held)} held")


@recordings_app.command("recover")
def rec_recover(
    config: Optional[Path] = ConfigOpt,
    grace_minutes: float = typer.Option(60.0, "--grace-minutes", help="spare leftovers younger than this (a running ingest); 0 with the service stopped"),
) -> None:
    """Delete leftovers of interrupted ingests (the service also does it at start and every 15 min)."""

    async def go() -> dict[str, int]:
        async with open_vault(config) as (vault, _):
            return await vault.recover(orphan_grace=timedelta(minutes=grace_minutes))

    typer.echo(json.dumps(_run(go())))
