"""The event-stream encoder, decoded by botocore's own parser (the reference implementation)."""

from __future__ import annotations

import json

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from agent_release.pipelines.runtime.eventstream import (
    encode_message,
    exception_event,
    payload_part,
)


def _decode(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(dict(m.headers), m.payload) for m in buffer]


def test_payload_part_decodes_with_botocore() -> None:
    [(headers, payload)] = _decode(payload_part(b'data: {"x": 1}\n\n'))
    assert headers == {
        ":message-type": "event",
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
    }
    assert payload == b'data: {"x": 1}\n\n'


def test_several_messages_in_one_buffer_and_split_across_reads() -> None:
    stream = payload_part(b"one") + payload_part(b"") + payload_part("zwei ü".encode())
    buffer = EventStreamBuffer()
    payloads = []
    for i in range(0, len(stream), 7):  # arbitrary read sizes, as the HTTP body arrives
        buffer.add_data(stream[i : i + 7])
        payloads.extend(m.payload for m in buffer)
    assert payloads == [b"one", b"", "zwei ü".encode()]


def test_exception_event_headers_and_body() -> None:
    [(headers, payload)] = _decode(exception_event("ModelStreamError", "boom", "500"))
    assert headers[":message-type"] == "exception"
    assert headers[":exception-type"] == "ModelStreamError"
    assert json.loads(payload) == {"Message": "boom", "ErrorCode": "500"}


def test_corrupted_message_fails_checksum() -> None:
    data = bytearray(payload_part(b"hello"))
    data[-6] ^= 0xFF  # flip a payload byte: the message CRC no longer matches
    with pytest.raises(ChecksumMismatch):
        _decode(bytes(data))


def test_rejects_bad_header_names() -> None:
    with pytest.raises(ValueError, match="header name"):
        encode_message({"": "x"}, b"")
    with pytest.raises(ValueError, match="header name"):
        encode_message({"n" * 256: "x"}, b"")


def test_header_values_and_payloads_up_to_their_limits_encode_and_larger_ones_are_refused() -> None:
    # A string header value is at most 32767 bytes (Int16.max, the limit of AWS's event-stream libraries) and
    # the encoder caps a payload at 16 MiB; up to them a message decodes, past them it is refused.
    [(headers, _)] = _decode(encode_message({"h": "v" * 32767}, b""))
    assert headers == {"h": "v" * 32767}
    with pytest.raises(ValueError, match="header value too long"):
        encode_message({"h": "v" * 32768}, b"")
    with pytest.raises(ValueError, match="header value too long"):  # the limit counts UTF-8 bytes
        encode_message({"h": "é" * 16384}, b"")
    [(_, payload)] = _decode(encode_message({}, b"p" * (16 * 1024 * 1024)))
    assert len(payload) == 16 * 1024 * 1024
    with pytest.raises(ValueError, match="payload too large"):
        encode_message({}, b"p" * (16 * 1024 * 1024 + 1))


@given(
    headers=st.dictionaries(
        st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) < 256),
        st.text(max_size=200),
        max_size=5,
    ),
    payload=st.binary(max_size=2000),
)
def test_round_trip_property(headers: dict[str, str], payload: bytes) -> None:
    [(decoded_headers, decoded_payload)] = _decode(encode_message(headers, payload))
    assert decoded_headers == headers
    assert decoded_payload == payload
