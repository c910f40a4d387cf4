"""The way every inference request takes: queue place, decoding in the pool, the batching worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from fastapi import Request

from tagger import SAMPLE_RATE, AudioError, AudioReader, LabelSet, StreamJob, TagResult, steps_per_window

from ..batching import ClientGone, DeadlineExceeded, Engine, QueueFull, Stopped, Ticket
from ..errors import SERVER_ERROR, ApiError, bad_request, from_audio_error, unavailable
from ..metrics import Metrics
from ..settings import Settings

log = logging.getLogger("service.inference")

QUEUE_RETRY_AFTER = 1  # seconds
PIECE_SECONDS = 30.0  # audio an upload decodes in one turn of the decode pool
HOLD_SECONDS = 60.0  # decoded audio an upload holds, waiting for the encoder, before the next piece
FEED_POLL_SECONDS = 0.02


def queue_full(error: Exception | None = None) -> ApiError:
    detail = f" ({error})" if error and str(error) else ""
    return unavailable(f"the server is busy: the request queue is full{detail}; retry later", "queue_full",
                       QUEUE_RETRY_AFTER)


def ensure_room(engine: Engine, metrics: Metrics) -> None:
    """Refuse at once, before the upload is read, when the queue is already full."""
    assert engine.batcher is not None
    if engine.batcher.full():
        metrics.rejected.labels("queue_full").inc()
        raise queue_full()


def check_tag_resolution(value: float) -> None:
    try:
        steps_per_window(value)
    except ValueError as error:
        raise bad_request(str(error), "invalid_value", "tag_resolution") from None


def check_labels(labels: LabelSet | None, names: list[str], param: str) -> None:
    """Unknown class names in include/exclude are the client's mistake: 400, before any work."""
    if not names:
        return
    if labels is None:
        raise bad_request(f"{param} needs a tagging head, and none is loaded", "no_tagging_head", param)
    try:
        labels.indices(names)
    except (KeyError, TypeError) as error:
        message = error.args[0] if error.args else str(error)
        raise bad_request(str(message), "unknown_label", param) from None


def reserve(engine: Engine, metrics: Metrics) -> Ticket:
    """A place in the batcher's queue, or the 503 that says why there is none."""
    try:
        return engine.batcher.reserve()
    except QueueFull as error:
        metrics.rejected.labels("queue_full").inc()
        raise queue_full(error) from None
    except Stopped:
        raise unavailable("the server is shutting down", "shutting_down", QUEUE_RETRY_AFTER) from None


class Feed:
    """An upload decoded piece by piece into its ``StreamJob``: ``PIECE_SECONDS`` at a time in the
    decode pool, and the next piece only once the job holds at most ``HOLD_SECONDS`` of audio that
    waits for the encoder (the batcher drops each window's samples once it is encoded). So a
    request's memory does not grow with the length of its audio, and a long upload takes the decode
    pool in short turns, between other requests'."""

    def __init__(self, reader: AudioReader, job: StreamJob):
        self.reader = reader
        self.job = job
        self.more = True  # the reader has audio left
        self.closed = False
        self._lock = threading.Lock()  # a piece being read and ``close`` never at once

    @property
    def hold_seconds(self) -> float:
        """Decoded audio this request holds at most, in seconds: its whole length when that is short."""
        declared = self.reader.declared
        if not self.more:  # all of it came in the first piece
            return self.job.seconds
        if declared is not None and declared <= HOLD_SECONDS:
            return declared
        return HOLD_SECONDS + PIECE_SECONDS

    def piece(self) -> bool:
        """Decode and feed the next piece (in the decode pool); False once the job has ended."""
        with self._lock:
            try:
                if not self.closed:
                    self.more = self.job.feed_from(self.reader, PIECE_SECONDS)
            finally:
                if self.closed or not self.more:
                    self.reader.close()
        return self.more

    async def run(self, engine: Engine, deadline: float) -> None:
        """Feed to the end. Raises what the reader finds (an ``AudioError``) and ``DeadlineExceeded``."""
        while self.more:
            while len(self.job.samples) > HOLD_SECONDS * SAMPLE_RATE:
                if time.monotonic() > deadline:
                    raise DeadlineExceeded()
                await asyncio.sleep(FEED_POLL_SECONDS)
            await engine.decode(self.piece, timeout=deadline - time.monotonic())
            engine.batcher.wake()

    def close(self) -> None:
        """Let the file go (now, or when the piece being read is done)."""
        self.closed = True
        if self._lock.acquire(blocking=False):
            try:
                self.reader.close()
            finally:
                self._lock.release()


