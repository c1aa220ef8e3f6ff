"""Flags that reach the code they control across module boundaries, and checkpoints that
restore what defines a model but never the run flags of the run that saved them (issue 12)."""
import json

import numpy as np
import pytest
import torch

import main as main_py
import test as test_py
from protocol import Reference
from tests.helpers import load_for_test
from dataset.make_demo import make_demo_dataset
from model import STCLNet, build_model
from options import parse_args
from utils.cas_folder import write_cas_folder
from utils.evaluation import THUMOS_TIOU, SegmentTable

C, D = 3, 16
SHAPE = ["--num-class", str(C), "--feature-size", str(D), "--max-seqlen", "16"]

pytestmark = pytest.mark.filterwarnings("ignore:class .* training videos, fewer than the")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("seams") / "demo", num_train=8, num_test=4, num_class=C,
                             feature_size=D, seed=2)


def save_checkpoint(demo, path, *flags, stored=None):
    """An untrained model saved as main.py saves best.pt, with the options ``flags`` (and the
    entries ``stored``) stored."""
    args = parse_args(["--path-dataset", str(demo), *SHAPE, "--num-exemplars", "2", *flags])
    torch.manual_seed(0)
    model = build_model(args)
    torch.save({"model": model.state_dict(), "args": {**vars(args), **(stored or {})}, "iteration": 7,
                "format": "stcl-net/1"}, path)
    return path


def read_json(path):
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- run flags never leak

def test_a_checkpoint_trained_on_cuda_evaluates_on_cpu_with_the_run_flags_of_the_command_line(demo, tmp_path):
    stale = tmp_path / "stale"
    # test.py's run flags as an older checkpoint (one parser for main.py and test.py) stored them
    older = {"output": str(stale), "save_cas": str(stale / "cas"), "visualize": 2}
    path = save_checkpoint(demo, tmp_path / "cuda.pt", "--device", "cuda", "--amp", "--resume", str(stale / "last.pt"),
                           "--gamma-oic", "0.4", "--exemplar-seed", "5", stored=older)
    args, _, _ = load_for_test(["--pretrained-ckpt", str(path)])
    assert (args.device, args.amp, args.output, args.save_cas, args.visualize) == ("auto", False, None, None, 0)
    assert not hasattr(args, "resume")  # a training flag: test.py has none
    # what defines the model, the data and the post-processing is restored
    assert (args.num_class, args.feature_size, args.max_seqlen, args.num_exemplars) == (C, D, 16, 2)
    assert (args.path_dataset, args.gamma_oic, args.exemplar_seed) == (str(demo), 0.4, 5)

    out = tmp_path / "eval"
    assert test_py.main(["--pretrained-ckpt", str(path), "--device", "cpu", "--output", str(out)]) == 0
    assert (out / "metrics.json").is_file() and not stale.exists() and not (out / "figures").exists()
    assert read_json(out / "metrics.json")["settings"]["gamma"] == 0.4


# ----------------------------------------------------------------------------- --feature_fps

def test_feature_fps_reaches_ground_truth_ambiguous_intervals_exported_seconds_and_figures(
        demo, tmp_path, monkeypatch):
    import utils.visualize

    scales = []
    monkeypatch.setattr(utils.visualize, "visualize_videos", lambda *a, scale, **k: scales.append(scale) or [])
    path = save_checkpoint(demo, tmp_path / "m.pt")
    cas, out = tmp_path / "cas", tmp_path / "out"
    assert test_py.main(["--pretrained-ckpt", str(path), "--device", "cpu", "--feature_fps", "30",
                         "--output", str(out), "--save-cas", str(cas), "--visualize", "1"]) == 0
    assert scales == [16 / 30]

    folder = demo / "Thumos14reduced-Annotations"
    names = [n.decode() for n in np.load(folder / "videoname.npy")]
    test_videos = [i for i, s in enumerate(np.load(folder / "subset.npy")) if s == b"test"]
    segments = np.load(folder / "segments.npy", allow_pickle=True)
    meta = read_json(cas / "meta.json")
    assert meta["scale"] == 16 / 30
    position = {name: p for p, name in enumerate(meta["video_names"])}
    for v in test_videos:
        expected = [[round(s * 30 / 16), round(e * 30 / 16)] for s, e in segments[v]]
        rows = [row[2:] for row in meta["ground_truth_rows"] if row[0] == position[names[v]]]
        assert rows == expected
        assert expected != [[round(s * 25 / 16), round(e * 25 / 16)] for s, e in segments[v]]

    ambiguous_lines = [line.split() for line in (folder / "Ambiguous_test.txt").read_text().splitlines()]
    assert ambiguous_lines
    for name, start, end in ambiguous_lines:
        assert [round(float(start) * 30 / 16), round(float(end) * 30 / 16)] in meta["ambiguous"][str(position[name])]

    snippets = read_json(out / "proposals.json")
    seconds = read_json(out / "detections.json")["results"]
    for name, rows in snippets.items():
        np.testing.assert_allclose([d["segment"] for d in seconds[name]],
                                   np.reshape([row[:2] for row in rows], (-1, 2)) * 16 / 30)
    assert sum(map(len, snippets.values())) > 0


