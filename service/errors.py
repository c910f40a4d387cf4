"""Every error is JSON shaped like OpenAI's: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from tagger import AudioError, AudioTooLongError, EmptyAudioError, UndecodableAudioError

log = logging.getLogger("service.errors")

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """An error answered to the client as JSON with ``status``."""

    def __init__(self, status: int, message: str, code: str, *, type: str = INVALID_REQUEST,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def raw(self) -> bytes:
        """The whole HTTP/1.1 answer as bytes, for a connection that has no request to answer through
        the app (headers that never came, a malformed request, too many connections); it closes."""
        body = json.dumps(self.body()).encode()
        reason = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else "Error"
        lines = [f"HTTP/1.1 {self.status} {reason}", "content-type: application/json",
                 f"content-length: {len(body)}", "connection: close",
                 *(f"{name}: {value}" for name, value in self.headers.items() if name.lower() != "connection")]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def bad_request(message: str, code: str = "invalid_value", param: str | None = None) -> ApiError:
    return ApiError(400, message, code, param=param)


def unavailable(message: str, code: str, retry_after: int) -> ApiError:
    return ApiError(503, message, code, type=SERVER_ERROR, headers={"Retry-After": str(retry_after)})


def from_audio_error(error: AudioError) -> ApiError:
    """Map the model library's audio errors to HTTP: empty 400, too long 413, undecodable 415."""
    code = getattr(error, "code", "audio_error")
    if isinstance(error, EmptyAudioError):
        return ApiError(400, str(error), code, param="file")
    if isinstance(error, AudioTooLongError):
        return ApiError(413, str(error), code, param="file")
    if isinstance(error, UndecodableAudioError):
        return ApiError(415, str(error), code, param="file")
    return ApiError(400, str(error), code, param="file")


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type"}


async def api_error_handler(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    # Nobody reads an answered error's traceback; dropping it (and the error it replaced) frees the
    # request's frames, with their upload and audio, now rather than when the garbage collector runs.
    error.__traceback__ = error.__context__ = error.__cause__ = None
    return error.response()


async def http_error_handler(_request: Request, error: Exception) -> JSONResponse:
    """404, 405 and other HTTP errors raised by routing."""
    assert isinstance(error, StarletteHTTPException)
    kind = SERVER_ERROR if error.status_code >= 500 else INVALID_REQUEST
    message = error.detail if isinstance(error.detail, str) else str(error.detail)
    code = HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
    return ApiError(error.status_code, message, code, type=kind, headers=dict(error.headers or {})).response()


async def validation_error_handler(_request: Request, error: Exception) -> JSONResponse:
    """FastAPI's own parameter validation (query strings, paths): 422 like FastAPI, in OpenAI's shape."""
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    first = problems[0] if problems else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in problems)
    return ApiError(422, message or "invalid request", "validation_error", param=param).response()


async def disconnect_handler(_request: Request, _error: Exception) -> JSONResponse:
    """The client went away mid-upload; nobody reads this answer."""
    return ApiError(400, "the client disconnected before the upload finished", "client_disconnected").response()


async def unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    """A bug, not bad input: log it with its traceback, answer a generic 500."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return ApiError(500, "internal server error", "internal_error", type=SERVER_ERROR).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(ClientDisconnect, disconnect_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with a refused preflight answered in the JSON error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        message = f"CORS preflight refused: {bytes(response.body).decode()}; see EARMARK_CORS_ORIGINS"
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return ApiError(400, message, "cors_rejected", headers=headers).response()
