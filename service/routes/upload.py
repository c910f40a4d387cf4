"""Multipart uploads parsed from the request stream into memory, with the size limit enforced as bytes arrive.

Starlette's form parser spools files to disk; here nothing uploaded touches the disk, and a body
over the limit is refused (413) as soon as it passes the limit, or at once when its Content-Length
says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from ..errors import ApiError, bad_request

FIELD_LIMIT = 64 * 1024  # bytes in one plain form field
PART_HEADER_LIMIT = 64 * 1024  # bytes in one header line of a part (a long file name is fine)
MAX_PARTS = 64


@dataclass
class Upload:
    """The uploaded file (``None`` when the form had none) and the plain fields, every value of each."""

    file: bytearray | None = None
    filename: str | None = None
    content_type: str | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    misplaced: str | None = None  # the name of a part that carried a file but is not the file field


def missing_file(upload: Upload, file_field: str = "file") -> ApiError:
    """400 for a form without the file part, naming the field a file came under, if one did."""
    if upload.misplaced is not None:
        return bad_request(f"the form has no {file_field!r} part, but a file came as {upload.misplaced!r}: send the "
                           f"audio as {file_field!r}", "missing_file", file_field)
    return bad_request(f"the form has no {file_field!r} part: upload the audio as {file_field!r}", "missing_file",
                       file_field)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the upload is larger than the limit of {limit / 1_000_000:g} MB", "file_too_large",
                    param="file")


class _Collector:
    """python-multipart callbacks that gather the parts of one form."""

    def __init__(self, file_field: str):
        self.file_field = file_field
        self.upload = Upload()
        self.finished = False
        self.parts = 0
        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._name: str | None = None
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._grow(self._header_name, data[start:end]),
            "on_header_value": lambda data, start, end: self._grow(self._header_value, data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def _grow(self, buffer: bytearray, data: bytes) -> None:
        buffer.extend(data)
        if len(buffer) > PART_HEADER_LIMIT:
            raise bad_request(f"a header of a form part is longer than {PART_HEADER_LIMIT // 1024} KiB", "malformed_form")

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise bad_request(f"the form has more than {MAX_PARTS} parts", "too_many_fields")
        self._headers = {}
        self._name = None
        self._data = bytearray()

    def header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_name.clear()
        self._header_value.clear()

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise bad_request("every part of the form needs a Content-Disposition: form-data header with a name",
                              "malformed_form")
        self._name = name.decode("utf-8", "replace")
        if self._name != self.file_field and options.get(b"filename") is not None:
            self.upload.misplaced = self.upload.misplaced or self._name
            self._name = None  # a file under another name: not a text field, dropped
            return
        if self._name == self.file_field:
            if self.upload.file is not None:
                raise bad_request(f"the form has more than one {self.file_field!r} part", "invalid_value",
                                  self.file_field)
            filename = options.get(b"filename")
            self.upload.filename = filename.decode("utf-8", "replace") if filename is not None else None
            self.upload.content_type = self._headers.get("content-type")
            self.upload.file = self._data  # the file's bytes go straight here

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name is None:
            return
        self._data.extend(data[start:end])
        if self._name != self.file_field and len(self._data) > FIELD_LIMIT:
            raise bad_request(f"form field {self._name!r} is larger than {FIELD_LIMIT // 1024} KiB", "field_too_large",
                              self._name)

    def part_end(self) -> None:
        if self._name is None or self._name == self.file_field:
            return
        try:
            value = self._data.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(f"form field {self._name!r} is not UTF-8 text; if it is the audio, send it as "
                              f"{self.file_field!r} (with a file name)", "invalid_value", self._name) from None
        self.upload.fields.setdefault(self._name, []).append(value)

    def end(self) -> None:
        self.finished = True


def _parser(boundary: bytes, callbacks: dict) -> MultipartParser:
    try:  # python-multipart's own limit on a part's header line is 4 KiB: too short for long file names
        return MultipartParser(boundary, callbacks=callbacks, max_header_size=PART_HEADER_LIMIT)
    except TypeError:  # older releases have no such limit (the collector has its own)
        return MultipartParser(boundary, callbacks=callbacks)


async def read_form(request: Request, limit: int, file_field: str = "file") -> Upload:
    """Parse a ``multipart/form-data`` body into memory; 413 once more than ``limit`` bytes arrive."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise bad_request("the request body must be multipart/form-data with a 'file' part", "invalid_content_type")
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad_request("the multipart/form-data Content-Type has no boundary", "malformed_form")
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(limit)

    collector = _Collector(file_field)
    try:
        parser = _parser(boundary, collector.callbacks())
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as error:
        raise bad_request(f"malformed multipart body: {error}", "malformed_form") from None
    if not collector.finished:
        raise bad_request("the multipart body ended before its closing boundary", "malformed_form")
    return collector.upload
