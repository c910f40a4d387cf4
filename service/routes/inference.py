"""The way every inference request takes: queue place, decoding in the pool, the batching worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import Request

from tagger import AudioError, AudioJob, LabelSet, TagResult, steps_per_window

from ..batching import ClientGone, DeadlineExceeded, Engine, QueueFull, Stopped, Ticket
from ..errors import SERVER_ERROR, ApiError, bad_request, from_audio_error, unavailable
from ..metrics import Metrics
from ..settings import Settings

log = logging.getLogger("service.inference")

QUEUE_RETRY_AFTER = 1  # seconds


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


async def run_job(request: Request, engine: Engine, settings: Settings, metrics: Metrics,
                  make_job: Callable[[], AudioJob], task: str) -> TagResult:
    """Decode the upload (``make_job`` runs in the decode pool), queue it, and wait for the result."""
    assert engine.batcher is not None
    started = time.perf_counter()
    deadline = time.monotonic() + settings.request_timeout
    held = 0.0  # seconds of decoded audio this request holds
    ticket = reserve(engine, metrics)
    try:
        try:
            job = await engine.decode(make_job, timeout=deadline - time.monotonic())
        except AudioError as error:
            raise from_audio_error(error) from None
        except ValueError as error:  # bad tag_resolution, label names and the like
            raise bad_request(str(error)) from None
        except MemoryError:
            raise ApiError(413, "the audio is too large to process", "audio_too_large", param="file") from None
        if not engine.hold_audio(job.duration):
            metrics.rejected.labels("audio_held").inc()
            raise unavailable(f"the server holds too much decoded audio right now (its limit is "
                              f"{settings.max_audio_held:g} s); retry later", "server_busy", QUEUE_RETRY_AFTER)
        held = job.duration
        result = await engine.batcher.run(ticket, job, deadline, request.is_disconnected,
                                          getattr(request.state, "request_id", None))
    except DeadlineExceeded:
        metrics.rejected.labels("deadline").inc()
        raise ApiError(504, f"the request took longer than {settings.request_timeout:g} s", "timeout",
                       type=SERVER_ERROR) from None
    except ClientGone:
        raise ApiError(499, "the client disconnected", "client_disconnected") from None
    except Stopped:
        raise unavailable("the server is shutting down", "shutting_down", QUEUE_RETRY_AFTER) from None
    finally:
        ticket.cancel()
        engine.release_audio(held)
    job.model.finish(job, result)  # which audio track was used; silent or too short audio: notes, not tags
    elapsed = time.perf_counter() - started
    metrics.audio_seconds.labels(task).inc(result.duration)
    if result.duration > 0:
        metrics.real_time_factor.labels(task).observe(elapsed / result.duration)
    log.info("inference done", extra={"task": task, "audio_seconds": result.duration,
                                      "seconds": round(elapsed, 3), "windows": job.n_windows})
    return result
