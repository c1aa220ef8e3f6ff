"""Self-contained checkpoints and localize.py (issue 16).

A tiny demo run (D = 16, 3 classes, 21 iterations) stands in for a trained model: what
matters here is that the bank travels with the weights and that localize.py computes
exactly what test.py evaluates, not how well the model localizes.
"""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import localize
import main as main_module
import test as test_module
from dataset.make_demo import make_demo_dataset
from checkpoints import load_checkpoint
from exemplar_source import ExemplarSource
from options import build_localize_parser, parse_checkpoint_command, restorable_options
from inference import BANK_KEY, EvaluationBank, evaluation_bank, localize as localize_api
from utils.checkpoint import project_to_released, read_checkpoint, save_atomic
from wsad_dataset import SampleDataset

D, C, M, N = 16, 3, 3, 24
FLAGS = ["--num-class", str(C), "--feature-size", str(D), "--max-seqlen", str(N), "--num-exemplars", str(M),
         "--device", "cpu"]
PER_VIDEO = ("videoname", "subset", "duration", "labels_all", "labels", "segments")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("localize")
    data = make_demo_dataset(root / "demo", num_train=12, num_test=6, num_class=C, feature_size=D, seed=2)
    argv = ["--path-dataset", str(data), *FLAGS, "--lr", "1e-3", "--max-iter", "21", "--interval", "10",
            "--output-dir", str(root / "runs"), "--model-name", "tiny"]
    assert main_module.main(argv) == 0
    return root, data, root / "runs" / "tiny"


def copy_without_training(data, out):
    """The dataset with every training video removed (annotations and features)."""
    folder, new = data / "Thumos14reduced-Annotations", out / "Thumos14reduced-Annotations"
    new.mkdir(parents=True)
    keep = np.load(folder / "subset.npy") == b"test"
    shutil.copy(folder / "classlist.npy", new)
    for name in PER_VIDEO:
        np.save(new / f"{name}.npy", np.load(folder / f"{name}.npy", allow_pickle=True)[keep], allow_pickle=True)
    shutil.copy(folder / "Ambiguous_test.txt", new)
    features = np.load(data / "Thumos14reduced-I3D-JOINTFeatures.npy", allow_pickle=True)[keep]
    np.save(out / "Thumos14reduced-I3D-JOINTFeatures.npy", features, allow_pickle=True)
    return out


def write_test_features(data, out):
    """Each test video's features as <name>.npy in ``out``; the names of those without ambiguous intervals."""
    folder = data / "Thumos14reduced-Annotations"
    names, subset = np.load(folder / "videoname.npy"), np.load(folder / "subset.npy")
    features = np.load(data / "Thumos14reduced-I3D-JOINTFeatures.npy", allow_pickle=True)
    ambiguous = {line.split()[0] for line in (folder / "Ambiguous_test.txt").read_text().splitlines() if line}
    out.mkdir(parents=True, exist_ok=True)
    plain = []
    for i in np.flatnonzero(subset == b"test"):
        name = names[i].decode()
        np.save(out / f"{name}.npy", features[i])
        if name not in ambiguous:
            plain.append(name)
    return plain


def check_activitynet_results(obj, class_names):
    """What the ActivityNet toolkit (Evaluation/eval_detection.py, _import_prediction) requires."""
    assert set(obj) >= {"version", "results", "external_data"}
    assert isinstance(obj["results"], dict)
    for video, entries in obj["results"].items():
        assert isinstance(video, str) and isinstance(entries, list)
        for entry in entries:
            assert set(entry) == {"label", "score", "segment"}
            assert entry["label"] in class_names
            assert isinstance(entry["score"], float) and math.isfinite(entry["score"])
            start, end = entry["segment"]
            assert isinstance(start, float) and isinstance(end, float) and 0 <= start < end


def metrics(path):
    return json.loads((path / "metrics.json").read_text())["summary"]


def load_model(path):
    args, given = parse_checkpoint_command(build_localize_parser, ["--pretrained-ckpt", str(path), "x.npy"])
    return load_checkpoint(args, given, restorable_options(build_localize_parser()))


# -- the bank travels with the checkpoint ----------------------------------------------------

