"""Encoder for the AWS event-stream framing (``application/vnd.amazon.eventstream``).

``InvokeEndpointWithResponseStream`` answers with a sequence of binary messages that botocore decodes with
``botocore.eventstream.EventStreamBuffer``; botocore only decodes, and the only maintained encoder lives in
awscrt, so this small one writes them. Layout of one message (all integers big-endian)::

    total length (4) | headers length (4) | CRC32 of the previous 8 bytes (4)
    headers: per header 1-byte name length, name, type byte (7 = string), 2-byte value length, value
    payload
    CRC32 of everything above (4)

Call :func:`payload_part` for each chunk of a streamed answer, :func:`exception_event` for an error after the
response has started.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping

_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_STRING_TYPE = 7
_PRELUDE_AND_CRCS = 16
# Conservative limits. botocore's decoder (botocore.eventstream, the only client here) refuses headers over
# 128 KiB and payloads over 24 MiB per message; AWS's C event-stream library caps a header value at 32,767
# bytes and a whole message at 16 MiB. Values are held to the C library's cap and payloads to 16 MiB, so every
# message decodes in botocore (a payload of a full 16 MiB plus its headers would exceed the C library's cap).
MAX_HEADER_VALUE_BYTES = 32767
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

_PAYLOAD_PART_HEADERS: Mapping[str, str] = {
    ":message-type": "event",
    ":event-type": "PayloadPart",
    ":content-type": "application/octet-stream",
}


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """Encode string-valued headers in the order given."""
    out = bytearray()
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"event-stream header name must be 1-255 bytes: {name!r}")
        if len(raw_value) > MAX_HEADER_VALUE_BYTES:
            raise ValueError(f"event-stream header value too long for {name!r}")
        out += bytes((len(raw_name),)) + raw_name + bytes((_STRING_TYPE,))
        out += struct.pack(">H", len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One complete event-stream message with ``headers`` (all strings) and ``payload``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"event-stream payload too large: {len(payload)} bytes")
    raw_headers = encode_headers(headers)
    prelude = _PRELUDE.pack(len(raw_headers) + len(payload) + _PRELUDE_AND_CRCS, len(raw_headers))
    head = prelude + _CRC.pack(zlib.crc32(prelude)) + raw_headers + payload
    return head + _CRC.pack(zlib.crc32(head))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``data`` (botocore yields ``{"PayloadPart": {"Bytes": data}}``)."""
    return encode_message(_PAYLOAD_PART_HEADERS, data)


def exception_event(error_type: str, message: str, error_code: str | None = None) -> bytes:
    """An exception event (e.g. ``ModelStreamError``) that botocore raises as ``EventStreamError``."""
    body: dict[str, str] = {"Message": message}
    if error_code is not None:
        body["ErrorCode"] = error_code
    headers = {
        ":message-type": "exception",
        ":exception-type": error_type,
        ":content-type": "application/json",
    }
    return encode_message(headers, json.dumps(body).encode("utf-8"))
