"""Readers for the packed sound archives of two Debian packages, in pure Python.

- Qt binary resource files (``.rcc``, as made by ``rcc -binary``): gcompris-qt-data keeps its
  sounds, images and voices in them. Entries may be stored plain, zlib-compressed (Qt's
  ``qCompress`` layout: a 4-byte big-endian length, then a zlib stream) or zstd-compressed; zstd
  needs the optional ``zstandard`` package (gcompris-qt-data 3.1 in Debian bookworm has none).
- OpenTTD sound catalogues (``opensfx.cat`` in openttd-opensfx): a table of (offset, size) pairs,
  then per sound a length-prefixed description and a RIFF/WAVE file. Like OpenTTD, which reads
  only the ``fmt `` and ``data`` chunks, the reader rebuilds each sound as a clean, complete WAV
  file from those two chunks.

Both readers yield ``(name, bytes)`` pairs and read the whole archive into memory once
(opensfx.cat is 13 MB, the largest gcompris .rcc 5 MB).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from os import PathLike

__all__ = ["UnpackError", "read_opensfx_cat", "read_opensfx_credits", "read_rcc"]

RCC_MAGIC = b"qres"
RCC_COMPRESSED = 0x01
RCC_DIRECTORY = 0x02
RCC_COMPRESSED_ZSTD = 0x04


class UnpackError(ValueError):
    """An archive that is not of the expected format, or is truncated."""


def _read(path: str | PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _zstd_decompress(data: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise UnpackError("zstd-compressed rcc entry: install the 'zstandard' package") from None
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def read_rcc(path: str | PathLike) -> Iterator[tuple[str, bytes]]:
    """Yield ``(resource path, file bytes)`` for every file in a Qt binary resource file.

    Resource paths are the ones the application uses without the leading ``:/`` — for example
    ``gcompris/src/activities/clickgame/resource/sound/bubble.wav`` — and are unique in a file.
    """
    blob = _read(path)
    if len(blob) < 20 or blob[:4] != RCC_MAGIC:
        raise UnpackError(f"{path}: not a Qt binary resource file (no 'qres' magic)")
    version, tree_at, data_at, names_at = struct.unpack_from(">IIII", blob, 4)
    if version not in (1, 2, 3):
        raise UnpackError(f"{path}: rcc format version {version} is not supported")
    node_size = 14 if version == 1 else 22  # version 2 added a 64-bit modification time

    def name_of(offset: int) -> str:
        at = names_at + offset
        (length,) = struct.unpack_from(">H", blob, at)
        return blob[at + 6: at + 6 + 2 * length].decode("utf-16-be")  # skips the 32-bit hash

    def walk(index: int, prefix: str) -> Iterator[tuple[str, bytes]]:
        at = tree_at + index * node_size
        name_offset, flags = struct.unpack_from(">IH", blob, at)
        name = "" if index == 0 else name_of(name_offset)
        here = f"{prefix}/{name}" if prefix else name
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack_from(">II", blob, at + 6)
            for child in range(first, first + count):
                yield from walk(child, here)
            return
        (data_offset,) = struct.unpack_from(">I", blob, at + 10)  # after country, language
        start = data_at + data_offset
        (size,) = struct.unpack_from(">I", blob, start)
        data = blob[start + 4: start + 4 + size]
        if len(data) != size:
            raise UnpackError(f"{path}: entry {here} is truncated")
        if flags & RCC_COMPRESSED_ZSTD:
            data = _zstd_decompress(data)
        elif flags & RCC_COMPRESSED:
            (expected,) = struct.unpack_from(">I", data, 0)
            data = zlib.decompress(data[4:])
            if len(data) != expected:
                raise UnpackError(f"{path}: entry {here} inflates to {len(data)} bytes, not {expected}")
        yield here, data

    try:
        yield from walk(0, "")
    except (struct.error, zlib.error, UnicodeDecodeError) as exc:
        raise UnpackError(f"{path}: corrupt rcc file: {exc}") from None


def _wav_from_riff(riff: bytes, name: str) -> bytes:
    """Rebuild a complete WAV file from the ``fmt `` and ``data`` chunks of a RIFF/WAVE blob."""
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise UnpackError(f"sound {name!r} is not a RIFF/WAVE file")
    fmt = data = None
    at = 12
    while at + 8 <= len(riff) and (fmt is None or data is None):
        tag, size = struct.unpack_from("<4sI", riff, at)
        body = riff[at + 8: at + 8 + size]
        if tag == b"fmt ":
            fmt = body
        elif tag == b"data":
            data = body  # a data size past the end of the blob is cut to what is there
        at += 8 + size + (size & 1)
    if fmt is None or data is None or len(fmt) < 16:
        raise UnpackError(f"sound {name!r} has no usable fmt/data chunks")
    block_align = struct.unpack_from("<H", fmt, 12)[0] or 1
    data = data[: len(data) - len(data) % block_align]
    pad = b"\0" * (len(data) & 1)
    body = b"WAVE" + struct.pack("<4sI", b"fmt ", len(fmt)) + fmt + struct.pack("<4sI", b"data", len(data)) + data + pad
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _opensfx_entries(path: str | PathLike) -> Iterator[tuple[int, str, bytes]]:
    """Yield ``(index, description, RIFF bytes)`` for every entry of an OpenTTD sound catalogue."""
    blob = _read(path)
    if len(blob) < 8:
        raise UnpackError(f"{path}: too short for a sound catalogue")
    (first,) = struct.unpack_from("<I", blob, 0)
    table_size = first & 0x7FFFFFFF  # bit 31 marks OpenTTD's "new format" catalogues
    if table_size == 0 or table_size % 8 or table_size > len(blob):
        raise UnpackError(f"{path}: not an OpenTTD sound catalogue")
    for index in range(table_size // 8):
        offset, size = struct.unpack_from("<II", blob, 8 * index)
        offset &= 0x7FFFFFFF
        entry = blob[offset: offset + size]
        if len(entry) != size or size < 1:
            raise UnpackError(f"{path}: sound {index} is truncated")
        name_len = entry[0]
        description = entry[1: 1 + name_len].split(b"\0", 1)[0].decode("latin-1")
        yield index, description, entry[1 + name_len:]


def _opensfx_name(index: int, description: str) -> str:
    """``NN_title.wav``: the index and the quoted title, lower case, runs of other chars as ``_``."""
    title = description.split('"')[1] if description.count('"') >= 2 else description
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "sound"
    return f"{index:02d}_{slug}.wav"


def read_opensfx_cat(path: str | PathLike) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, WAV file bytes)`` for every sound of an OpenTTD ``.cat`` sound catalogue.

    Names are ``NN_title.wav``, NN being the sound's index in the catalogue (OpenTTD's sound id)
    and the title taken from the catalogue's description, e.g. ``35_modern_car_horn.wav`` or
    ``37_cow.wav``. Entries that hold no audio (opensfx 1.0.3 has two "Unused/Nothing"
    placeholders, 34 and 50) are skipped.
    """
    for index, description, riff in _opensfx_entries(path):
        if not riff:
            continue
        yield _opensfx_name(index, description), _wav_from_riff(riff, description)


def read_opensfx_credits(path: str | PathLike) -> dict[str, str]:
    """Map each name :func:`read_opensfx_cat` yields to the catalogue's description of it (title,
    original file and author, licence)."""
    return {_opensfx_name(i, d): d for i, d, riff in _opensfx_entries(path) if riff}