# ----------------------------------------------------------------------------- --gamma-oic through --from-cas

def hand_made_cas_folder(folder):
    """One video of 4 snippets, one class: cas[:, 0] = 2, 1, 0, 0 (background 0, 0, 1, 1), attn
    0.95, 0.95, 0.05, 0.05, and one ground truth [0, 2)."""
    cas = np.array([[2, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    attn = np.array([[0.95], [0.95], [0.05], [0.05]], np.float32)
    reference = Reference(["A"], ["v"], np.ones((1, 1), np.float32),
                                  SegmentTable([0], [0], [0], [2], [1]), {}, THUMOS_TIOU, 16 / 25)
    return write_cas_folder(folder, {"v": (cas, attn)}, reference.to_json(), {"v": []})


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_gamma_oic_through_from_cas_changes_the_detections_as_computed_by_hand(tmp_path, gamma):
    # s = cas * attn: class column 1.9, 0.95, 0, 0; background 0, 0, 0.05, 0.05. Video score
    # (top-1 per column, softmax): v = e^1.9 / (e^1.9 + e^0.05). Every threshold 0.1..0.9 keeps
    # snippets 0-1: ten proposals [0, 2), inner mean 1.425, no outer snippets (o0 = 0,
    # o1 = int(1 + 0.5) = 1). Soft-NMS of identical proposals ("+1" IoU = 1) multiplies the
    # rest by exp(-1 / 0.3) at each pick.
    folder = hand_made_cas_folder(tmp_path / "cas")
    assert test_py.main(["--from-cas", str(folder), "--gamma-oic", str(gamma), "--output", str(tmp_path / "o")]) == 0
    rows = read_json(tmp_path / "o" / "proposals.json")["v"]
    v = np.exp(1.9) / (np.exp(1.9) + np.exp(0.05))
    first = 1.425 + gamma * v
    np.testing.assert_allclose([r[3] for r in rows], first * np.exp(-np.arange(10) / 0.3), rtol=1e-6)
    assert all(r[:3] == [0, 2, 0] for r in rows)
    settings = read_json(tmp_path / "o" / "metrics.json")["settings"]
    assert settings["gamma"] == gamma


# ----------------------------------------------------------------------------- metrics.json

def test_metrics_json_records_everything_that_produced_it(demo, tmp_path):
    path = save_checkpoint(demo, tmp_path / "m.pt")
    out, cas = tmp_path / "out", tmp_path / "cas"
    assert test_py.main(["--pretrained-ckpt", str(path), "--device", "cpu", "--output", str(out),
                         "--save-cas", str(cas), "--gamma-oic", "0.3", "--classification-topk", "2",
                         "--exemplar-mode", "resample", "--exemplar-seed", "4", "--exemplar-draws", "1"]) == 0
    assert test_py.main(["--from-cas", str(cas), "--gamma-oic", "0.1", "--output", str(tmp_path / "replay")]) == 0
    for folder, gamma, topk in ((out, 0.3, 2), (tmp_path / "replay", 0.1, 1)):
        metrics = read_json(folder / "metrics.json")
        assert metrics["settings"] == {
            "proposal_method": "multiple_threshold_hamnet", "gamma": gamma,
            "act_thresholds": pytest.approx(np.linspace(0.1, 0.9, 10).tolist()), "class_threshold": 0.2,
            "sigma": 0.3, "classification_topk": topk, "tiou_thresholds": pytest.approx(THUMOS_TIOU.tolist()),
            "seconds_per_snippet": 16 / 25}
        assert (metrics["exemplar_mode"], metrics["exemplar_seed"], metrics["exemplar_draws"]) == ("resample", 4, 1)
        assert (metrics["num_exemplars"], metrics["checkpoint"], metrics["iteration"]) == (2, str(path), 7)


# ----------------------------------------------------------------------------- --num-exemplars

def test_num_exemplars_reaches_the_exemplar_bank_in_training_and_at_test(demo, tmp_path, monkeypatch):
    shapes = []
    build_bank = STCLNet.exemplar_bank

    def recording(self, exemplar_videos):
        bank = build_bank(self, exemplar_videos)
        shapes.append(tuple(bank.shape))
        return bank

    monkeypatch.setattr(STCLNet, "exemplar_bank", recording)
    assert main_py.main(["--path-dataset", str(demo), *SHAPE, "--num-exemplars", "3", "--max-iter", "1",
                         "--device", "cpu", "--output-dir", str(tmp_path), "--model-name", "m3"]) == 0
    assert len(shapes) >= 2 and set(shapes) == {(C + 1, D, 3)}  # one training step, one evaluation
    shapes.clear()
    assert test_py.main(["--pretrained-ckpt", str(tmp_path / "m3" / "last.pt"), "--num-exemplars", "5",
                         "--device", "cpu", "--output", str(tmp_path / "o")]) == 0
    assert shapes and set(shapes) == {(C + 1, D, 5)}