def test_best_and_last_hold_the_evaluation_bank_of_their_weights(run):
    _, data, run_dir = run
    dataset = SampleDataset(data, num_class=C, feature_size=D, max_seqlen=N)
    for name in ("best.pt", "last.pt"):
        raw = read_checkpoint(run_dir / name)
        stored = EvaluationBank.from_checkpoint(raw[BANK_KEY], name)
        assert stored.recipe.describe() == f"seed 0, 1 draw, M = {M}, N = {N}"
        assert stored.class_names == dataset.class_names
        model = load_model(run_dir / name).model
        fresh = evaluation_bank(model, ExemplarSource(dataset, M, torch.device("cpu")).draw, seed=0)
        torch.testing.assert_close(stored.bank, fresh.bank, rtol=0, atol=0)
    best, last = (read_checkpoint(run_dir / n) for n in ("best.pt", "last.pt"))
    assert last["iteration"] == 20 and best["iteration"] in (10, 20)


def test_test_py_gives_the_training_map_with_and_without_the_training_features(run, tmp_path, capsys):
    _, data, run_dir = run
    best = json.loads((run_dir / "summary.json").read_text())["best"]["summary"]
    assert test_module.main(["--pretrained-ckpt", str(run_dir / "best.pt"), "--output", str(tmp_path / "full")]) == 0
    only_test = copy_without_training(data, tmp_path / "test_only")
    assert test_module.main(["--pretrained-ckpt", str(run_dir / "best.pt"), "--path-dataset", str(only_test),
                             "--output", str(tmp_path / "part")]) == 0
    assert "the one stored in" in capsys.readouterr().out
    assert metrics(tmp_path / "full") == metrics(tmp_path / "part") == best
    # without the stored bank, the same test-only folder cannot evaluate: it says why
    raw = read_checkpoint(run_dir / "best.pt")
    del raw[BANK_KEY]
    save_atomic(raw, tmp_path / "no_bank.pt")
    assert test_module.main(["--pretrained-ckpt", str(tmp_path / "no_bank.pt"), "--path-dataset",
                             str(only_test)]) == 2
    assert "has no training video" in capsys.readouterr().err


