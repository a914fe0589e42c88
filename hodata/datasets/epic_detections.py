"""Epic-Kitchens-100 hand-object detections (Shan et al.'s detector), read without generated code.

The published files (REFERENCE.md §7) are one pickle per video holding a list, ordered by
frame, of protobuf-serialised `Detections` messages. The schema, field by field:

    Detections      { 1 video_id: string, 2 frame_number: int32,
                      3 hands: repeated HandDetection, 4 objects: repeated ObjectDetection }
    HandDetection   { 1 bbox: BBox, 2 score: float, 3 state: enum State,
                      4 object_offset: FloatVector, 5 side: enum Side }
    ObjectDetection { 1 bbox: BBox, 2 score: float }
    BBox            { 1 left, 2 top, 3 right, 4 bottom: float }   (normalised to [0, 1])
    FloatVector     { 1 x, 2 y: float }                             (normalised offset)
    State: NO_CONTACT 0, SELF_CONTACT 1, ANOTHER_PERSON 2, PORTABLE_OBJECT 3, STATIONARY_OBJECT 4
    Side:  LEFT 0, RIGHT 1

This module reads and writes that wire format directly (varints, 32-bit floats and
length-delimited sub-messages are all it uses), so no protobuf package and no generated
`_pb2` file is needed. Unknown fields are skipped, as protobuf readers do, so files written by
a newer schema still decode. Proto3 omits fields at their default value (0, 0.0, empty): a
missing field decodes to that default.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

from hodata.errors import HodataError

HAND_STATES = ("no_contact", "self_contact", "another_person", "portable_object", "stationary_object")
HAND_SIDES = ("left", "right")

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass
class HandDetection:
    box: tuple[float, float, float, float]   # left, top, right, bottom, normalised to [0, 1]
    score: float
    state: str                               # one of HAND_STATES
    side: str                                # "left" | "right"
    object_offset: tuple[float, float] = (0.0, 0.0)  # hand box centre -> contacted object, normalised


@dataclass
class ObjectDetection:
    box: tuple[float, float, float, float]
    score: float


@dataclass
class FrameDetections:
    video_id: str
    frame_number: int                        # 1-based, as the frame files frame_%010d.jpg
    hands: list[HandDetection] = field(default_factory=list)
    objects: list[ObjectDetection] = field(default_factory=list)


class WireFormatError(ValueError):
    """The bytes are not a valid protobuf encoding of the schema above."""


# ------------------------------------------------------------------------------ decoding
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise WireFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireFormatError("varint longer than 10 bytes")


def _fields(data: bytes):
    """(field number, wire type, value) for each field of one message; value is an int for
    varints, 4/8 raw bytes for fixed fields and the payload for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireFormatError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _FIXED32:
            value, pos = data[pos:pos + 4], pos + 4
        elif wire == _FIXED64:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == _BYTES:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        else:
            raise WireFormatError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise WireFormatError("truncated field")
        yield number, wire, value


def _float(wire: int, value) -> float:
    if wire != _FIXED32:
        raise WireFormatError("expected a 32-bit float")
    return struct.unpack("<f", value)[0]


