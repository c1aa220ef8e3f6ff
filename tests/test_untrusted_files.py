"""Files from other people: a dataset file cannot run code, a video name cannot leave its
folder, and an output is written whole or not at all (utils/layout.py, utils/atomic.py)."""
import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import convert_features
import import_annotations
import localize
import main as main_module
import test as test_module
from dataset.make_demo import make_demo_dataset
from feature_extraction.annotations import read_activitynet_json, read_csv
from inference import BANK_KEY
from utils import atomic
from utils.atomic import atomic_write, save_npy, write_json, write_text
from utils.cas_folder import write_cas_folder
from utils.errors import DataError, OutputError
from utils.layout import REQUIRED_ANNOTATIONS, check_video_name, file_in, load_npy, video_name_problem
from wsad_dataset import SampleDataset

D, C, M, N = 16, 3, 3, 24
FLAGS = ["--num-class", str(C), "--feature-size", str(D), "--max-seqlen", str(N), "--num-exemplars", str(M),
         "--device", "cpu"]
NAME = "Thumos14reduced"
DATASET_FILES = ("features", *REQUIRED_ANNOTATIONS)


class RunsCode:
    """A pickle payload that, when unpickled by an unrestricted unpickler, creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(marker: Path, length: int) -> np.ndarray:
    """An object array of ``length`` entries whose first one runs code when unpickled."""
    array = np.empty(length, dtype=object)
    for i in range(length):
        array[i] = np.zeros((2, D), np.float32)
    array[0] = RunsCode(marker)
    return array


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    data = make_demo_dataset(root / "demo", num_train=12, num_test=6, num_class=C, feature_size=D, seed=2)
    argv = ["--path-dataset", str(data), *FLAGS, "--lr", "1e-3", "--max-iter", "11", "--interval", "10",
            "--output-dir", str(root / "runs"), "--model-name", "tiny"]
    assert main_module.main(argv) == 0
    best = root / "runs" / "tiny" / "best.pt"
    without_bank = root / "no_bank.pt"
    state = torch.load(best, weights_only=True)
    del state[BANK_KEY]
    torch.save(state, without_bank)
    return data, best, without_bank


def poisoned_copy(data: Path, which: str, out: Path) -> tuple[Path, Path]:
    """A copy of the demo dataset with ``which`` (features or an annotation file) replaced by a
    crafted pickle; the marker file its code would create."""
    shutil.copytree(data, out)
    marker = out.parent / f"{out.name}.ran"
    length = len(np.load(data / f"{NAME}-Annotations" / "videoname.npy"))
    path = (out / f"{NAME}-I3D-JOINTFeatures.npy" if which == "features"
            else out / f"{NAME}-Annotations" / f"{which}.npy")
    np.save(path, crafted(marker, length), allow_pickle=True)
    return path, marker


def test_the_crafted_pickle_runs_code_when_loaded_unrestricted(tmp_path):
    """The payload of these tests is real: numpy's own loader runs it."""
    marker = tmp_path / "ran"
    np.save(tmp_path / "x.npy", crafted(marker, 3), allow_pickle=True)
    np.load(tmp_path / "x.npy", allow_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize("which", DATASET_FILES)
def test_main_and_test_py_refuse_a_crafted_pickle_in_every_dataset_file(demo, tmp_path, capsys, which):
    data, best, _ = demo
    path, marker = poisoned_copy(data, which, tmp_path / "data")
    assert main_module.main(["--path-dataset", str(tmp_path / "data"), *FLAGS, "--max-iter", "2",
                             "--output-dir", str(tmp_path / "runs")]) == 2
    assert test_module.main(["--pretrained-ckpt", str(best), "--path-dataset", str(tmp_path / "data"),
                             "--output", str(tmp_path / "t")]) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    assert err.count(f"{path}: refused to load") == 2 and "posix.system" in err


@pytest.mark.parametrize("which", ["features", "videoname", "segments"])
def test_localize_drawing_a_bank_and_the_store_converter_refuse_it(demo, tmp_path, capsys, which):
    data, _, without_bank = demo
    path, marker = poisoned_copy(data, which, tmp_path / "data")
    features = tmp_path / "video.npy"
    np.save(features, np.ones((30, D), np.float32))
    assert localize.main(["--pretrained-ckpt", str(without_bank), str(features), "--path-dataset",
                          str(tmp_path / "data"), "--output", str(tmp_path / "l")]) == 2
    if which != "segments":  # the converter reads the video names and the features only
        assert convert_features.main(["--path-dataset", str(tmp_path / "data")]) == 2
    assert not marker.exists()
    assert f"{path}: refused to load" in capsys.readouterr().err


def test_import_annotations_refuses_a_crafted_class_list(tmp_path, capsys):
    marker = tmp_path / "ran"
    np.save(tmp_path / "classlist.npy", crafted(marker, 2), allow_pickle=True)
    (tmp_path / "a.csv").write_text("video,subset,start,end,label,duration\nv1,test,1,2,x,5\n")
    assert import_annotations.main([str(tmp_path / "a.csv"), "--out", str(tmp_path / "out"), "--name", "X",
                                    "--classlist", str(tmp_path / "classlist.npy")]) == 2
    assert not marker.exists()
    assert "refused to load class list" in capsys.readouterr().err


def test_the_real_annotation_folders_read_as_numpy_reads_them(thumos_annotations, activitynet_annotations):
    for folder in (thumos_annotations, activitynet_annotations):
        for path in sorted(folder.glob("*.npy")):
            mine, numpy_s = load_npy(path), np.load(path, allow_pickle=True)
            assert mine.dtype == numpy_s.dtype and mine.shape == numpy_s.shape, path
            for a, b in zip(mine.reshape(-1), numpy_s.reshape(-1)):
                assert type(a) is type(b) and np.array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))


