"""Epic-Kitchens detections: our wire-format reader/writer against the protobuf package.

The oracle builds the published schema (REFERENCE.md §7) as message classes in code with
protobuf's descriptor API and serialises/parses with protobuf's own implementation.
"""

import pickle

import pytest

from hodata.datasets.epic_detections import (
    FrameDetections,
    HandDetection,
    ObjectDetection,
    decode_detections,
    encode_detections,
    load_video_detections,
    write_video_detections,
)
from hodata.errors import HodataError

pb = pytest.importorskip("google.protobuf", reason="protobuf (test extra) is the independent oracle")


def _schema():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="detections_test.proto", package="model.detections",
                                              syntax="proto3")

    def message(name, fields):
        m = file.message_type.add(name=name)
        for number, fname, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("BBox", [(i + 1, n, F.TYPE_FLOAT, opt, None) for i, n in enumerate(("left", "top", "right", "bottom"))])
    message("FloatVector", [(1, "x", F.TYPE_FLOAT, opt, None), (2, "y", F.TYPE_FLOAT, opt, None)])
    for enum_name, values in (("HandState", ("NO_CONTACT", "SELF_CONTACT", "ANOTHER_PERSON", "PORTABLE_OBJECT",
                                              "STATIONARY_OBJECT")), ("HandSide", ("LEFT", "RIGHT"))):
        e = file.enum_type.add(name=enum_name)
        for i, v in enumerate(values):
            e.value.add(name=f"{enum_name.upper()}_{v}", number=i)
    message("HandDetection", [(1, "bbox", F.TYPE_MESSAGE, opt, ".model.detections.BBox"),
                              (2, "score", F.TYPE_FLOAT, opt, None),
                              (3, "state", F.TYPE_ENUM, opt, ".model.detections.HandState"),
                              (4, "object_offset", F.TYPE_MESSAGE, opt, ".model.detections.FloatVector"),
                              (5, "side", F.TYPE_ENUM, opt, ".model.detections.HandSide")])
    message("ObjectDetection", [(1, "bbox", F.TYPE_MESSAGE, opt, ".model.detections.BBox"),
                                (2, "score", F.TYPE_FLOAT, opt, None)])
    message("Detections", [(1, "video_id", F.TYPE_STRING, opt, None), (2, "frame_number", F.TYPE_INT32, opt, None),
                           (3, "hands", F.TYPE_MESSAGE, rep, ".model.detections.HandDetection"),
                           (4, "objects", F.TYPE_MESSAGE, rep, ".model.detections.ObjectDetection")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    desc = pool.FindMessageTypeByName("model.detections.Detections")
    return message_factory.GetMessageClass(desc)


def _example() -> FrameDetections:
    return FrameDetections("P01_11", 1234, hands=[
        HandDetection((0.125, 0.25, 0.5, 0.75), 0.9921875, "portable_object", "right", (0.0625, -0.125)),
        HandDetection((0.5, 0.5, 0.625, 0.875), 0.5, "no_contact", "left"),
    ], objects=[ObjectDetection((0.25, 0.125, 0.375, 0.5), 0.875), ObjectDetection((0.0, 0.0, 0.5, 0.5), 0.25)])


def _assert_same(a: FrameDetections, b: FrameDetections):
    assert (a.video_id, a.frame_number) == (b.video_id, b.frame_number)
    assert len(a.hands) == len(b.hands) and len(a.objects) == len(b.objects)
    for x, y in zip(a.hands, b.hands):
        assert x.box == pytest.approx(y.box) and x.score == pytest.approx(y.score)
        assert (x.state, x.side) == (y.state, y.side)
        assert x.object_offset == pytest.approx(y.object_offset)
    for x, y in zip(a.objects, b.objects):
        assert x.box == pytest.approx(y.box) and x.score == pytest.approx(y.score)


def test_protobuf_encoded_message_decodes_to_the_same_fields():
    Detections = _schema()
    msg = Detections(video_id="P01_11", frame_number=1234)
    h = msg.hands.add(score=0.9921875, state=3, side=1)
    h.bbox.left, h.bbox.top, h.bbox.right, h.bbox.bottom = 0.125, 0.25, 0.5, 0.75
    h.object_offset.x, h.object_offset.y = 0.0625, -0.125
    h2 = msg.hands.add(score=0.5, state=0, side=0)  # defaults: omitted on the wire
    h2.bbox.left, h2.bbox.top, h2.bbox.right, h2.bbox.bottom = 0.5, 0.5, 0.625, 0.875
    for box, score in (((0.25, 0.125, 0.375, 0.5), 0.875), ((0.0, 0.0, 0.5, 0.5), 0.25)):
        o = msg.objects.add(score=score)
        o.bbox.left, o.bbox.top, o.bbox.right, o.bbox.bottom = box
    _assert_same(decode_detections(msg.SerializeToString()), _example())


def test_our_encoding_parses_with_protobuf():
    Detections = _schema()
    msg = Detections()
    msg.ParseFromString(encode_detections(_example()))
    assert msg.video_id == "P01_11" and msg.frame_number == 1234
    assert [h.side for h in msg.hands] == [1, 0] and [h.state for h in msg.hands] == [3, 0]
    assert msg.hands[0].bbox.right == pytest.approx(0.5) and msg.hands[0].object_offset.y == pytest.approx(-0.125)
    assert [o.score for o in msg.objects] == pytest.approx([0.875, 0.25])


def test_unknown_fields_are_skipped():
    data = encode_detections(_example()) + bytes([9 << 3 | 0, 7]) + bytes([10 << 3 | 2, 2, 1, 2])
    _assert_same(decode_detections(data), _example())


def test_file_round_trip_and_frame_order(tmp_path):
    frames = [FrameDetections("P01_11", n, [], []) for n in range(1, 6)]
    frames[2] = _example()
    path = tmp_path / "P01_11.pkl"
    write_video_detections(path, frames)
    back = load_video_detections(path)
    assert [f.frame_number for f in back] == [1, 2, 1234, 4, 5]
    _assert_same(back[2], _example())


@pytest.mark.parametrize("content, message", [
    (b"not a pickle", "not a pickled list"),
    (pickle.dumps({"a": 1}), "holds a dict"),
    (pickle.dumps([b"\xff\xff\xff"]), "entry 0 is not a Detections message"),
    (pickle.dumps([123]), "entry 0 is a int"),
])
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "P01_01.pkl"
    path.write_bytes(content)
    with pytest.raises(HodataError, match=message) as info:
        load_video_detections(path)
    assert str(path) in str(info.value)


def test_a_pickle_that_names_a_class_is_refused_and_runs_nothing(tmp_path):
    path = tmp_path / "P01_01.pkl"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "ran").encode() + b"'\ntR.")
    with pytest.raises(HodataError, match="not a pickled list"):
        load_video_detections(path)
    assert not (tmp_path / "ran").exists()


def test_missing_file(tmp_path):
    with pytest.raises(HodataError, match="not found"):
        load_video_detections(tmp_path / "nope.pkl")