def _int32(value: int) -> int:
    """A varint as int32 (negative int32 values are sign-extended to 64 bits on the wire)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _expect(wire: int, expected: int, what: str) -> None:
    if wire != expected:
        raise WireFormatError(f"{what} has wire type {wire}, expected {expected}")


def _decode_box(data: bytes) -> tuple[float, float, float, float]:
    values = [0.0, 0.0, 0.0, 0.0]
    for number, wire, value in _fields(data):
        if 1 <= number <= 4:
            values[number - 1] = _float(wire, value)
    return tuple(values)


def _decode_vector(data: bytes) -> tuple[float, float]:
    values = [0.0, 0.0]
    for number, wire, value in _fields(data):
        if number in (1, 2):
            values[number - 1] = _float(wire, value)
    return tuple(values)


def _enum(value: int, names: tuple[str, ...], what: str) -> str:
    if not 0 <= value < len(names):
        raise WireFormatError(f"{what} {value} is not one of 0..{len(names) - 1}")
    return names[value]


def _decode_hand(data: bytes) -> HandDetection:
    box, score, state, side, offset = (0.0,) * 4, 0.0, 0, 0, (0.0, 0.0)
    for number, wire, value in _fields(data):
        if number == 1:
            _expect(wire, _BYTES, "hand bbox")
            box = _decode_box(value)
        elif number == 2:
            score = _float(wire, value)
        elif number == 3:
            _expect(wire, _VARINT, "hand state")
            state = value
        elif number == 4:
            _expect(wire, _BYTES, "hand object_offset")
            offset = _decode_vector(value)
        elif number == 5:
            _expect(wire, _VARINT, "hand side")
            side = value
    return HandDetection(box, score, _enum(state, HAND_STATES, "hand state"), _enum(side, HAND_SIDES, "hand side"),
                         offset)


def _decode_object(data: bytes) -> ObjectDetection:
    box, score = (0.0,) * 4, 0.0
    for number, wire, value in _fields(data):
        if number == 1:
            _expect(wire, _BYTES, "object bbox")
            box = _decode_box(value)
        elif number == 2:
            score = _float(wire, value)
    return ObjectDetection(box, score)


def decode_detections(data: bytes) -> FrameDetections:
    """One serialised `Detections` message -> FrameDetections (WireFormatError if malformed)."""
    video_id, frame_number, hands, objects = "", 0, [], []
    for number, wire, value in _fields(bytes(data)):
        if number == 1:
            _expect(wire, _BYTES, "video_id")
            try:
                video_id = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise WireFormatError("video_id is not UTF-8") from exc
        elif number == 2:
            _expect(wire, _VARINT, "frame_number")
            frame_number = _int32(value)
        elif number == 3:
            _expect(wire, _BYTES, "hands")
            hands.append(_decode_hand(value))
        elif number == 4:
            _expect(wire, _BYTES, "objects")
            objects.append(_decode_object(value))
    return FrameDetections(video_id, frame_number, hands, objects)


# ------------------------------------------------------------------------------ encoding
def _put_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _put_varint(number << 3 | wire)


def _put_float(number: int, value: float) -> bytes:
    return _key(number, _FIXED32) + struct.pack("<f", value) if value != 0.0 else b""


def _put_bytes(number: int, payload: bytes) -> bytes:
    return _key(number, _BYTES) + _put_varint(len(payload)) + payload


def _put_enum(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + _put_varint(value) if value else b""


def _encode_box(box) -> bytes:
    return b"".join(_put_float(i + 1, float(v)) for i, v in enumerate(box))


def encode_detections(frame: FrameDetections) -> bytes:
    """FrameDetections -> the `Detections` wire format (proto3: default values are omitted)."""
    out = bytearray()
    if frame.video_id:
        out += _put_bytes(1, frame.video_id.encode("utf-8"))
    if frame.frame_number:
        out += _key(2, _VARINT) + _put_varint(frame.frame_number)
    for hand in frame.hands:
        body = (_put_bytes(1, _encode_box(hand.box)) + _put_float(2, hand.score)
                + _put_enum(3, HAND_STATES.index(hand.state))
                + _put_bytes(4, _put_float(1, hand.object_offset[0]) + _put_float(2, hand.object_offset[1]))
                + _put_enum(5, HAND_SIDES.index(hand.side)))
        out += _put_bytes(3, body)
    for obj in frame.objects:
        out += _put_bytes(4, _put_bytes(1, _encode_box(obj.box)) + _put_float(2, obj.score))
    return bytes(out)


# ------------------------------------------------------------------------------ files
class _BytesListUnpickler(pickle.Unpickler):
    """A detections pickle holds a list of bytes: it needs no class at all, except the codec
    that protocol 2 uses to store bytes."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a detections file holds only bytes")


def load_video_detections(path: str | Path) -> list[FrameDetections]:
    """All frames' detections of one video file `<video_id>.pkl`, in file order.

    HodataError naming the file (and the entry) when it is missing, not a pickle of a list of
    bytes, or an entry is not a valid `Detections` message.
    """
    path = Path(path)
    if not path.is_file():
        raise HodataError(f"detections file {path} not found; download the video's hand-object detections "
                          "(epic-kitchens-100-hand-object-bboxes) into that folder")
    try:
        with open(path, "rb") as f:
            entries = _BytesListUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means the file is not what it should be
        raise HodataError(f"detections file {path} is not a pickled list of serialised Detections ({exc}); "
                          "re-download it") from None
    if not isinstance(entries, (list, tuple)):
        raise HodataError(f"detections file {path} holds a {type(entries).__name__}, not a list of Detections")
    frames = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, (bytes, bytearray)):
            raise HodataError(f"detections file {path} entry {index} is a {type(entry).__name__}, not bytes")
        try:
            frames.append(decode_detections(entry))
        except WireFormatError as exc:
            raise HodataError(f"detections file {path} entry {index} is not a Detections message: {exc}") from None
    return frames


def write_video_detections(path: str | Path, frames: list[FrameDetections]) -> None:
    """Write a detections file in the published layout (a pickled list of serialised messages)."""
    with open(path, "wb") as f:
        pickle.dump([encode_detections(frame) for frame in frames], f, protocol=2)