def test_released_format_features_and_nested_arrays_still_load(tmp_path):
    """The released features: an object array of float32 (T_i, D) arrays; also numpy scalars,
    bytes and str lists, as the annotations hold."""
    array = np.empty(4, dtype=object)
    array[0], array[1] = np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((1, 2), np.float64)
    array[2], array[3] = [b"BaseballPitch", "Billiards"], [[np.float64(1.5), 2.0]]
    np.save(tmp_path / "f.npy", array, allow_pickle=True)
    back = load_npy(tmp_path / "f.npy")
    assert np.array_equal(back[0], array[0]) and back[0].dtype == np.float32
    assert back[2] == [b"BaseballPitch", "Billiards"] and back[3] == [[1.5, 2.0]]


def test_a_truncated_npy_is_a_data_error_naming_the_file(tmp_path):
    np.save(tmp_path / "f.npy", crafted(tmp_path / "ran", 3)[1:], allow_pickle=True)
    data = (tmp_path / "f.npy").read_bytes()
    (tmp_path / "f.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="f.npy: cannot read"):
        load_npy(tmp_path / "f.npy")


# -- video names ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "a/b", "a\\b", "..", ".", "", "/etc/passwd", "a\x00b", "a\nb"])
def test_the_name_rule_refuses_paths_and_control_characters(name):
    assert video_name_problem(name) is not None
    with pytest.raises(DataError, match="row 3"):
        check_video_name(name, "row 3")


@pytest.mark.parametrize("name", ["video_test_0000004", "v.1", "my video (2)", "..a", "vidéo"])
def test_the_name_rule_keeps_ordinary_names(name):
    assert check_video_name(name, "x") == name
    assert file_in(Path("/out"), name, ".npy") == Path("/out") / f"{name}.npy"


def test_imported_names_that_leave_the_folder_are_refused_naming_the_row(tmp_path):
    (tmp_path / "a.csv").write_text("video,subset,start,end,label,duration\nok,test,1,2,x,5\n"
                                    "../../outside/secret,test,1,2,x,5\n")
    with pytest.raises(DataError, match=r"a.csv, line 3: video name '../../outside/secret' holds a path"):
        read_csv(tmp_path / "a.csv")
    (tmp_path / "a.json").write_text('{"database": {"../x": {"subset": "test", "duration": 3, "annotations": []}}}')
    with pytest.raises(DataError, match=r"a.json: \"database\" entry '../x'"):
        read_activitynet_json(tmp_path / "a.json")


def test_the_loader_refuses_a_video_name_with_a_path(demo, tmp_path):
    data, _, _ = demo
    shutil.copytree(data, tmp_path / "data")
    names_file = tmp_path / "data" / f"{NAME}-Annotations" / "videoname.npy"
    names = np.load(names_file)
    names[1] = b"../../../x"
    np.save(names_file, names)
    with pytest.raises(DataError, match=r"videoname.npy: entry 1: video name '../../../x' holds a path separator"):
        SampleDataset(tmp_path / "data", NAME, num_class=C, feature_size=D, max_seqlen=N)


def test_files_written_from_names_stay_in_their_folder(tmp_path):
    cas = np.zeros((4, C + 1), np.float32), np.zeros((4, 1), np.float32)
    with pytest.raises(DataError, match="cannot write a file for video '../escaped'"):
        write_cas_folder(tmp_path / "cas", {"../escaped": cas}, {}, {})
    assert not (tmp_path / "escaped.npz").exists() and not list(tmp_path.rglob("*.npz"))


# -- atomic writes ----------------------------------------------------------------------------

def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = write_text(tmp_path / "summary.json", "old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OutputError, match="cannot write .*summary.json: No space left on device"):
        write_json(target, {"new": 1})
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_an_exception_inside_the_block_writes_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "a.csv") as handle:
            handle.write("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_two_writers_of_one_file_use_their_own_temporaries(tmp_path):
    with atomic_write(tmp_path / "detections.json") as first, atomic_write(tmp_path / "detections.json") as second:
        assert first.name != second.name
        first.write("1")
        second.write("2")
    assert (tmp_path / "detections.json").read_text() == "1"  # the outer block ends last
    assert [p.name for p in tmp_path.iterdir()] == ["detections.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_get_the_mode_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [write_text(tmp_path / "a.txt", "x"), save_npy(tmp_path / "a.npy", np.zeros(3)),
                 atomic.save_torch({"w": torch.zeros(1)}, tmp_path / "a.pt")]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [mode] * 3


def test_json_is_strict(tmp_path):
    with pytest.raises(OutputError, match=r"at \['scores'\]\[1\]"):
        write_json(tmp_path / "c.json", {"scores": [0.5, float("nan")]})
    assert not (tmp_path / "c.json").exists()
    write_json(tmp_path / "d.json", {"score": np.float32(0.25), "rows": np.arange(2)})
    assert (tmp_path / "d.json").read_text() == '{\n "score": 0.25,\n "rows": [\n  0,\n  1\n ]\n}\n'


def test_a_sweep_without_periodic_evaluation_is_refused_before_it_starts():
    import sweep

    with pytest.raises(sweep.SweepError, match=r"needs a periodic evaluation: make --max-iter \(5\) larger"):
        sweep.plan_trials(["--max-iter", "5", "--interval", "10"], {"lr": [1e-3]}, [0])
