"""Request bodies under watch: how many are received at once, how many bytes they hold, how slowly they come.

``UploadGuard`` is pure ASGI middleware around every request that has a body:

- at most ``max_uploads`` bodies are being received at once (counted from the app's first read of
  a body until its last byte); one more is answered 503 ``too_many_uploads`` (Retry-After) without
  being read (the server drops what still comes);
- the bytes of all bodies held in memory (from the first byte until the request is answered)
  stay under ``max_buffered_bytes``; a chunk that would pass it ends that request with 503
  ``server_busy``;
- a body that pauses longer than ``idle_timeout``, or that averages less than ``min_upload_rate``
  once it has run for ``idle_timeout``, ends with 408 ``upload_timeout`` and the connection closes.

The limits are raised from the app's ``receive``, so the route's own error handling answers them in
the usual JSON shape.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, unavailable
from .metrics import Metrics
from .settings import Settings

BUSY_RETRY_AFTER = 1  # seconds
MIN_WAIT = 0.05  # seconds: a receive is always given at least this long


def has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length", b"").strip()
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower() or (length.isdigit() and int(length) > 0)


class UploadGuard:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics):
        self.app = app
        self.metrics = metrics
        self.max_uploads = settings.max_uploads
        self.max_buffered = settings.max_buffered_bytes
        self.idle_timeout = settings.idle_timeout
        self.min_rate = settings.min_upload_rate * 1000  # bytes per second
        self.receiving = 0  # bodies not yet received in full
        self.buffered = 0  # bytes of bodies whose requests are not answered yet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        body = _Body(self, receive)
        try:
            await self.app(scope, body.receive, send)
        finally:
            body.close()


class _Body:
    """One request's body as it arrives: its share of the guard's counts, its pace."""

    def __init__(self, guard: UploadGuard, receive: Receive):
        self.guard = guard
        self._receive = receive
        self.started = time.monotonic()
        self.received = 0
        self.held = 0
        self.counted = False  # whether it holds one of the guard's places (from its first read on)
        self.done = False

    def begin(self) -> None:
        """Take a place among the bodies being received, when the app first reads this one."""
        guard = self.guard
        if guard.receiving >= guard.max_uploads:
            self.done = True
            guard.metrics.rejected.labels("too_many_uploads").inc()
            raise unavailable(f"the server is already receiving {guard.receiving} uploads, its limit; retry later",
                              "too_many_uploads", BUSY_RETRY_AFTER)
        guard.receiving += 1
        self.counted = True
        self.started = time.monotonic()

    def finish(self) -> None:
        self.done = True
        if self.counted:
            self.counted = False
            self.guard.receiving -= 1

    def close(self) -> None:
        self.finish()
        self.guard.buffered -= self.held
        self.held = 0

    def _wait(self) -> tuple[float, str]:
        """How long the next chunk may take, and what it means when it does not come."""
        guard = self.guard
        wait, why = guard.idle_timeout, f"no data came for {guard.idle_timeout:g} s"
        if guard.min_rate > 0:
            behind = self.started + guard.idle_timeout + self.received / guard.min_rate - time.monotonic()
            if behind < wait:
                wait = behind
                why = f"it arrived slower than {guard.min_rate / 1000:g} kB/s"
        return max(wait, MIN_WAIT), why

    async def receive(self) -> Message:
        if self.done:
            return await self._receive()
        if not self.counted:
            self.begin()
        wait, why = self._wait()
        try:
            message = await asyncio.wait_for(self._receive(), wait)
        except asyncio.TimeoutError:
            self.finish()
            self.guard.metrics.rejected.labels("upload_timeout").inc()
            raise ApiError(408, f"the upload was too slow: {why}; send the whole request without pausing",
                           "upload_timeout", headers={"Connection": "close"}) from None
        if message["type"] != "http.request":
            self.finish()
            return message
        size = len(message.get("body", b""))
        if self.guard.buffered + size > self.guard.max_buffered:
            self.finish()
            self.guard.metrics.rejected.labels("server_busy").inc()
            raise unavailable("the server holds too many uploads in memory right now; retry later", "server_busy",
                              BUSY_RETRY_AFTER)
        self.guard.buffered += size
        self.held += size
        self.received += size
        if not message.get("more_body", False):
            self.finish()
        return message