def test_options_that_ask_for_another_bank_draw_it_from_the_dataset(run, tmp_path, capsys):
    _, _, run_dir = run
    assert test_module.main(["--pretrained-ckpt", str(run_dir / "best.pt"), "--exemplar-seed", "4",
                             "--output", str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert "--exemplar-seed 0 vs 4" in out and "drawn from the training videos" in out


# -- localize.py computes what test.py evaluates ---------------------------------------------

def test_localized_features_give_the_detections_test_py_wrote(run, tmp_path, capsys):
    _, data, run_dir = run
    assert test_module.main(["--pretrained-ckpt", str(run_dir / "best.pt"), "--output", str(tmp_path / "t")]) == 0
    written = json.loads((tmp_path / "t" / "detections.json").read_text())["results"]
    plain = write_test_features(data, tmp_path / "features")
    assert plain, "every demo test video has ambiguous intervals"
    inputs = [str(tmp_path / "features" / f"{name}.npy") for name in plain]
    capsys.readouterr()
    assert localize.main(["--pretrained-ckpt", str(run_dir / "best.pt"), *inputs, "--output", str(tmp_path / "l"),
                          "--top", "3", "--path-dataset", str(tmp_path / "nowhere")]) == 0
    localized = json.loads((tmp_path / "l" / "detections.json").read_text())
    check_activitynet_results(localized, ["Action0", "Action1", "Action2"])
    assert localized["results"] == {name: written[name] for name in plain}
    assert all(localized["results"][name] for name in plain)
    out = capsys.readouterr().out
    first = max(written[plain[0]], key=lambda d: d["score"])
    assert f"{plain[0]}: " in out and "video-level class scores" in out
    assert f"{first['segment'][0]:9.2f}  {first['segment'][1]:9.2f}" in out.splitlines()[3]  # top detection first
    classification = json.loads((tmp_path / "l" / "classification.json").read_text())["results"]
    assert [len(classification[name]) for name in plain] == [C] * len(plain)


def test_the_api_returns_the_same_detections_by_score(run, tmp_path):
    _, data, run_dir = run
    loaded = load_model(run_dir / "best.pt")
    plain = write_test_features(data, tmp_path)
    features = np.load(tmp_path / f"{plain[0]}.npy")
    detections = localize_api(loaded.model, loaded.bank, features, class_names=loaded.bank.class_names)
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    localize.main(["--pretrained-ckpt", str(run_dir / "best.pt"), str(tmp_path / f"{plain[0]}.npy"),
                   "--output", str(tmp_path / "l")])
    expected = json.loads((tmp_path / "l" / "detections.json").read_text())["results"][plain[0]]
    assert sorted(d.to_json()["segment"] + [d.score] for d in detections) == \
        sorted(e["segment"] + [e["score"]] for e in expected)


def test_folder_input_save_cas_and_figures(run, tmp_path, monkeypatch):
    _, data, run_dir = run
    plain = write_test_features(data, tmp_path / "inputs" / "features")
    monkeypatch.chdir(tmp_path)  # the default output goes under the current folder's runs/localize/
    assert localize.main(["--pretrained-ckpt", str(run_dir / "best.pt"), str(tmp_path / "inputs" / "features"),
                          "--figures", "--save-cas", str(tmp_path / "cas")]) == 0
    out = tmp_path / "runs" / "localize" / "features"
    assert not [p for p in (tmp_path / "inputs").iterdir() if p.name != "features"]  # nothing beside the input
    results = json.loads((out / "detections.json").read_text())["results"]
    assert len(results) == 6 and set(plain) <= set(results)
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert pngs == sorted(results)
    from utils.cas_folder import read_cas_folder

    saved = read_cas_folder(tmp_path / "cas")
    assert sorted(saved.cas) == sorted(results)
    assert all(len(labels) == 0 for _, labels in saved.ground_truth().values())
    for name, rows in saved.detections().items():  # proposals.json in snippets = detections.json in seconds
        np.testing.assert_allclose(rows[0] * 16 / 25, [d["segment"][0] for d in results[name]], rtol=1e-12)


# -- a released .pkl: the bank is built once from --path-dataset, saved and reused -------------

def test_released_pkl_with_path_dataset_and_its_saved_bank(run, tmp_path, capsys):
    _, data, run_dir = run
    pkl = tmp_path / "released.pkl"
    torch.save(project_to_released(read_checkpoint(run_dir / "best.pt")["model"]), pkl)
    plain = write_test_features(data, tmp_path / "features")
    video = str(tmp_path / "features" / f"{plain[0]}.npy")
    same = ["--num-exemplars", str(M), "--max-seqlen", str(N)]  # the demo's M and N (a .pkl does not say)
    assert localize.main(["--pretrained-ckpt", str(pkl), video, "--path-dataset", str(data), *same,
                          "--save-bank", str(tmp_path / "with_bank.pt"), "--output", str(tmp_path / "a")]) == 0
    assert "drawn from the training videos" in capsys.readouterr().out
    assert localize.main(["--pretrained-ckpt", str(tmp_path / "with_bank.pt"), video,
                          "--path-dataset", str(tmp_path / "nowhere"), "--output", str(tmp_path / "b")]) == 0
    assert localize.main(["--pretrained-ckpt", str(run_dir / "best.pt"), video, "--output", str(tmp_path / "c")]) == 0
    results = [json.loads((tmp_path / x / "detections.json").read_text()) for x in "abc"]
    assert results[0] == results[1] == results[2]
    # test.py: the .pkl evaluated with --save-bank, then the saved checkpoint on the test videos alone
    assert test_module.main(["--pretrained-ckpt", str(pkl), "--path-dataset", str(data), *FLAGS,
                             "--save-bank", str(tmp_path / "t.pt"), "--output", str(tmp_path / "t1")]) == 0
    assert test_module.main(["--pretrained-ckpt", str(tmp_path / "t.pt"), "--output", str(tmp_path / "t2"),
                             "--path-dataset", str(copy_without_training(data, tmp_path / "only_test"))]) == 0
    assert metrics(tmp_path / "t1") == metrics(tmp_path / "t2")


# -- bad input ---------------------------------------------------------------------------------

def run_localize(argv, capsys):
    code = localize.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_checkpoint_without_bank_and_no_dataset_says_what_to_pass(run, tmp_path, capsys):
    _, data, run_dir = run
    pkl = tmp_path / "released.pkl"
    torch.save(project_to_released(read_checkpoint(run_dir / "best.pt")["model"]), pkl)
    write_test_features(data, tmp_path)
    code, _, err = run_localize(["--pretrained-ckpt", str(pkl), str(tmp_path), "--path-dataset",
                                 str(tmp_path / "nowhere")], capsys)
    assert code == 2 and err.count("error:") == 1
    assert "holds no exemplar bank" in err and "--path-dataset DIR" in err and "--save-bank" in err
    assert "Thumos14reduced-I3D-JOINTFeatures.npy" in err


def test_a_bank_of_another_model_names_both(run, tmp_path, capsys):
    _, _, run_dir = run
    raw = read_checkpoint(run_dir / "best.pt")
    raw[BANK_KEY]["bank"] = torch.zeros(C + 2, D, M)  # a bank of 4 classes
    raw[BANK_KEY].pop("class_names")
    save_atomic(raw, tmp_path / "odd.pt")
    code, _, err = run_localize(["--pretrained-ckpt", str(tmp_path / "odd.pt"), str(tmp_path)], capsys)
    assert code == 2
    assert "D = 16 and 4 classes" in err and "D = 16 and 3 classes" in err and "odd.pt" in err


@pytest.mark.parametrize("features, expected", [
    (np.zeros((5, D + 2), np.float32), "features have 18 channels per snippet, but the model takes D = 16"),
    (np.zeros((0, D), np.float32), "zero snippets"),
    (np.full((4, D), np.nan, np.float32), "NaN/Inf values"),
    (np.zeros((6, D), np.float32), "all zeros"),
    (np.zeros((3, 2, D), np.float32), "expected (T, 16) snippet features"),
])
def test_bad_features_are_named_and_the_good_ones_still_localized(run, tmp_path, capsys, features, expected):
    _, data, run_dir = run
    good = write_test_features(data, tmp_path / "good")[0]
    bad = tmp_path / "bad.npy"
    np.save(bad, features)
    if "NaN" in expected:
        features[1] = 1.0  # a NaN in snippets 0, 2, 3 only
        np.save(bad, features)
    code, out, err = run_localize(["--pretrained-ckpt", str(run_dir / "best.pt"), str(bad),
                                   str(tmp_path / "good" / f"{good}.npy"), "--output", str(tmp_path / "o")], capsys)
    assert code == 2
    assert f"error: {bad}: " in err and expected in err and "1 of 2 inputs localized; 1 failed" in err
    assert "Traceback" not in err
    assert list(json.loads((tmp_path / "o" / "detections.json").read_text())["results"]) == [good]


def test_unreadable_missing_and_video_inputs(run, tmp_path, capsys):
    _, _, run_dir = run
    (tmp_path / "broken.npy").write_bytes(b"not a numpy file")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "empty").mkdir()
    code, _, err = run_localize(["--pretrained-ckpt", str(run_dir / "best.pt"), str(tmp_path / "broken.npy"),
                                 str(tmp_path / "clip.mp4"), str(tmp_path / "missing.npy"), str(tmp_path / "empty"),
                                 "--output", str(tmp_path / "o")], capsys)
    assert code == 2
    assert f"{tmp_path / 'broken.npy'}: cannot read it as a .npy array" in err
    assert f"{tmp_path / 'clip.mp4'}: " in err and "--rgb-weights" in err
    assert f"{tmp_path / 'missing.npy'}: no such file or folder" in err
    assert "holds no .npy features file and no video" in err
    assert "0 of 4 inputs localized" in err


def test_videos_go_through_the_feature_extractor_and_bad_videos_are_named(run, tmp_path, capsys):
    """A generated video and random I3D weights (small input size, as the extraction tests):
    its (T, 2048) features reach the D = 16 demo model's width check, an undecodable file
    and a video shorter than one snippet are refused by name, the .npy beside them is localized."""
    from feature_extraction.synthetic import moving_texture, random_i3d_weights, write_video

    _, data, run_dir = run
    good = write_test_features(data, tmp_path / "features")[0]
    write_video(tmp_path / "clip.mp4", moving_texture(40, 32, 32), fps=25)  # 2 snippets at 25 fps
    write_video(tmp_path / "short.mp4", moving_texture(10, 32, 32), fps=25)  # under one 16-frame snippet
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 256)
    weights = ["--rgb-weights", str(random_i3d_weights(tmp_path / "rgb.pt", 3, seed=1)),
               "--flow-weights", str(random_i3d_weights(tmp_path / "flow.pt", 2, seed=2))]
    code, _, err = run_localize(["--pretrained-ckpt", str(run_dir / "best.pt"), *weights, "--flow", "opencv",
                                 "--extract-size", "32", "--extract-batch-size", "2", str(tmp_path / "clip.mp4"),
                                 str(tmp_path / "short.mp4"), str(tmp_path / "broken.mp4"),
                                 str(tmp_path / "features" / f"{good}.npy"), "--output", str(tmp_path / "o")], capsys)
    assert code == 2
    assert f"error: {tmp_path / 'clip.mp4'}: features have 2048 channels per snippet, but the model takes D = 16" in err
    assert f"{tmp_path / 'short.mp4'}" in err and f"{tmp_path / 'broken.mp4'}" in err
    assert err.count("error: ") == 3 and "Traceback" not in err and "1 of 4 inputs localized; 3 failed" in err
    assert list(json.loads((tmp_path / "o" / "detections.json").read_text())["results"]) == [good]


