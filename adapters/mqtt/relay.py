"""The outbox relay: committed events → broker, at least once, in order per case.

Loop: fetch a batch of unsent events (commit order) → group them by ordering key (the
case) → publish each group strictly one after another, groups in parallel → mark the
acknowledged ones sent → repeat at once if the batch was full, else sleep until
`notify()` (a writer committed new rows) or the slow poll.

Guarantees:
- An event is marked sent only after its PUBACK. A crash between PUBACK and
  `mark_sent` publishes it again: consumers dedupe by `event_id`.
- Event n+1 of a case is never published before event n is acknowledged: a group
  stops at its first failure, and the next batch starts again from the oldest unsent.
- While the broker is away the relay retries with capped, jittered backoff, and tries
  again as soon as the connection is back.

Retention: when the source can `prune_published(limit)` (SqlAlchemyOutboxSource: rows
published longer ago than `[mqtt] published_retention_days`), the relay prunes once
`prune_first_after_s` after start, then every `prune_every_s`. A pass deletes
`prune_batch` rows per write transaction, one transaction per turn of the loop (between
publish batches, so neither the dial path nor publishing waits behind a long delete),
until a batch comes back short; then it logs one `mqtt.relay.pruned` line. A failing
prune is logged and tried again at the next pass; it never stops the relay.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import structlog

from adapters.mqtt.backoff import Backoff
from adapters.mqtt.errors import BrokerUnavailable
from dialer.masking import mask_bytes, mask_text
from adapters.mqtt.ports import EventPublisher, OutboxEvent, OutboxSource
from adapters.mqtt.topics import DEADLETTER, event_topic
from policy.text import Text

log = structlog.get_logger("dialgate.mqtt.relay")

# Retention pruning (see the module docstring). A batch of 1,000 rows keeps each delete
# transaction to milliseconds; a pass clears a backlog of any size batch by batch.
DEFAULT_PRUNE_BATCH = 1_000
DEFAULT_PRUNE_EVERY_S = 300.0
DEFAULT_PRUNE_FIRST_AFTER_S = 30.0  # after start, once startup's own writes are done


class OutboxRelay:
    def __init__(
        self,
        source: OutboxSource,
        publisher: EventPublisher,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 2.0,
        max_parallel_cases: int = 64,
        backoff: Backoff | None = None,
        on_published: Callable[[Sequence[OutboxEvent]], None] | None = None,
        prune_batch: int = DEFAULT_PRUNE_BATCH,
        prune_every_s: float = DEFAULT_PRUNE_EVERY_S,
        prune_first_after_s: float = DEFAULT_PRUNE_FIRST_AFTER_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`monotonic` is the clock that schedules the prune passes (a test injects one)."""
        self._source = source
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._max_parallel = max_parallel_cases
        self._backoff = backoff or Backoff(base=0.2, cap=10.0)
        self._on_published = on_published
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self.published = 0  # acknowledged by the broker, since start
        self.failures = 0  # batches that hit an unavailable broker or store
        if prune_batch < 1:
            raise ValueError("prune_batch must be at least 1")
        self._prune: Callable[[int], Awaitable[int]] | None = getattr(
            source, "prune_published", None
        )
        self._prune_batch = prune_batch
        self._prune_every_s = prune_every_s
        self._prune_first_after_s = prune_first_after_s
        self._monotonic = monotonic
        self._next_prune_at: float | None = None  # set when run() starts
        self._pruning = False  # a pass is under way (its next batch is due at once)
        self._pass_removed = 0
        self._pass_batches = 0
        self.pruned = 0  # published rows deleted, since start
        self.prune_passes = 0  # passes finished (or failed), since start
        self.prune_failures = 0

    @property
    def source(self) -> OutboxSource:
        """The outbox this relay reads (and prunes, if it can)."""
        return self._source

    def notify(self) -> None:
        """New events were committed: relay them now instead of at the next poll.

        Safe to call from the event loop at any time, as often as wanted.
        """
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled."""
        try:
            await self._run()
        finally:
            # A source that claims rows (SqlAlchemyOutboxSource on PostgreSQL) lets go
            # of the ones it did not get to mark, for another relay to publish.
            release = getattr(self._source, "aclose", None)
            if release is not None:
                await release()

    async def _run(self) -> None:
        log.info("mqtt.relay.started", batch_size=self._batch_size)
        waiter = getattr(self._publisher, "wait_connected", None)
        self._next_prune_at = self._monotonic() + self._prune_first_after_s
        while True:
            self._wake.clear()
            # Before the broker check: old rows go even while the broker is away.
            prune_more = await self.prune_step()
            if waiter is not None and not await waiter(timeout=self._poll_interval_s):
                continue  # no broker: do not even read the store
            try:
                count, complete = await self.relay_batch()
            except Exception as exc:  # the store failed: keep going, never die
                self.failures += 1
                delay = self._backoff.next_delay()
                log.warning(
                    "mqtt.relay.store_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            if not complete:  # the broker went away mid-batch
                self.failures += 1
                await self._broker_pause()
                continue
            self._backoff.reset()
            if count >= self._batch_size or prune_more:
                continue
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow our
                # cancellation when the event fires at the same moment.
                async with asyncio.timeout(self._poll_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def prune_step(self) -> bool:
        """Delete one batch of expired published rows if a prune pass is due or under
        way; True when the pass goes on (call again soon). Never raises but for
        cancellation: a failure is logged, and the pass is tried again at the next turn."""
        if self._prune is None:
            return False
        if not self._pruning:
            due = self._next_prune_at
            if due is None or self._monotonic() < due:
                return False
            self._pruning, self._pass_removed, self._pass_batches = True, 0, 0
        try:
            removed = await self._prune(self._prune_batch)
        except Exception as exc:
            self.prune_failures += 1
            # The error only: the statement carries a cutoff and a limit, no payload.
            log.warning(
                "mqtt.relay.prune_failed",
                error=f"{type(exc).__name__}: {exc}",
                removed=self._pass_removed,
                retry_in_s=self._prune_every_s,
            )
            await self._end_prune_pass()
            return False
        self._pass_removed += removed
        self._pass_batches += 1
        self.pruned += removed
        if removed >= self._prune_batch:
            return True
        if self._pass_removed:
            retention = getattr(self._source, "retention", None)
            log.info(
                "mqtt.relay.pruned",
                removed=self._pass_removed,
                transactions=self._pass_batches,
                **({"retention_days": retention.days} if retention is not None else {}),
            )
        await self._end_prune_pass()
        return False

    async def _end_prune_pass(self) -> None:
        self._pruning = False
        self._next_prune_at = self._monotonic() + self._prune_every_s
        self.prune_passes += 1
        async with self._progress:
            self._progress.notify_all()

    async def wait_prune_passes(self, count: int) -> None:
        """Until `count` prune passes in all have ended (wrap it in a timeout)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.prune_passes >= count)

    async def _broker_pause(self) -> None:
        """Back off (capped, jittered), but try again as soon as a connection that was
        lost is back. A failure without a lost connection (a PUBACK timeout) waits the
        whole delay, so nothing spins."""
        delay = self._backoff.next_delay()
        connected = getattr(self._publisher, "connected", None)
        waiter = getattr(self._publisher, "wait_connected", None)
        if waiter is None or connected is None or connected:
            await asyncio.sleep(delay)
            return
        await waiter(timeout=delay)

    async def relay_batch(self) -> tuple[int, bool]:
        """Publish one batch; returns (events acknowledged, whether all were)."""
        events = await self._source.fetch_unsent(self._batch_size)
        if not events:
            return 0, True
        groups: dict[str, list[OutboxEvent]] = {}
        for event in events:
            key = event.ordering_key if event.ordering_key is not None else f"\0{event.event_id}"
            groups.setdefault(key, []).append(event)

        acked: list[OutboxEvent] = []
        failed: list[BaseException] = []
        gate = asyncio.Semaphore(self._max_parallel)

        async def publish_group(group: list[OutboxEvent]) -> None:
            async with gate:
                for event in group:
                    if failed:
                        return  # the broker is away; the next batch starts over
                    try:
                        await self._publish_one(event)
                    except BrokerUnavailable as exc:
                        failed.append(exc)
                        return
                    except Exception as exc:  # unexpected: stop this batch, retry later
                        log.exception("mqtt.relay.publish_failed", event_id=event.event_id)
                        failed.append(exc)
                        return
                    acked.append(event)

        try:
            await asyncio.gather(*(publish_group(g) for g in groups.values()))
        except asyncio.CancelledError:
            # Shutting down: record what the broker already acknowledged, so a restart
            # does not publish it again (best effort; at-least-once either way).
            if acked:
                try:
                    await self._mark(acked)
                except Exception as exc:  # never replace the cancellation
                    log.warning("mqtt.relay.mark_on_shutdown_failed", error=str(exc))
            raise
        if acked:
            await self._mark(acked)
        if failed:
            log.warning(
                "mqtt.relay.broker_unavailable",
                acknowledged=len(acked),
                pending=len(events) - len(acked),
                error=str(failed[0]),
            )
        return len(acked), not failed

    async def _mark(self, acked: list[OutboxEvent]) -> None:
        # Commit order, so a store that advances a cursor sees no gaps.
        acked.sort(key=lambda e: e.position)
        await self._source.mark_sent([e.position for e in acked])
        self.published += len(acked)
        if self._on_published is not None:
            self._on_published(acked)
        async with self._progress:
            self._progress.notify_all()

    async def wait_published(self, count: int) -> None:
        """Until `count` events in all were acknowledged and marked sent (wrap it in a
        timeout)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.published >= count)

    async def _publish_one(self, event: OutboxEvent) -> None:
        payload, masked = mask_bytes(event.payload)
        if masked:
            log.warning("mqtt.relay.masked_phone_numbers", event_id=event.event_id, count=masked)
        try:
            topic = event_topic(event.creditor, event.type)
            # paho refuses some publishes outright (ValueError: bad topic, oversized
            # payload); that is deterministic, so retrying would block the case forever.
            await self._publisher.publish(topic, payload, qos=1)
        except ValueError as exc:
            # A writer bug: keep the event visible on the dead-letter topic instead.
            log.error("mqtt.relay.unpublishable_event", event_id=event.event_id, error=str(exc))
            await self._publisher.publish(
                DEADLETTER, _unpublishable_record(event, str(exc), payload), qos=1
            )


def _unpublishable_record(event: OutboxEvent, error: str, payload: bytes) -> bytes:
    """A dead-letter record (schemas/events/v1/deadletter.schema.json) for an event that
    cannot be routed, with the event itself under `event`."""
    try:
        original = json.loads(payload)
    except ValueError:
        original = None
    return json.dumps(
        {
            "dead_letter_id": event.event_id,
            "reason": "unpublishable-event",
            **Text(f"event cannot be published: {error}", f"事件无法发布：{error}").fields("message"),
            "details": {"event_id": event.event_id, "outbox_position": event.position},
            "topic": f"dialgate/v1/{event.creditor}/events/{event.type}",
            "received_at": datetime.now(UTC).isoformat(),
            "payload_excerpt": mask_text(payload[:1024].decode("utf-8", errors="replace")),
            "event": original,
        },
        ensure_ascii=False,
    ).encode()
