"""Everything that runs off the event loop: model loading, upload decoding, and the batching worker.

A request goes through three stages:

1. ``Batcher.reserve()`` takes a place in the bounded queue (or raises ``QueueFull``: 503).
2. ``Engine.decode()`` runs blocking work in a thread pool: opening an upload
   (``model.reader_job``) and decoding it a piece at a time into its ``StreamJob``
   (``routes/inference.py``'s ``Feed``), or a stream's audio as it comes.
3. ``Batcher.run()`` hands the job to the one worker thread and awaits its result; the worker
   encodes each window as soon as it is planned, and the feeding waits while the job holds more
   than a minute of audio it has not encoded.

The worker keeps up to ``max(max_batch_size, ACTIVE_JOBS)`` jobs active (jobs whose encoded windows
wait for the text decoder, ``decode_batch_size`` of them, are not encoded further and hold no place,
so a request's memory does not grow with its audio): with one window per encoder call (a CPU), a
long upload still takes turns with the others rather than holding the encoder to its end. Each
step it takes windows from the active jobs in turn (round-robin, each job's next windows in
order) until the batch holds ``max_batch_size`` windows, waiting up to ``max_wait`` seconds for other requests when it has
fewer; runs the encoder once over the whole batch (``tagger.encode_step``); then hands each job its
slice, which goes through the tagging head at once. Text decoding never runs on this thread: the
encoded windows wait for the text-decoding thread, which takes waiting windows of every request in
turn (an equal part of the round each, several per request when no window is the next one's
prompt, else one; each round starts one request further on) up to ``decode_batch_size`` and
decodes them in one CTranslate2 call (``tagger.decode_together``); each
request then finishes its own windows (fallback, word timestamps). A job whose client left or whose
deadline passed is dropped before its next window is encoded or decoded, and its decoding stops
between attempts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from tagger import SAMPLE_RATE, AudioJob, EarmarkModel, Share, Slice, decode_together, encode_step, load_model

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("service.batching")

T = TypeVar("T")
POLL_SECONDS = 0.25  # how often a waiting request checks whether its client is still there
ACTIVE_JOBS = 8  # requests encoded in turn, however few windows one encoder call takes


class QueueFull(Exception):
    """No place left in the queue."""


class DeadlineExceeded(Exception):
    """The request ran past its deadline."""


class ClientGone(Exception):
    """The client disconnected while its work waited or ran."""


class Stopped(Exception):
    """The worker shut down before the work finished."""


@dataclass(eq=False)
class Work:
    """One request's job inside the batcher; ``future`` lives on the request's event loop."""

    job: AudioJob
    deadline: float  # time.monotonic()
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    request_id: str | None = None  # for the worker's log lines
    low: bool = False  # a stream's partial text: encoded and decoded only when no other work waits
    abandoned: bool = False  # set by the request side: drop it, nobody waits for it
    failed: bool = False
    finished: bool = False
    counted: bool = False  # its drop is counted in the metrics

    def stopped(self) -> bool:
        """Whether its work should stop now: nobody waits, or the deadline passed."""
        return self.abandoned or self.failed or time.monotonic() > self.deadline

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Called from the worker thread: complete the future on its own loop."""

        def apply() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the loop is closed: the server is gone
            pass


class Ticket:
    """A place in the queue, from admission until the work is submitted (or given back)."""

    def __init__(self, batcher: Batcher):
        self._batcher = batcher
        self.held = True

    def cancel(self) -> None:
        """Give the place back without submitting work; harmless once ``Batcher.run`` took it."""
        if self.held:
            self.held = False
            self._batcher._unreserve()