def open_feed(open_job: Callable[[], tuple[AudioReader, StreamJob]]) -> Feed:
    """In the decode pool: the upload opened (header checks) and its first piece fed."""
    feed = Feed(*open_job())
    try:
        feed.piece()
    except BaseException:
        feed.close()
        raise
    return feed


@contextlib.contextmanager
def answers(settings: Settings, metrics: Metrics) -> Iterator[None]:
    """What decoding and running an upload's job can raise, as the answers the client gets."""
    try:
        yield
    except DeadlineExceeded:
        metrics.rejected.labels("deadline").inc()
        raise ApiError(504, f"the request took longer than {settings.request_timeout:g} s", "timeout",
                       type=SERVER_ERROR) from None
    except ClientGone:
        raise ApiError(499, "the client disconnected", "client_disconnected") from None
    except Stopped:
        raise unavailable("the server is shutting down", "shutting_down", QUEUE_RETRY_AFTER) from None
    except AudioError as error:
        raise from_audio_error(error) from None
    except ValueError as error:  # bad tag_resolution, label names and the like
        raise bad_request(str(error)) from None
    except MemoryError:
        raise ApiError(413, "the audio is too large to process", "audio_too_large", param="file") from None


async def start(request: Request, engine: Engine, settings: Settings, metrics: Metrics,
                open_job: Callable[[], tuple[AudioReader, StreamJob]], deadline: float
                ) -> tuple[Feed, asyncio.Task, asyncio.Task, float]:
    """Open the upload and feed its first piece, count the audio it will hold, queue its job: the
    upload's ``Feed``, the batcher's task, the feeding task and the seconds held (to release)."""
    ticket = reserve(engine, metrics)
    try:
        with answers(settings, metrics):
            feed = await engine.decode(open_feed, open_job, timeout=deadline - time.monotonic())
    except BaseException:
        ticket.cancel()
        raise
    held = feed.hold_seconds
    if not engine.hold_audio(held):
        ticket.cancel()
        feed.close()
        metrics.rejected.labels("audio_held").inc()
        raise unavailable(f"the server holds too much decoded audio right now (its limit is "
                          f"{settings.max_audio_held:g} s); retry later", "server_busy", QUEUE_RETRY_AFTER)
    run = asyncio.create_task(engine.batcher.run(ticket, feed.job, deadline, request.is_disconnected,
                                                 getattr(request.state, "request_id", None)))
    feeding = asyncio.create_task(feed.run(engine, deadline))
    return feed, run, feeding, held


async def outcome(run: asyncio.Task, feeding: asyncio.Task) -> TagResult:
    """The job's result, or the first failure of feeding it (bad audio midway) or running it."""
    try:
        await asyncio.wait({run, feeding}, return_when=asyncio.FIRST_EXCEPTION)
        if feeding.done() and feeding.exception() is not None:
            raise feeding.exception()
        return await run
    finally:
        for task in (run, feeding):
            if not task.done():
                task.cancel()


async def run_job(request: Request, engine: Engine, settings: Settings, metrics: Metrics,
                  open_job: Callable[[], tuple[AudioReader, StreamJob]], task: str) -> TagResult:
    """Decode the upload piece by piece (``open_job`` and each piece run in the decode pool) into a
    job the batcher runs meanwhile, and wait for the result."""
    assert engine.batcher is not None
    started = time.perf_counter()
    deadline = time.monotonic() + settings.request_timeout
    feed, run, feeding, held = await start(request, engine, settings, metrics, open_job, deadline)
    try:
        with answers(settings, metrics):
            result = await outcome(run, feeding)
    finally:
        feed.close()
        engine.release_audio(held)
    elapsed = time.perf_counter() - started
    metrics.audio_seconds.labels(task).inc(result.duration)
    if result.duration > 0:
        metrics.real_time_factor.labels(task).observe(elapsed / result.duration)
    log.info("inference done", extra={"task": task, "audio_seconds": result.duration,
                                      "seconds": round(elapsed, 3), "windows": feed.job.n_windows})
    return result
