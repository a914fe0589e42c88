import pytest

from hodata.datasets.contact_labels import read_contact_labels
from hodata.errors import HodataError


def test_ranges_prefixes_and_unlabelled(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("session,object,first_frame,last_frame,contact\n5,33,0,9,yes\ns2,o41,4,6,No\n5,33,8,12,y\n")
    labels = read_contact_labels(path)
    assert len(labels) == 13 + 3
    assert labels.lookup("s5_o33", "009") is True and labels.lookup("s5_o33", 12) is True
    assert labels.lookup("s2_o41", 5) is False
    assert labels.lookup("s2_o41", 7) is None and labels.lookup("s1_o1", 0) is None


@pytest.mark.parametrize("body, message", [
    ("session,object,first_frame,contact\n", "lacks column"),
    ("session,object,first_frame,last_frame,contact\n5,33,0,9,maybe\n", "line 2: contact 'maybe'"),
    ("session,object,first_frame,last_frame,contact\n5,x,0,9,yes\n", "line 2: object 'x'"),
    ("session,object,first_frame,last_frame,contact\n5,33,9,0,yes\n", "first_frame 9 > last_frame 0"),
    ("session,object,first_frame,last_frame,contact\n5,33,0,9,yes\n5,33,9,9,no\n", "lines 2 and 3 disagree"),
])
def test_bad_files_name_file_and_line(tmp_path, body, message):
    path = tmp_path / "labels.csv"
    path.write_text(body)
    with pytest.raises(HodataError, match=message) as info:
        read_contact_labels(path)
    assert str(path) in str(info.value)
