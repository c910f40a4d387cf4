"""The way every inference request takes: queue place, decoding in the pool, the batching worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from fastapi import Request

from tagger import SAMPLE_RATE, AudioError, AudioJob, LabelSet, TagResult, steps_per_window

from ..batching import ClientGone, DeadlineExceeded, Engine, QueueFull, Stopped
from ..errors import SERVER_ERROR, ApiError, bad_request, from_audio_error, unavailable
from ..metrics import Metrics
from ..settings import Settings

log = logging.getLogger("service.inference")

QUEUE_RETRY_AFTER = 1  # seconds
MIN_TAG_SECONDS = 0.4  # shorter audio gets no sound tags: one pooled step of the encoder
SILENT_LEVEL = 1e-3  # -60 dBFS: a tag window whose samples vary less than this around their mean is silence


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


def honest_tags(samples: np.ndarray, result: TagResult) -> None:
    """Degenerate audio gets a note, not confident tags: audio too short to tag, and tag windows that
    are silent (digital silence, a constant level such as a DC offset, samples that were all NaN)."""
    if not result.tags:
        return
    if result.duration < MIN_TAG_SECONDS:
        for window in result.tags:
            window.labels = []
        for segment in getattr(result, "segments", []):
            segment.tags = []
        result.notes.append(f"the audio is {result.duration:g} s long, too short for sound tags (they need at least "
                            f"{MIN_TAG_SECONDS:g} s), so there are none")
        return
    silent = 0
    for window in result.tags:
        piece = samples[round(window.start * SAMPLE_RATE) : round(window.end * SAMPLE_RATE)]
        if piece.size and float(piece.max()) - float(piece.min()) < 2 * SILENT_LEVEL:
            window.labels = []
            silent += 1
    if silent == len(result.tags):
        result.notes.append("the audio is silent (no level above -60 dBFS once a constant offset is removed), "
                            "so there are no sound tags")
    elif silent:
        result.notes.append(f"{silent} of {len(result.tags)} tag windows are silent (no level above -60 dBFS), "
                            "so they carry no tags")


async def run_job(request: Request, engine: Engine, settings: Settings, metrics: Metrics,
                  make_job: Callable[[], AudioJob], task: str) -> TagResult:
    """Decode the upload (``make_job`` runs in the decode pool), queue it, and wait for the result."""
    assert engine.batcher is not None
    started = time.perf_counter()
    deadline = time.monotonic() + settings.request_timeout
    held = 0.0  # seconds of decoded audio this request holds
    try:
        ticket = engine.batcher.reserve()
    except QueueFull as error:
        metrics.rejected.labels("queue_full").inc()
        raise queue_full(error) from None
    except Stopped:
        raise unavailable("the server is shutting down", "shutting_down", QUEUE_RETRY_AFTER) from None
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
    honest_tags(job.samples, result)
    elapsed = time.perf_counter() - started
    metrics.audio_seconds.labels(task).inc(result.duration)
    if result.duration > 0:
        metrics.real_time_factor.labels(task).observe(elapsed / result.duration)
    log.info("inference done", extra={"task": task, "audio_seconds": result.duration,
                                      "seconds": round(elapsed, 3), "windows": job.n_windows})
    return result
