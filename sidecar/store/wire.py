"""Frames between the sidecar and its writer process (and between workers): length-prefixed msgpack.

Each ``Submit`` carries a sequence number; the writer answers with the highest sequence number it
has made durable (cumulative, like the handler protocol's ``Ack``) and the ones that failed.
"""

from __future__ import annotations

import struct

import msgspec

from .batch import WriteBatch

_LENGTH = struct.Struct(">I")


class Submit(msgspec.Struct, array_like=True):
    seq: int
    batch: WriteBatch
    #: The highest sequence number whose failure (for want of room) the client had taken in when
    #: it sent this: a submit past the writer's fence lifts it (see ``writer.py``).
    resume: int = 0


class Committed(msgspec.Struct, array_like=True):
    upto: int
    failed: dict[int, str] = {}
    #: Those of ``failed`` that their own contents made fail (a key LMDB cannot store); the
    #: others failed for want of room or a disk error, and may succeed later.
    refused: list[int] = []


_encoder = msgspec.msgpack.Encoder()
submit_decoder = msgspec.msgpack.Decoder(Submit)
committed_decoder = msgspec.msgpack.Decoder(Committed)


def frame(message: Submit | Committed) -> bytes:
    return frame_bytes(_encoder.encode(message))


def frame_bytes(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove every complete frame's payload from the front of ``buffer``."""
    payloads = []
    pos = 0
    while len(buffer) - pos >= 4:
        (size,) = _LENGTH.unpack_from(buffer, pos)
        if len(buffer) - pos - 4 < size:
            break
        payloads.append(bytes(buffer[pos + 4:pos + 4 + size]))
        pos += 4 + size
    del buffer[:pos]
    return payloads
