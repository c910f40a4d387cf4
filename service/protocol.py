"""uvicorn's HTTP/1.1 protocol with what a public server needs before a request reaches the app.

``earmark serve`` runs uvicorn with ``http="service.protocol:GuardedH11Protocol"``. On top of
uvicorn's own h11 protocol it:

- gives a client ``idle_timeout`` seconds to send a request's headers in full (counted from the
  connection's start, or from the first byte of the next request on a kept-alive connection); a
  client that sent part of them gets 408 ``header_timeout``, an idle one is closed;
- caps the open connections from one client address (``max_connections_per_client``): one more
  gets 503 ``too_many_connections`` and is closed;
- answers a request that is not valid HTTP (a malformed request line or header, headers too large,
  a bad chunk size) in the service's JSON error shape instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import ApiError, unavailable
from .settings import Settings

log = logging.getLogger("service.protocol")

LINGER_SECONDS = 1.0
_settings: Settings | None = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


class _Connection(h11.Connection):
    """h11's connection, keeping the last protocol error the client caused (uvicorn drops it)."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.last_error = error
            raise


def malformed(error: h11.RemoteProtocolError | None) -> ApiError:
    detail = str(error) if error is not None and str(error) else "it is not valid HTTP/1.1"
    if error is not None and error.error_status_hint == 431:
        return ApiError(431, f"the request headers are too large ({detail}); send smaller headers",
                        "headers_too_large")
    return ApiError(400, f"malformed HTTP request: {detail}", "malformed_request")


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        limit = self.config.h11_max_incomplete_event_size
        self.conn = _Connection(h11.SERVER) if limit is None else _Connection(h11.SERVER, limit)
        self.idle_timeout = settings().idle_timeout
        self.per_client = settings().max_connections_per_client
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request's headers arrived
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if self.per_client and host is not None:
            open_here = sum(1 for c in self.connections if getattr(c, "client", None) and c.client[0] == host)
            if open_here > self.per_client:
                log.warning("too many connections from one client", extra={"client": host, "open": open_here})
                self._refuse(unavailable(f"too many open connections from {host} (the limit is {self.per_client}); "
                                         "close some or retry later", "too_many_connections", 1))
                return
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.conn.their_state is h11.IDLE and data:
            self._partial = True
        super().data_received(data)
        self._watch_headers()

    def send_400_response(self, msg: str) -> None:
        if self.cycle is not None and self.cycle.response_started:  # too late for an answer
            self.transport.close()
            return
        error = self.conn.last_error
        log.warning("malformed HTTP request", extra={"client": self.client and self.client[0], "error": str(error)})
        self._refuse(malformed(error))

    # --- headers that never come -------------------------------------------------------------

    def _watch_headers(self) -> None:
        """Keep a timer running while the connection waits for a request's headers."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._partial = False
            self._stop_header_timer()
        elif self._header_timer is None and (self._partial or self.timeout_keep_alive_task is None):
            self._header_timer = self.loop.call_later(self.idle_timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if not self._partial:
            self.transport.close()  # an idle connection: nothing to answer
            return
        self._refuse(ApiError(408, f"the request headers did not arrive within {self.idle_timeout:g} s",
                              "header_timeout"))

    def _refuse(self, error: ApiError) -> None:
        """Answer ``error`` outside the app and close the connection."""
        self._refused = True
        self._stop_header_timer()
        if self.transport.is_closing():
            return
        self.transport.write(error.raw())
        # Close after a moment, reading (and dropping) what the client still sends: closing at
        # once with unread data makes the kernel reset the connection, and the client may lose
        # the answer.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
