"""Annotation importers: the real THUMOS-14 and ActivityNet 1.2 annotations -> JSON -> .npy
give back the same arrays; CSV; every malformed input named."""
import json
from pathlib import Path

import numpy as np
import pytest

from feature_extraction.annotations import (read_activitynet_json, read_csv, to_activitynet_json,
                                            write_annotations)
from utils.errors import DataError
from utils.layout import REQUIRED_ANNOTATIONS
from wsad_dataset import SampleDataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL = {"thumos14": SHARED / "thumos14" / "Thumos14reduced-Annotations",
        "activitynet12": SHARED / "activitynet12" / "ActivityNet1.2-Annotations"}


def assert_same_arrays(original: Path, imported: Path):
    for name in REQUIRED_ANNOTATIONS:
        a = np.load(original / f"{name}.npy", allow_pickle=True)
        b = np.load(imported / f"{name}.npy", allow_pickle=True)
        if name == "duration":  # THUMOS stores (V, 1), ActivityNet 1.2 (V,); the import writes (V, 1)
            np.testing.assert_array_equal(a.reshape(-1), b.reshape(-1))
        elif a.dtype == object:
            assert b.dtype == object and len(a) == len(b), name
            assert [list(map(list, x)) if name == "segments" else list(x) for x in a] == \
                   [list(map(list, x)) if name == "segments" else list(x) for x in b], name
        else:
            assert a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("dataset", sorted(REAL))
def test_real_annotations_survive_a_json_round_trip(tmp_path, dataset):
    original = REAL[dataset]
    if not original.is_dir():
        pytest.skip(f"real annotations not found at {original}")
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(to_activitynet_json(original)))
    imported = write_annotations(tmp_path / "imported", read_activitynet_json(path))
    assert_same_arrays(original, imported)


def test_json_accepts_activitynet_13_spellings_and_extra_fields(tmp_path):
    data = {"version": "1.3", "database": {
        "v_a": {"subset": "Training", "duration": 10.0, "fps": 29.97, "url": "x",
                "annotations": [{"segment": [1.0, 2.5], "label": "Run", "label_id": 3, "segment(frames)": [30, 75]}]},
        "v_b": {"subset": "Validation", "duration": 8.0, "fps": 25,
                "annotations": [{"segment": [0.0, 1.0], "label": "Jump"}, {"segment": [2, 3], "label": "Run"}]},
        "v_c": {"subset": "Test", "duration": 5.0, "fps": 30, "annotations": []}}}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ann = read_activitynet_json(tmp_path / "a.json")
    assert ann.subset == ["training", "validation", "testing"]
    assert ann.class_names == ["Jump", "Run"] and ann.labels_all == [["Run"], ["Jump", "Run"], []]
    assert ann.segments[1] == [[0.0, 1.0], [2.0, 3.0]] and ann.fps == [29.97, 25.0, 30.0]
    folder = write_annotations(tmp_path / "Mine-Annotations", ann)
    assert (folder / "Ambiguous_test.txt").read_text() == ""
    np.testing.assert_array_equal(np.load(folder / "original_fps.npy"), [29.97, 25, 30])


def test_csv_import_is_read_by_the_loader(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("video,subset,start,end,label\n"
                   "a,validation,1.0,2.0,Run\na,validation,3,4,Jump\nb,validation,0.5,1.5,Run\n"
                   "c,validation,0,1,Jump\nd,test,2,3,Run\ne,test,,,\n")
    ann = read_csv(csv, durations={v: 6.4 for v in "abcde"})
    assert ann.videos == list("abcde") and ann.labels_all[0] == ["Run", "Jump"] and ann.segments[4] == []
    write_annotations(tmp_path / "Mine-Annotations", ann)
    features = np.empty(5, dtype=object)
    for i in range(5):
        features[i] = np.ones((10, 4), np.float32)
    np.save(tmp_path / "Mine-I3D-JOINTFeatures.npy", features, allow_pickle=True)
    dataset = SampleDataset(tmp_path, "Mine", num_class=2, feature_size=4, max_seqlen=8, num_similar=1, batch_size=2)
    assert dataset.class_names == ["Jump", "Run"] and list(dataset.test_index) == [3, 4]
    assert dataset.labels[0].tolist() == [1, 1] and dataset.segments[1].tolist() == [[0.5, 1.5]]


@pytest.mark.parametrize("content, message", [
    ({"videos": {}}, r'bad.json: expected an ActivityNet-style JSON object with a "database"'),
    ({"database": {"v1": {"subset": "training", "duration": 5,
                          "annotations": [{"segment": [3.0, 1.0], "label": "Run"}]}}},
     r"bad.json: video v1: segment 0 ends before it starts \(3.0 > 1.0\)"),
    ({"database": {"v2": {"subset": "training", "annotations": []}}}, r'bad.json: video v2: has no "duration"'),
    ({"database": {"v3": {"subset": "training", "duration": 5,
                          "annotations": [{"segment": [1, 2], "label": "Swim"}]}}},
     r"bad.json: video v3: label 'Swim' is not in the class list"),
])
def test_bad_json_is_named(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        read_activitynet_json(tmp_path / "bad.json", classlist=["Run"])


def test_bad_csv_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("video,subset,start,end,label\nv1,test,4,2,Run\n")
    with pytest.raises(DataError, match=r"bad.csv: video v1: segment 0 ends before it starts"):
        read_csv(path, durations={"v1": 5})
    path.write_text("video,start,end,label\nv1,1,2,Run\n")
    with pytest.raises(DataError, match="bad.csv: the header must hold .*missing: subset"):
        read_csv(path)
    path.write_text("video,subset,start,end,label\nv1,test,1,2,Run\n")
    with pytest.raises(DataError, match="bad.csv: video v1 has no duration"):
        read_csv(path)


def test_import_annotations_entry_point(tmp_path, capsys):
    import import_annotations

    (tmp_path / "a.json").write_text(json.dumps({"database": {
        "v": {"subset": "Validation", "duration": 3.0, "annotations": [{"segment": [1, 2], "label": "Run"}]}}}))
    assert import_annotations.main([str(tmp_path / "a.json"), "--out", str(tmp_path / "ds"), "--name", "M"]) == 0
    assert np.load(tmp_path / "ds" / "M-Annotations" / "subset.npy").tolist() == [b"validation"]
    (tmp_path / "b.json").write_text("{}")
    assert import_annotations.main([str(tmp_path / "b.json"), "--out", str(tmp_path / "ds"), "--name", "M"]) == 2
    assert "b.json: expected an ActivityNet-style JSON object" in capsys.readouterr().err
