"""Protocol Buffers wire format: just enough to read (and write) a caffemodel.

A caffemodel is a serialised ``NetParameter`` message. Reading it needs no
compiled schema: the wire format is a sequence of (field number, wire type,
value) records, and the few field numbers that matter are listed in
:mod:`alexnet_kit.pretrained.caffe` (taken from the published message
definitions, not copied from caffe.proto). Packed float arrays are returned
as zero-copy views of the file's bytes, so a 233 MB file parses in well
under a second.

Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited (sub-messages,
strings, packed arrays), 5 fixed 32-bit. Groups (3, 4) are long deprecated
and never appear in Caffe's messages.
"""
from __future__ import annotations

import struct
from typing import Iterator

import numpy as np

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (or are cut short)."""


def read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(buf: memoryview | bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of every record of one message.

    Values: int for varints, bytes-like ``memoryview`` for length-delimited
    fields, raw 4 or 8 bytes for the fixed types.
    """
    buf = memoryview(buf)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == LENGTH:
            n, pos = read_varint(buf, pos)
            if pos + n > end:
                raise WireError(f"field {number} runs past the end of the data ({n} bytes announced, {end - pos} left)")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == FIXED32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == FIXED64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise WireError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def as_float(wire: int, value) -> float:
    if wire == FIXED32:
        return struct.unpack("<f", value)[0]
    if wire == FIXED64:
        return struct.unpack("<d", value)[0]
    raise WireError(f"expected a float, got wire type {wire}")


def as_signed(value: int) -> int:
    """int32/int64 fields encode negatives as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def packed_varints(value) -> list[int]:
    buf = memoryview(value)
    out, pos = [], 0
    while pos < len(buf):
        v, pos = read_varint(buf, pos)
        out.append(as_signed(v))
    return out


def packed_array(value, dtype: str) -> np.ndarray:
    """A packed repeated float/double field as a read-only numpy view (no copy)."""
    itemsize = np.dtype(dtype).itemsize
    if len(value) % itemsize:
        raise WireError(f"packed array of {len(value)} bytes is not a whole number of {itemsize}-byte values")
    return np.frombuffer(value, dtype=dtype)


# -- writing (tests and benchmarks make caffemodels with it) --------------

def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def field_varint(number: int, value: int) -> bytes:
    return key(number, VARINT) + varint(int(value))


def field_bytes(number: int, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return key(number, LENGTH) + varint(len(value)) + bytes(value)


def field_float(number: int, value: float) -> bytes:
    return key(number, FIXED32) + struct.pack("<f", value)


def field_packed_floats(number: int, values: np.ndarray) -> bytes:
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return field_bytes(number, data)


def field_packed_varints(number: int, values) -> bytes:
    return field_bytes(number, b"".join(varint(int(v)) for v in values))
