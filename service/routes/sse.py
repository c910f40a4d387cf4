"""``stream=true`` on ``POST /v1/audio/transcriptions`` and ``/translations``: server-sent events as
each window finishes, in OpenAI's shapes, so a long upload shows text early.

Events (each one ``data: {json}``): ``transcript.text.delta`` (``delta``: the text of a final
segment; all deltas joined are the text), ``transcript.tags`` (Earmark's: a finished tag window,
``start``, ``end``, ``labels``), and last ``transcript.text.done`` (``text``, plus Earmark's
``duration``, ``language`` and ``segments`` count). A failure after the answer started is a
``data: {"error": {...}}`` event, as OpenAI sends it.

The upload goes through a ``StreamJob`` fed piece by piece, as a plain request's (``inference.Feed``):
its windows and its final segments are the same as the whole file's, and it says which segments are
final as it goes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from tagger import AudioError, AudioReader, StreamJob, TranscriptionResult

from ..batching import ClientGone, DeadlineExceeded, Engine, Stopped
from ..errors import SERVER_ERROR, ApiError, from_audio_error
from ..metrics import Metrics
from ..schemas import TagWindowOut
from ..settings import Settings
from .inference import outcome, start

PUMP_SECONDS = 0.05


def event(body: dict) -> bytes:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


async def stream_transcription(request: Request, engine: Engine, settings: Settings, metrics: Metrics,
                               open_job: Callable[[], tuple[AudioReader, StreamJob]], task: str) -> StreamingResponse:
    """Open the upload and queue its job (errors so far are plain HTTP errors), then answer with
    events while it is decoded piece by piece and run."""
    assert engine.batcher is not None
    started = time.perf_counter()
    deadline = time.monotonic() + settings.request_timeout
    feed, run, feeding, held = await start(request, engine, settings, metrics, open_job, deadline)
    job = feed.job
    done = asyncio.create_task(outcome(run, feeding))

    def release(_: asyncio.Task) -> None:  # here, not in ``events``: it may never start (the client left)
        feed.close()
        engine.release_audio(held)

    done.add_done_callback(release)

    def ready(first: list[bool]) -> list[bytes]:
        out = [event({"type": "transcript.tags", **TagWindowOut.of(w).model_dump()}) for w in job.new_tag_windows()]
        for segment in job.new_segments():
            if segment.no_speech or not segment.text.strip():
                continue
            text = segment.text.lstrip() if first[0] else segment.text
            first[0] = False
            out.append(event({"type": "transcript.text.delta", "delta": text}))
        return out

    async def events() -> AsyncIterator[bytes]:
        first = [True]
        try:
            while not done.done():
                await asyncio.wait({done}, timeout=PUMP_SECONDS)
                for chunk in ready(first):
                    yield chunk
            try:
                result = done.result()
            except DeadlineExceeded:
                yield event(ApiError(504, f"the request took longer than {settings.request_timeout:g} s", "timeout",
                                     type=SERVER_ERROR).body())
                return
            except (ClientGone, Stopped):
                return
            except AudioError as error:  # found midway through a long upload: too long, say
                yield event(from_audio_error(error).body())
                return
            except Exception:  # noqa: BLE001 - after the answer started, an error event is all there is
                yield event(ApiError(500, "internal server error", "internal_error", type=SERVER_ERROR).body())
                return
            for chunk in ready(first):
                yield chunk
            assert isinstance(result, TranscriptionResult)
            metrics.audio_seconds.labels(task).inc(result.duration)
            if result.duration > 0:
                metrics.real_time_factor.labels(task).observe((time.perf_counter() - started) / result.duration)
            yield event({"type": "transcript.text.done", "text": result.text, "language": result.language,
                         "duration": result.duration, "segments": len(result.segments)})
        finally:
            if not done.done():
                done.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
