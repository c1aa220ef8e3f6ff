"""extract_features.py end to end: the loader's layout, resume, and every bad input of the issue
(exit code 2, one message naming the file and the video, the videos already extracted kept)."""
import json
import re

import av
import numpy as np
import pytest

import extract_features
from feature_extraction.pipeline import FeatureExtractor
from feature_extraction.synthetic import moving_texture, random_i3d_weights, write_video
from wsad_dataset import SampleDataset


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return random_i3d_weights(folder / "rgb.pt", 3, seed=1), random_i3d_weights(folder / "flow.pt", 2, seed=2)


def run(weights, *args):
    return extract_features.main([*map(str, args), "--rgb-weights", str(weights[0]), "--flow-weights", str(weights[1]),
                                  "--extract-size", "16", "--flow", "opencv", "--device", "cpu",
                                  "--extract-batch-size", "2"])


def videos(folder, names, frames=20):
    for i, name in enumerate(names):
        write_video(folder / f"{name}.mp4", moving_texture(frames, 32, 32, velocity=(1, 0), seed=i), fps=25)
    return folder


CSV = ("video,subset,start,end,label,duration\n"
       "a,validation,0.0,0.5,Run,0.8\nb,validation,0.1,0.6,Run,0.8\nc,test,0.2,0.7,Run,0.8\n")


def test_extraction_writes_what_the_loader_reads_and_resumes(tmp_path, weights, capsys, monkeypatch):
    src = videos(tmp_path / "videos", "bac", frames=36)  # 36 frames -> 2 snippets each
    (tmp_path / "ann.csv").write_text(CSV)
    out = tmp_path / "ds"
    assert run(weights, src, "--out", out, "--name", "Mine", "--annotations", tmp_path / "ann.csv") == 0
    joint = np.load(out / "Mine-I3D-JOINTFeatures.npy", allow_pickle=True)
    assert joint.dtype == object and [f.shape for f in joint] == [(2, 2048)] * 3
    np.testing.assert_array_equal(joint[0], np.load(out / "features" / "a.npy"))  # order of videoname.npy
    dataset = SampleDataset(out, "Mine", num_class=1, feature_size=2048, max_seqlen=4, num_similar=1, batch_size=2)
    assert dataset.video_names == ["a", "b", "c"] and list(dataset.test_index) == [2]
    # a second run extracts nothing again
    monkeypatch.setattr(FeatureExtractor, "extract", lambda *a, **k: pytest.fail("re-extracted a finished video"))
    assert run(weights, src, "--out", out, "--name", "Mine") == 0
    assert "3 already extracted" in capsys.readouterr().out


def test_a_killed_run_leaves_no_partial_file_and_continues(tmp_path, weights, monkeypatch):
    src = videos(tmp_path / "videos", "ab")
    out = tmp_path / "ds"
    real_save = np.save

    def dying_save(handle, array, **kwargs):  # the second video dies in the middle of its write
        if array.shape == (1, 2048) and (out / "features" / "a.npy").exists():
            handle.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt
        real_save(handle, array, **kwargs)

    monkeypatch.setattr(np, "save", dying_save)
    assert run(weights, src, "--out", out, "--name", "Mine") == 130
    assert sorted(p.name for p in (out / "features").iterdir()) == ["a.npy", "extraction.json"]
    monkeypatch.setattr(np, "save", real_save)
    assert run(weights, src, "--out", out, "--name", "Mine") == 0
    assert np.load(out / "features" / "b.npy").shape == (1, 2048)


def test_changed_settings_are_refused(tmp_path, weights, capsys):
    src = videos(tmp_path / "videos", "a")
    out = tmp_path / "ds"
    assert run(weights, src, "--out", out, "--name", "Mine") == 0
    assert run(weights, src, "--out", out, "--name", "Mine", "--sample-mode", "center_crop", "--short-side", "40") == 2
    assert "made with other settings (sample_mode: 'resize' then, 'center_crop' now" in capsys.readouterr().err


def audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def truncated(path):
    write_video(path, moving_texture(200, 32, 32), fps=25, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: p.with_suffix(".mp4").write_text("not a video"), r"video bad: .*bad.mp4: not a video file"),
    (lambda p: audio_only(p.with_suffix(".wav")), r"video bad: .*bad.wav: has no video stream"),
    (lambda p: write_video(p.with_suffix(".mp4"), moving_texture(12, 32, 32), fps=25),
     r"video bad: .*bad.mp4: 12 frames at 25 fps \(0.48 s\) is shorter than one snippet"),
    (lambda p: truncated(p.with_suffix(".mp4")), r"video bad: .*bad.mp4: decoding stopped after \d+ of the 200 frames"),
])
def test_a_bad_video_is_named_and_the_others_are_kept(tmp_path, weights, capsys, make_bad, message):
    src = videos(tmp_path / "videos", ["good1", "good2"])
    make_bad(src / "bad")
    out = tmp_path / "ds"
    (bad,) = src.glob("bad.*")  # given by name too: a .wav is not picked up from a folder
    assert run(weights, src, bad, "--out", out, "--name", "Mine") == 2
    err = capsys.readouterr().err
    assert err.count("video bad:") == 2  # once when it fails, once in the summary
    assert re.search(message, err), err
    assert {p.name for p in (out / "features").glob("*.npy")} == {"good1.npy", "good2.npy"}
    assert not (out / "Mine-I3D-JOINTFeatures.npy").exists()


def test_wrong_weights_are_listed(tmp_path, weights, capsys):
    src = videos(tmp_path / "videos", "a")
    code = extract_features.main([str(src), "--out", str(tmp_path / "ds"), "--name", "M", "--rgb-weights",
                                  str(weights[1]), "--flow-weights", str(weights[1]), "--extract-size", "32"])
    assert code == 2
    assert "flow.pt: not an I3D weights file for 3-channel input (wrong shapes: Conv3d_1a_7x7.conv3d.weight " \
           "(64, 2, 7, 7, 7) (expected (64, 3, 7, 7, 7)))" in capsys.readouterr().err
    code = extract_features.main([str(src), "--out", str(tmp_path / "ds"), "--name", "M",
                                  "--rgb-weights", str(tmp_path / "rgb_imagenet.pt")])
    assert code == 2 and "rgb_imagenet.pt: RGB I3D weights file not found" in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, weights, capsys):
    src = videos(tmp_path / "videos", "a")
    (tmp_path / "file").write_text("")
    assert run(weights, src, "--out", tmp_path / "file" / "ds", "--name", "M") == 2
    assert f"{tmp_path / 'file' / 'ds'}: cannot write to the output folder" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ({"videos": {}}, 'ann.json: expected an ActivityNet-style JSON object with a "database"'),
    ({"database": {"a": {"subset": "validation", "duration": 1,
                         "annotations": [{"segment": [0.6, 0.2], "label": "Run"}]}}},
     "ann.json: video a: segment 0 ends before it starts (0.6 > 0.2)"),
    ({"database": {"a": {"subset": "validation", "duration": 1,
                         "annotations": [{"segment": [0.1, 0.2], "label": "Fly"}]}}},
     "ann.json: video a: label 'Fly' is not in the class list"),
])
def test_bad_annotations_stop_before_extracting(tmp_path, weights, capsys, monkeypatch, content, message):
    src = videos(tmp_path / "videos", "a")
    (tmp_path / "ann.json").write_text(json.dumps(content))
    (tmp_path / "classes.txt").write_text("Run\nJump\n")
    monkeypatch.setattr(FeatureExtractor, "extract", lambda *a, **k: pytest.fail("extracted despite bad annotations"))
    code = run(weights, src, "--out", tmp_path / "ds", "--name", "M", "--annotations", tmp_path / "ann.json",
               "--classlist", tmp_path / "classes.txt")
    assert code == 2 and message in capsys.readouterr().err


def test_the_generated_sample_is_a_dataset_the_importer_reads(tmp_path):
    from feature_extraction.annotations import read_csv
    from feature_extraction.synthetic import write_sample

    write_sample(tmp_path, videos_per_class=2, seconds=0.8)
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert videos == ["sample_slidedown_0.mp4", "sample_slidedown_1.mp4",
                      "sample_slideright_0.mp4", "sample_slideright_1.mp4"]
    ann = read_csv(tmp_path / "annotations.csv")
    assert ann.class_names == ["SlideDown", "SlideRight"] and ann.subset.count("test") == 2
    assert all(0 <= s < e <= 0.8 for segments in ann.segments for s, e in segments)
    assert {p.name for p in (tmp_path / "weights").iterdir()} == {"rgb_random.pt", "flow_random.pt"}