class Batcher:
    """A bounded queue feeding one worker thread that batches encoder windows across requests."""

    def __init__(self, model: EarmarkModel, *, max_batch_size: int, max_wait: float, queue_size: int,
                 metrics: Metrics, decode_batch_size: int = 16):
        self.model = model
        self.decode_batch_size = decode_batch_size
        self._decoding: list[Work] = []  # jobs with windows waiting for the text decoder, or still being encoded
        self._turn = 0  # which of them the next decoding round starts with
        self._encode_turn = 0  # which active job the next encoder step starts with
        self._text_thread = threading.Thread(target=self._decode_loop, name="earmark-text", daemon=True)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.queue_size = queue_size
        self.metrics = metrics
        self._cond = threading.Condition()
        self._pending: deque[Work] = deque()
        self._reserved = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="earmark-batcher", daemon=True)

    # --- the request side (event loop) -------------------------------------------------------

    @property
    def depth(self) -> int:
        """Requests admitted and not yet taken up by the worker."""
        return self._reserved + len(self._pending)

    def full(self) -> bool:
        return self.depth >= self.queue_size

    def reserve(self) -> Ticket:
        with self._cond:
            if self._stopping:
                raise Stopped("the server is shutting down")
            if self.depth >= self.queue_size:
                raise QueueFull(f"{self.depth} requests are already waiting (queue size {self.queue_size})")
            self._reserved += 1
            self.metrics.queue_depth.set(self.depth)
        return Ticket(self)

    def _unreserve(self) -> None:
        with self._cond:
            self._reserved -= 1
            self.metrics.queue_depth.set(self.depth)

    async def run(self, ticket: Ticket, job: AudioJob, deadline: float,
                  disconnected: Callable[[], Awaitable[bool]], request_id: str | None = None, low: bool = False) -> Any:
        """Queue ``job`` on ``ticket``'s place and wait for its result, watching the deadline and the client.
        ``low``: work that may wait while any other has windows to encode or decode (a stream's partials)."""
        loop = asyncio.get_running_loop()
        work = Work(job=job, deadline=deadline, future=loop.create_future(), loop=loop, request_id=request_id, low=low)
        with self._cond:
            if not ticket.held:
                raise RuntimeError("the ticket was already used or cancelled")
            if self._stopping:
                raise Stopped("the server is shutting down")
            ticket.held = False
            self._reserved -= 1
            self._pending.append(work)
            self.metrics.queue_depth.set(self.depth)
            self._cond.notify_all()  # the batching worker and the text-decoding thread share this condition
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded()
                done, _ = await asyncio.wait({work.future}, timeout=min(POLL_SECONDS, remaining))
                if done:
                    return work.future.result()
                if await disconnected():
                    raise ClientGone()
        finally:
            if not work.future.done():
                self._abandon(work)
            del work  # the same cycle as in Engine.decode, through work.future (and work.job's audio)

    def wake(self) -> None:
        """New windows are planned (a stream's audio came): the worker looks at once."""
        with self._cond:
            self._cond.notify_all()

    def _abandon(self, work: Work) -> None:
        work.abandoned = True
        work.future.cancel()
        with self._cond:
            if work in self._pending:
                self._pending.remove(work)
                self._count_drop(work, "abandoned")
                self.metrics.queue_depth.set(self.depth)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._text_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for work in pending + self._decoding:
            work.settle(error=Stopped("the server is shutting down"))
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._text_thread.is_alive():
            self._text_thread.join(timeout)

    # --- the worker thread -------------------------------------------------------------------

    def _loop(self) -> None:
        active: list[Work] = []
        while True:
            self.metrics.active_jobs.set(len(active))
            with self._cond:
                while not active and not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    break
                self._admit(active)
                self._wait_for_more(active)
            active = [work for work in active if self._still_wanted(work)]
            for work in [w for w in active if w.job.encoded_all]:  # a stream that ended after its last window
                active.remove(work)
                self._schedule_decoding(work)
            self.metrics.active_jobs.set(len(active))
            if not active:
                continue
            if not self.plan(active):  # every job waits for the text decoder
                with self._cond:
                    self._cond.wait(POLL_SECONDS)
                continue
            try:
                self._step(active)
            except Exception as error:  # a bug here must not leave requests hanging
                log.exception("a batching step failed")
                for work in active:
                    work.settle(error=error)
                active = []
        for work in active:
            work.settle(error=Stopped("the server is shutting down"))

    def _admit(self, active: list[Work]) -> None:
        """Move queued work into the active set, up to one job per batch slot and at least
        ``ACTIVE_JOBS`` (lock held); jobs that wait for the text decoder hold no slot."""
        while self._pending and sum(self._encodable(work) for work in active) < max(self.max_batch_size, ACTIVE_JOBS):
            active.append(self._pending.popleft())
        self.metrics.queue_depth.set(self.depth)

    def _wait_for_more(self, active: list[Work]) -> None:
        """Micro-batching: give other requests up to ``max_wait`` to join a batch that is not full (lock held)."""
        end = time.monotonic() + self.max_wait
        while not self._stopping and len(active) < self.max_batch_size and windows_left(active) < self.max_batch_size:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
            self._admit(active)

    def _encodable(self, work: Work) -> bool:
        """Whether the job may have windows encoded now: it has one (a stream may wait for audio) and
        does not wait for the text decoder."""
        return work.job.next_window < work.job.n_windows and work.job.undecoded < self.decode_batch_size

    def _still_wanted(self, work: Work) -> bool:
        if work.abandoned:
            self._count_drop(work, "abandoned")
            return False
        if time.monotonic() > work.deadline:
            self._count_drop(work, "deadline")
            work.settle(error=DeadlineExceeded())
            return False
        return True

    def plan(self, active: list[Work]) -> list[tuple[Work, int, int]]:
        """Round-robin over the active jobs, one window at a time: ``(work, first window, count)``.

        A job whose encoded windows already wait for the text decoder (``decode_batch_size`` of them)
        is not encoded further until the decoder takes some: its memory stays bounded however long
        its audio is. Each step starts one job further on than the last, so that with small batches
        (one window per call on a CPU) a long job does not keep a short one waiting until it is done."""
        counts = {id(work): 0 for work in active}
        room = self.max_batch_size
        start = self._encode_turn % len(active) if active else 0
        ordered = active[start:] + active[:start]
        for group in ([w for w in ordered if not w.low], [w for w in ordered if w.low]):  # partials last
            while room:
                took = False
                for work in group:
                    job, count = work.job, counts[id(work)]
                    if room and job.next_window + count < job.n_windows and job.undecoded + count < self.decode_batch_size:
                        counts[id(work)] = count + 1
                        room -= 1
                        took = True
                if not took:
                    break
        return [(work, work.job.next_window, counts[id(work)]) for work in active if counts[id(work)]]

    def _step(self, active: list[Work]) -> None:
        """One encoder call over a batch of windows, then each job's head on its slice; its text
        decoding goes to the decoding threads."""
        plan = self.plan(active)
        self._encode_turn += 1
        slices = [Slice(work.job, first, count) for work, first, count in plan]
        try:
            started = time.perf_counter()
            parts = encode_step(self.model.backbone, slices)
            self.metrics.encoder_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_windows.observe(sum(s.count for s in slices))
            self.metrics.batch_requests.observe(len(plan))
        except Exception as error:  # fail these requests, keep the worker alive
            log.exception("encoder call failed for a batch of %d requests", len(plan),
                          extra={"request_ids": [work.request_id for work, _, _ in plan]})
            for work, _, _ in plan:
                work.settle(error=error)
                active.remove(work)
            return
        for (work, first, _), part in zip(plan, parts):
            if work.abandoned:
                continue  # dropped on the next step
            try:
                work.job.take(first, part)
            except Exception as error:  # noqa: BLE001 - one request's failure must not stop the others
                self._fail(work, error)
                active.remove(work)
                continue
            if work.job.encoded_all:
                active.remove(work)  # its encoder work is done; the decoding threads finish it
            self._schedule_decoding(work)

    def _schedule_decoding(self, work: Work) -> None:
        """Hand the job's encoded windows to the text-decoding thread, or settle it when all is done."""
        if work.job.decoded_all:
            self._finish(work)
            return
        with self._cond:
            if work not in self._decoding:
                self._decoding.append(work)
            self._cond.notify_all()

    def _finish(self, work: Work) -> None:
        with self._cond:
            if work.finished or work.failed:
                return
            work.finished = True
        try:
            work.settle(result=work.job.result())
        except Exception as error:  # noqa: BLE001 - one request's failure must not stop the others
            self._fail(work, error)

    def _decode_loop(self) -> None:
        """The text-decoding thread: rounds over every job with windows waiting, in turn."""
        while True:
            with self._cond:
                while not self._stopping and not any(w.job.undecoded or w.stopped() for w in self._decoding):
                    self._cond.wait(POLL_SECONDS)
                if self._stopping:
                    return
                waiting = list(self._decoding)
            # Each round starts one request further on, and each request with windows waiting gets an
            # equal part of the round: one request's many windows never keep the others out of it.
            shares, room = [], self.decode_batch_size
            start = self._turn % len(waiting) if waiting else 0
            self._turn += 1
            waiting = waiting[start:] + waiting[:start]
            waiting = [w for w in waiting if not w.low] + [w for w in waiting if w.low]  # partials take what is left
            fair = -(-room // max(1, sum(1 for w in waiting if w.job.undecoded and not w.stopped() and not w.low)))
            for work in waiting:
                if work.stopped():
                    self._drop(work)
                elif room > 0 and work.job.undecoded:
                    share = work.job.share(min(room, fair, self.model.decode_batch_size), work.stopped)
                    if share is not None:
                        shares.append((work, share))
                        room -= len(share.windows)
            self._decode_round(shares)
            with self._cond:
                self._cond.notify_all()  # the encoder may go on with jobs that waited for the decoder
            for work, _ in shares:
                if work.job.decoded_all and not work.failed:
                    self._finish(work)
            with self._cond:
                self._decoding = [w for w in self._decoding if not (w.finished or w.failed)]

    def _decode_round(self, shares: list[tuple[Work, Share]]) -> None:
        """One decoding call over the shares of several jobs; one request's failure fails only that
        request (a failed shared call is retried for each job alone)."""
        if not shares:
            return
        started = time.perf_counter()
        try:
            decode_together([share for _, share in shares])
        except Exception:  # noqa: BLE001 - a shared call failed before any share was finished: each alone
            for _, share in shares:
                try:
                    decode_together([share])
                except Exception as error:  # noqa: BLE001
                    share.error = error
        for work, share in shares:
            if share.error is not None:
                self._fail(work, share.error)
        self.metrics.decoder_seconds.observe(time.perf_counter() - started)
        self.metrics.decoder_windows.observe(sum(len(share.windows) for _, share in shares))

    def _count_drop(self, work: Work, reason: str) -> None:
        """Count a request's dropped work once, whichever thread lets go of it first."""
        if not work.counted:
            work.counted = True
            self.metrics.dropped.labels(reason).inc()

    def _drop(self, work: Work) -> None:
        with self._cond:
            if work.failed or work.finished:
                return
            work.failed = True
        self._count_drop(work, "abandoned" if work.abandoned else "deadline")
        if not work.abandoned:
            work.settle(error=DeadlineExceeded())

    def _fail(self, work: Work, error: Exception) -> None:
        log.error("decoding a request failed: %s", error, exc_info=error, extra={"request_id": work.request_id})
        work.failed = True
        work.settle(error=error)


def windows_left(active: list[Work]) -> int:
    return sum(work.job.n_windows - work.job.next_window for work in active)


def encoder_batch_size(settings: Settings, model: EarmarkModel) -> int:
    """EARMARK_MAX_BATCH_SIZE, or by device: on a CPU one window per encoder call (batching windows
    of several requests lowered throughput there: bench/bench_service.py), on a GPU 8."""
    if settings.max_batch_size is not None:
        return settings.max_batch_size
    return 8 if torch.device(model.device).type == "cuda" else 1


class Engine:
    """The served model and what runs it: loads in a background thread, then decodes and batches.

    ``state`` is "loading", "ready" or "failed"; ``model`` and ``batcher`` are set once ready.
    """

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.state = "loading"
        self.error: str | None = None
        self.model: EarmarkModel | None = None
        self.batcher: Batcher | None = None
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="earmark-decode")
        self.audio_held = 0.0  # seconds of decoded audio that requests hold (changed on the event loop only)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def start_loading(self) -> None:
        threading.Thread(target=self._load, name="earmark-load", daemon=True).start()

    def _load(self) -> None:
        settings = self.settings
        try:
            if settings.load_delay and self._closed.wait(settings.load_delay):
                return
            if settings.threads:
                torch.set_num_threads(settings.threads)
            started = time.perf_counter()
            model = load_model(settings.model, head=settings.head, device=settings.device,
                               compute_type=settings.compute_type)
            if settings.warmup:  # the first call pays for lazy setup (tokenizer, kernels): not a client
                model.transcribe(np.zeros(SAMPLE_RATE, np.float32), language="en", temperature=0.0,
                                 tags=model.head is not None)
            batcher = Batcher(model, max_batch_size=encoder_batch_size(settings, model), max_wait=settings.max_wait_ms / 1000,
                              queue_size=settings.queue_size, metrics=self.metrics,
                              decode_batch_size=settings.decode_batch_size)
            if self._closed.is_set():
                return
            batcher.start()
            self.model, self.batcher = model, batcher
            self.state = "ready"
            self.metrics.model_ready.set(1)
            log.info("model ready", extra={"model": model.name, "head": model.head_name, "device": str(model.device),
                                           "load_seconds": round(time.perf_counter() - started, 2)})
        except Exception as error:  # reported through /readyz
            self.error = f"{type(error).__name__}: {error}"
            self.state = "failed"
            log.exception("loading the model failed")

    async def decode(self, function: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run ``function`` (opening or decoding an upload, feeding a stream) in the decode thread pool."""
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded()
        future = asyncio.wrap_future(self._pool.submit(function, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded() from None
        except ValueError as error:  # bad input (AudioError is one), an answer to the client, not a bug:
            # drop the frames below this one. They hold what the decoding held (hundreds of MB of
            # audio, say), and asyncio's keep the future, which keeps this exception: a cycle that
            # only the garbage collector frees, whenever it happens to run.
            error.__traceback__ = None
            raise
        finally:
            del future  # the same cycle through this frame

    def hold_audio(self, seconds: float) -> bool:
        """Count ``seconds`` of decoded audio against ``max_audio_held``; False when they do not fit
        (a request alone always fits)."""
        if self.audio_held and self.audio_held + seconds > self.settings.max_audio_held:
            return False
        self.audio_held += seconds
        return True

    def release_audio(self, seconds: float) -> None:
        self.audio_held -= seconds

    def close(self) -> None:
        self._closed.set()
        if self.batcher is not None:
            self.batcher.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