# -- the printed table: distinct segments; --all; the per-video inputs of make_demo ---------------

def _detection(label, start, end, score):
    from inference import Detection

    return Detection(label, f"Action{label}", start, end, score)


def test_the_table_merges_exact_duplicates_keeping_the_best_score_and_all_prints_every_row():
    # soft-NMS keeps a duplicate with a decayed score: three rows of one segment, one of another class
    detections = [_detection(0, 0.0, 2.56, 0.4), _detection(0, 0.0, 2.56, 0.9), _detection(1, 0.0, 2.56, 0.5),
                  _detection(0, 0.0, 2.56, 0.1), _detection(0, 1.0, 2.56, 0.3)]
    table = localize.shown(detections, top=10, min_score=None)
    assert [(d.label, d.start, d.end, d.score) for d in table] == \
        [(0, 0.0, 2.56, 0.9), (1, 0.0, 2.56, 0.5), (0, 1.0, 2.56, 0.3)]
    assert len(localize.shown(detections, top=10, min_score=None, every=True)) == 5
    assert len(localize.shown(detections, top=2, min_score=None, every=True)) == 5  # --all: no --top limit
    text = localize.format_video("v", 4, 0.64, detections, np.array([0.9, 0.5, 0.1]), ["A0", "A1", "A2"])
    rows = [line for line in text.splitlines() if "00:00:00.00" in line]
    assert len(rows) == 2 and "(3 of 5 detections shown: top 10; 2 exact duplicates merged" in text
    every = localize.format_video("v", 4, 0.64, detections, np.array([0.9, 0.5, 0.1]), ["A0", "A1", "A2"],
                                  every=True)
    assert len([line for line in every.splitlines() if "00:00:00.00" in line]) == 4


