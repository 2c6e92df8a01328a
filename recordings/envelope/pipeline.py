"""`PipelinedEnvelopeWriter`: the same bytes as `EnvelopeWriter`, sealed on the
caller's thread and hashed and written on threads of their own."""

from __future__ import annotations

import queue
import threading
from typing import Callable

from recordings.envelope.ciphers import AES_256_GCM
from recordings.envelope.layout import CHUNK_SIZE, sealed_size
from recordings.envelope.writer import BATCH_BYTES, SealSummary, Stager, Writable, sealing

STAGE_RUN = 1024 * 1024  # plaintext sealed into one lent buffer: a batch may span several


class _Slot:
    """One batch in flight: its plaintext, its sealed form, and how many of the
    threads (hasher, writer) still use it."""

    __slots__ = ("plain", "sealed", "users")

    def __init__(self, cap: int) -> None:
        self.plain = bytearray(cap)
        self.sealed = bytearray(0)  # grown to one sealed batch when first sealed
        self.users = 0


class PipelinedEnvelopeWriter:
    """The same bytes as `EnvelopeWriter`, with the writes on a thread of its own, so
    the caller (an event loop) never waits on the disk.

    The caller copies each piece into a batch buffer; once a batch is full and more
    data follows, it seals it with AES-GCM into the slot's sealed buffer and the
    writer thread writes that to `out` (one call per batch). SHA-256 runs either on
    the caller as each piece arrives (still in cache), or, with `hash_on_worker=True`,
    on a hasher thread of its own that takes each batch as soon as it is full, so
    hashing, encrypting and a blocking write (direct I/O waits for the device) all
    overlap: the way to keep two cores busy. The hasher is not the writer because a
    hash followed by a write on one thread leaves a core idle during every write.
    AES-GCM stays on the caller: it takes one call per chunk, and each call on
    another thread would be a GIL hand-over. Except when `out` lends its buffers
    (`Stager`, the filesystem's direct-I/O staging): then the writer thread seals
    each batch straight into the buffer the disk is written from, since only that
    thread may wait for one to be free, and the copy from a sealed buffer into the
    sink's is gone (the caller is left copying and hashing; AES-GCM holds the GIL
    either way).

    Memory is bounded: at most `depth` batch slots (a plaintext and a sealed buffer
    each), made on demand, so an upload slower than the threads uses two. A slot is
    free again once written and hashed. When every slot is in flight, `write_some`
    takes what fits and returns short, and `on_room` (called from a thread once half
    the slots are back) says when to offer the rest, so an event loop never blocks
    on it. The threads start with the first full batch: a recording of one batch or
    less is sealed and written by `finish` on the calling thread.

    An error on a thread (a failed `out.write`, say) is raised as is by the next
    `write_some`/`write`/`wait_room`/`finish`; `abort` stops the threads.
    """

    def __init__(
        self,
        out: Writable,
        data_key: bytes,
        *,
        recording_id: str,
        key_id: str,
        chunk_size: int = CHUNK_SIZE,
        batch_bytes: int = BATCH_BYTES,
        depth: int = 4,
        hash_on_worker: bool = False,
        on_room: Callable[[], object] | None = None,
        alg: str = AES_256_GCM,
    ) -> None:
        if depth < 2:
            raise ValueError("depth must be at least 2")
        header, self._sealer, self._sha, self._cap = sealing(
            data_key, recording_id, key_id, chunk_size, batch_bytes, alg
        )
        self._out = out
        self._stager = out if isinstance(out, Stager) else None
        self._spare = bytearray(0)  # the writer thread's sealed buffer when the sink lends none
        self._chunk = chunk_size
        self._hash_on_worker = hash_on_worker
        self._depth = depth
        self._low_water = depth // 2  # <= depth - 1: reached whenever the caller waits
        self._allocated = 1
        self._free: list[_Slot] = []
        self._cond = threading.Condition()
        self._on_room = on_room
        self._slot: _Slot | None = _Slot(self._cap)
        self._fill = 0
        self._size = 0
        self._head = b""
        self._error: BaseException | None = None
        self._stop = False
        # (slot, plaintext bytes, final, bytes sealed into the slot or -1: seal on the writer)
        self._writes: queue.SimpleQueue[tuple[_Slot, int, bool, int] | None] = queue.SimpleQueue()
        self._hashes: queue.SimpleQueue[tuple[_Slot, int] | None] = queue.SimpleQueue()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._ended = 0  # threads past their loop
        self._finish_lock = threading.Lock()
        self._finished = False
        out.write(header)
        self._written = len(header)

    # -- caller side ---------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Batches handed to the threads and not yet written and hashed."""
        with self._cond:
            return self._in_flight

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise ValueError("writer already finished")

    def write_some(self, data: bytes | bytearray | memoryview) -> int:
        """Take as much of `data` as fits without waiting; the count taken.

        Short only when every batch slot is in flight: wait for `on_room` (or call
        `wait_room`) and offer the rest again.
        """
        self._check()
        view = memoryview(data)
        if view.itemsize != 1:
            view = view.cast("B")
        n = len(view)
        pos = 0
        cap = self._cap
        hash_here = not self._hash_on_worker
        while pos < n:
            if self._fill == cap:
                # More data follows, so the held batch is not the final one: hand it off.
                with self._cond:
                    if self._free:
                        nxt = self._free.pop()
                    elif self._allocated < self._depth:
                        self._allocated += 1
                        nxt = _Slot(cap)
                    else:
                        break
                self._dispatch(final=False)
                self._slot = nxt
            slot = self._slot
            assert slot is not None
            take = min(cap - self._fill, n - pos)
            part = view[pos : pos + take]
            if hash_here:
                self._sha.update(part)  # while the piece is in cache, before the copy
            slot.plain[self._fill : self._fill + take] = part
            self._fill += take
            pos += take
        if pos and len(self._head) < 16:
            self._head = (self._head + bytes(view[: min(16, pos)]))[:16]
        self._size += pos
        return pos

    def wait_room(self, timeout: float | None = None) -> bool:
        """Block until a batch slot is free; False on timeout. Raises a thread's error."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: bool(self._free) or self._allocated < self._depth or self._error is not None, timeout
            )
        if self._error is not None:
            raise self._error
        return ok

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Blocking form of `write_some`, for callers not on an event loop."""
        view = memoryview(data).cast("B")
        while view:
            view = view[self.write_some(view) :]
            if view and not self.wait_room(timeout):
                raise TimeoutError("sealing worker made no room in time")

    def _seal_slot(self, slot: _Slot, fill: int, final: bool) -> int:
        """AES-GCM of a slot's batch into its sealed buffer; the bytes sealed."""
        need = sealed_size(fill, self._chunk)
        if len(slot.sealed) < need:
            slot.sealed = bytearray(need)  # once per slot: a full batch needs the most
        with memoryview(slot.plain) as p, memoryview(slot.sealed) as s:
            return self._sealer.seal_run(p[:fill], s, final=final)

    def _seal_staged(self, slot: _Slot, fill: int, final: bool) -> int:
        """On the writer thread: AES-GCM of a slot's batch into the sink's own buffers,
        in runs of whole chunks of at most `STAGE_RUN` bytes (or, if it lends none
        that large, sealed and written as usual); the bytes sealed."""
        stager = self._stager
        assert stager is not None
        chunk = self._chunk
        run = max(1, STAGE_RUN // chunk) * chunk
        total = 0
        with memoryview(slot.plain) as p:
            pos = 0
            while True:
                end = min(pos + run, fill)
                last = end == fill
                view = stager.stage(sealed_size(end - pos, chunk))
                if view is None:
                    return total + self._write_sealed(p[pos:fill], final)
                with view:
                    n = self._sealer.seal_run(p[pos:end], view, final=final and last)
                stager.commit(n)
                total += n
                pos = end
                if last:
                    return total

    def _write_sealed(self, plain: memoryview, final: bool) -> int:
        """Seal `plain` into a buffer of the writer's own and write it; the bytes."""
        need = sealed_size(len(plain), self._chunk)
        if len(self._spare) < need:
            self._spare = bytearray(need)
        with memoryview(self._spare) as s:
            n = self._sealer.seal_run(plain, s, final=final)
            self._out.write(s[:n])
        return n

    def _start(self) -> None:
        self._threads.append(threading.Thread(target=self._write_worker, name="envelope-writer", daemon=True))
        if self._hash_on_worker:
            self._threads.append(threading.Thread(target=self._hash_worker, name="envelope-hasher", daemon=True))
        for t in self._threads:
            t.start()

    def _dispatch(self, *, final: bool) -> None:
        slot, fill = self._slot, self._fill
        assert slot is not None
        if not self._threads:
            self._start()
        with self._cond:
            self._in_flight += 1
            slot.users = 2 if self._hash_on_worker else 1
        if self._hash_on_worker:
            self._hashes.put((slot, fill))  # hashed while this thread encrypts it
        n = -1 if self._stager is not None else self._seal_slot(slot, fill, final)
        self._slot = None
        self._fill = 0
        self._writes.put((slot, fill, final, n))

    def _join(self, timeout: float | None) -> bool:
        """Wait for every thread, `timeout` in all; whether they all ended."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._ended == len(self._threads), timeout):
                return False
        for t in self._threads:
            t.join()  # past its last statement: returns at once
        return True

    def _end_queues(self) -> None:
        self._writes.put(None)
        self._hashes.put(None)

    def finish(self, timeout: float | None = None) -> SealSummary:
        """Seal the held batch as the final one, wait for the threads, summarise."""
        with self._finish_lock:
            self._check()
            if not self._threads:
                # Never left the caller's thread: the only batch is done right here.
                slot = self._slot
                assert slot is not None
                n = self._seal_slot(slot, self._fill, True)
                with memoryview(slot.plain) as p, memoryview(slot.sealed) as s:
                    if self._hash_on_worker:
                        self._sha.update(p[: self._fill])
                    self._out.write(s[:n])
                self._written += n
                self._slot = None
            else:
                self._dispatch(final=True)
                self._end_queues()
                if not self._join(timeout):
                    raise TimeoutError("sealing worker did not finish in time")
                if self._error is not None:
                    raise self._error
            self._finished = True
            return SealSummary(
                size=self._size,
                sha256=self._sha.hexdigest(),
                chunks=self._sealer.index,
                blob_size=self._written,
                head=self._head,
            )

    def abort(self, timeout: float | None = 30.0) -> None:
        """Stop the threads (the writer finishes at most the batch in hand) and wait
        up to `timeout` for them; once `stopped`, nothing writes to `out` any more.
        Idempotent; call again to wait longer."""
        self._stop = True
        if timeout is not None and timeout <= 0:
            got = self._finish_lock.acquire(blocking=False)
        else:
            got = self._finish_lock.acquire(timeout=-1 if timeout is None else timeout)
        if not got:
            return  # `finish` is running on another thread; it ends soon: stop is set
        try:
            if self._threads and not self._finished:
                self._end_queues()
            self._finished = True
            if self._threads:
                self._join(timeout)
        finally:
            self._finish_lock.release()

    @property
    def stopped(self) -> bool:
        """Nothing of this writer is running: no `finish` under way on some thread,
        and its threads never started or ended."""
        return not self._finish_lock.locked() and not any(t.is_alive() for t in self._threads)

    # -- threads -------------------------------------------------------------------

    def _signal_room(self) -> None:
        if self._on_room is not None:
            try:
                self._on_room()
            except Exception:  # a closed event loop: nobody is waiting any more
                pass

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc

    def _release(self, slot: _Slot) -> None:
        with self._cond:
            slot.users -= 1
            if slot.users:
                return
            self._in_flight -= 1
            self._free.append(slot)
            self._cond.notify_all()
            # Wake the caller once half the slots are back, not for each one:
            # every wake-up of an event loop costs more than the batch's hash.
            wake = self._error is not None or len(self._free) == self._low_water
        if wake:
            self._signal_room()

    def _write_worker(self) -> None:
        write = self._out.write
        while (item := self._writes.get()) is not None:
            slot, fill, final, n = item
            try:
                if not self._stop and self._error is None:
                    if n < 0:
                        n = self._seal_staged(slot, fill, final)
                    else:
                        with memoryview(slot.sealed) as s:
                            write(s[:n])
                    self._written += n
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._fail(exc)
            finally:
                self._release(slot)
        self._exit()

    def _hash_worker(self) -> None:
        update = self._sha.update
        while (item := self._hashes.get()) is not None:
            slot, fill = item
            try:
                if not self._stop and self._error is None:
                    with memoryview(slot.plain) as p:
                        update(p[:fill])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._fail(exc)
            finally:
                self._release(slot)
        self._exit()

    def _exit(self) -> None:
        with self._cond:
            self._ended += 1
            self._cond.notify_all()
