"""Reading a request body within a size limit, before and after gzip.

The limit is checked on the bytes received and again on the decompressed
bytes, as they arrive: a 5 MiB gzip body can inflate to gigabytes (a "gzip
bomb"), so it is never decompressed whole before being measured.

aiohttp's server decompresses gzip request bodies itself, a chunk at a time
(`auto_decompress`, on by default): the stream then yields decompressed
bytes and counts the compressed ones in `total_raw_bytes`. A server started
with `auto_decompress=False` hands over the gzip bytes, recognised by the
gzip magic number (a JSON body never starts with it), and this module
inflates them with the same limit.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

READ_CHUNK = 64 * 1024
# A body must arrive within this: a client that trickles bytes would otherwise hold a
# connection and its buffer for as long as it likes.
BODY_READ_SECONDS = 60.0  # the worker passes settings.http_body_timeout_seconds
IDENTITY_ENCODINGS = frozenset({"", "identity"})
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})
GZIP_MAGIC = b"\x1f\x8b"


class BodyError(Exception):
    """A body the handler cannot read; `status` is the HTTP answer."""

    status = 400


class BodyTooLarge(BodyError):
    status = 413


class UnsupportedEncoding(BodyError):
    status = 415


class MalformedEncoding(BodyError):
    status = 400


class BodyTimeout(BodyError):
    status = 408


async def read_body(
    request: web.BaseRequest, max_bytes: int, timeout: float = BODY_READ_SECONDS
) -> bytes:
    """The body, gunzipped when `Content-Encoding: gzip`, at most `max_bytes`
    both as received and as decoded, and within `timeout` seconds."""
    try:
        return await asyncio.wait_for(_read_body(request, max_bytes), timeout)
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {timeout:.0f}s") from None


async def _read_body(request: web.BaseRequest, max_bytes: int) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in IDENTITY_ENCODINGS | GZIP_ENCODINGS:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r} is not supported; send identity or gzip"
        )
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(f"request body is {declared} bytes; the limit is {max_bytes} bytes")
    gzipped = encoding in GZIP_ENCODINGS
    # Read from the stream rather than request.read(): the aiohttp app's own
    # client_max_size (1 MiB by default, set by whoever owns the app) must not
    # decide this endpoint's limit.
    stream = request.content
    received = bytearray()
    try:
        async for chunk in stream.iter_chunked(READ_CHUNK):
            received += chunk
            if stream.total_raw_bytes > max_bytes:
                raise BodyTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
            if len(received) > max_bytes:
                what = "decompressed request body" if gzipped else "request body"
                raise BodyTooLarge(f"{what} exceeds the limit of {max_bytes} bytes")
    except (ContentEncodingError, web.RequestPayloadError) as exc:
        # aiohttp wraps a gzip error met while decompressing in RequestPayloadError.
        raise MalformedEncoding(f"cannot read the request body: {exc}") from None
    if gzipped and received.startswith(GZIP_MAGIC):
        return gunzip_limited(bytes(received), max_bytes)
    return bytes(received)


def gunzip_limited(data: bytes, max_bytes: int) -> bytes:
    """Decompress gzip `data` (one or more members), refusing more than
    `max_bytes` of output without ever producing more than `max_bytes + 1`."""
    out = bytearray()
    pending = data
    while pending:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                out += inflater.decompress(pending, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise BodyTooLarge(
                        f"decompressed request body exceeds the limit of {max_bytes} bytes"
                    )
                pending = inflater.unconsumed_tail
                if inflater.eof or not pending:
                    break
        except zlib.error as exc:
            raise MalformedEncoding(f"body is not valid gzip: {exc}") from None
        if not inflater.eof:
            raise MalformedEncoding("gzip body is truncated")
        # Concatenated gzip members are one valid stream (RFC 1952 §2.2).
        pending = inflater.unused_data
    return bytes(out)