def test_default_output_is_under_runs_localize_not_beside_the_input():
    assert localize.default_output("features/video_1.npy") == Path("runs/localize/video_1")
    assert localize.default_output("/data/clips/match.mp4") == Path("runs/localize/match")
    assert localize.default_output("/data/features") == Path("runs/localize/features")


def test_make_demo_writes_each_test_videos_features_for_localize(run, tmp_path, capsys):
    from dataset import make_demo

    _, _, run_dir = run
    out = tmp_path / "per_video"
    data = make_demo.main(["--out", str(tmp_path / "demo"), "--num-train", "12", "--num-test", "6",
                           "--num-class", str(C), "--feature-size", str(D), "--seed", "2",
                           "--per-video-features", str(out)])
    assert f"6 test videos' features written to {out}" in capsys.readouterr().out
    folder = data / "Thumos14reduced-Annotations"
    names, subset = np.load(folder / "videoname.npy"), np.load(folder / "subset.npy")
    features = np.load(data / "Thumos14reduced-I3D-JOINTFeatures.npy", allow_pickle=True)
    expected = {names[i].decode(): features[i] for i in np.flatnonzero(subset == b"test")}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.npy" for n in expected)  # no temporary left
    for name, array in expected.items():
        written = np.load(out / f"{name}.npy", allow_pickle=False)
        assert written.dtype == np.float32 and written.shape == (len(array), D)
        np.testing.assert_array_equal(written, array.astype(np.float32))
    assert localize.main(["--pretrained-ckpt", str(run_dir / "best.pt"), str(out),
                          "--output", str(tmp_path / "loc")]) == 0
    assert len(json.loads((tmp_path / "loc" / "detections.json").read_text())["results"]) == 6
