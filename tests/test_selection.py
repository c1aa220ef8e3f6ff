"""--select-on test|last|holdout: which checkpoint best.pt keeps, and on what (issue 18)."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch

import main as main_module
import test as test_module
from dataset.make_demo import make_demo_dataset
from inference import BANK_KEY
from utils.checkpoint import save_atomic
from utils.errors import DataError
from wsad_dataset import SampleDataset

DEMO = ["--num-class", "3", "--feature-size", "32", "--max-seqlen", "48", "--lr", "1e-3", "--num-exemplars", "4",
        "--device", "cpu", "--batch-size", "6", "--num-similar", "2"]
NAME = "Thumos14reduced"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    make_demo_dataset(root / "demo", num_train=24, num_test=12, num_class=3, feature_size=32, seed=1, difficulty=0.0)
    return root


def permute_test_labels(src, dst):
    """A copy of the dataset whose test videos' labels, segments and durations are rotated among them."""
    shutil.copytree(src, dst)
    folder = dst / f"{NAME}-Annotations"
    subset = np.load(folder / "subset.npy", allow_pickle=True)
    test = np.flatnonzero(subset == b"test")
    assert len(test) == 12
    for name in ("labels_all", "labels", "segments", "duration"):
        array = np.load(folder / f"{name}.npy", allow_pickle=True)
        array[test] = array[np.roll(test, 1)]
        np.save(folder / f"{name}.npy", array)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train(data, out, name, *flags):
    argv = ["--path-dataset", str(data), *DEMO, "--max-iter", "16", "--interval", "5", "--output-dir", str(out),
            "--model-name", name, *flags]
    assert main_module.main(argv) == 0
    run = out / name
    return run, json.loads((run / "summary.json").read_text())


def test_holdout_selection_never_looks_at_the_test_set(demo, monkeypatch):
    permute_test_labels(demo / "demo", demo / "permuted")
    evaluated = []  # which videos each evaluation scored: the held-out ones or the test ones
    real_test = main_module.test

    def spy(model, dataset, *args, **kwargs):
        evaluated.append("test" if len(dataset.test_index) == 12 else "holdout")  # 6 held out
        return real_test(model, dataset, *args, **kwargs)

    monkeypatch.setattr(main_module, "test", spy)
    flags = ("--select-on", "holdout", "--holdout", "0.25")
    run_a, a = _train(demo / "demo", demo / "runs", "a", *flags)
    run_b, b = _train(demo / "permuted", demo / "runs", "b", *flags)
    # held-out evaluations after 5, 10, 15; then the test set once for the last and (if other) the selected weights
    expected = [["holdout"] * 3 + ["test"] * (1 if s["best"]["iteration"] == 15 else 2) for s in (a, b)]
    assert evaluated == expected[0] + expected[1]
    assert read_csv(run_a / "results.csv") == read_csv(run_b / "results.csv")  # the held-out numbers
    assert a["best"]["iteration"] == b["best"]["iteration"] and a["best"]["score"] == b["best"]["score"]
    weights = [torch.load(r / "best.pt", map_location="cpu", weights_only=True)["model"] for r in (run_a, run_b)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert a["best"]["summary"] != b["best"]["summary"], "the permuted test labels should change the test numbers"
    assert a["best"]["holdout_summary"] == b["best"]["holdout_summary"]
    assert a["select_on"] == "holdout" and "6 held-out training videos" in a["selection"]
    # test.py on best.pt gives the summary's test numbers, with the stored exemplar bank and with one drawn
    # again from the dataset: it keeps the held-out videos out of the exemplar pools too
    stored = torch.load(run_a / "best.pt", map_location="cpu", weights_only=True)
    save_atomic({k: v for k, v in stored.items() if k != BANK_KEY}, run_a / "best_without_bank.pt")
    for name in ("best", "best_without_bank"):
        out = demo / f"reloaded_{name}"
        assert test_module.main(["--pretrained-ckpt", str(run_a / f"{name}.pt"), "--output", str(out)]) == 0
        reloaded = json.loads((out / "metrics.json").read_text())["summary"]
        assert reloaded == pytest.approx(a["best"]["summary"], abs=1e-9), name


def test_localize_draws_the_bank_of_a_holdout_checkpoint_without_the_held_out_videos(demo, tmp_path):
    """A --select-on holdout checkpoint without a stored bank: localize.py redraws it as test.py
    does, from the training videos less the held-out ones (it used to build the dataset without
    the holdout split, and took held-out videos as exemplars)."""
    import localize
    from options import parse_args

    def checkpoint(path, *flags):
        args = parse_args(["--path-dataset", str(demo / "demo"), *DEMO, *flags])
        torch.manual_seed(0)
        save_atomic({"model": main_module.build_model(args).state_dict(), "args": vars(args)}, path)
        return path

    held = checkpoint(tmp_path / "held.pt", "--select-on", "holdout", "--holdout", "0.25")
    plain = checkpoint(tmp_path / "plain.pt")
    features = tmp_path / "clip.npy"
    np.save(features, np.random.default_rng(0).standard_normal((40, 32)).astype(np.float32))

    def bank(command, ckpt, *inputs):
        out = tmp_path / f"{command.__name__}_{ckpt.stem}.pt"
        assert command.main(["--pretrained-ckpt", str(ckpt), "--device", "cpu", "--save-bank", str(out),
                             "--output", str(tmp_path / f"out_{out.stem}"), *inputs]) == 0
        return torch.load(out, map_location="cpu", weights_only=True)[BANK_KEY]["bank"]

    by_test, by_localize = bank(test_module, held), bank(localize, held, str(features))
    torch.testing.assert_close(by_localize, by_test, rtol=0, atol=0)
    assert not torch.equal(by_localize, bank(localize, plain, str(features))), \
        "the held-out videos should change the exemplar pools, so the bank"


def test_holdout_keeps_a_seeded_fraction_out_of_training(demo):
    full = SampleDataset(demo / "demo", NAME, num_class=3, feature_size=32, max_seqlen=48)
    held = SampleDataset(demo / "demo", NAME, num_class=3, feature_size=32, max_seqlen=48, holdout=0.25)
    again = SampleDataset(demo / "demo", NAME, num_class=3, feature_size=32, max_seqlen=48, holdout=0.25)
    other = SampleDataset(demo / "demo", NAME, num_class=3, feature_size=32, max_seqlen=48, holdout=0.25,
                          holdout_seed=1)
    assert len(full.train_index) == 24 and len(held.holdout_index) == 6 and len(held.train_index) == 18
    np.testing.assert_array_equal(held.holdout_index, again.holdout_index)
    assert not np.array_equal(held.holdout_index, other.holdout_index)
    assert set(held.holdout_index) <= set(full.train_index)
    assert not set(held.holdout_index) & set(held.train_index)
    assert not set(held.holdout_index) & set(np.concatenate(held.class_train_index))  # no exemplar either
    rng = np.random.default_rng(0)
    drawn = np.concatenate([held.load_batch(rng)[2] for _ in range(50)])
    assert not set(drawn) & set(held.holdout_index)
    view = held.holdout_view()
    assert [n for _, _, n, _ in view.test_videos()] == [held.video_names[v] for v in held.holdout_index]
    assert list(held.test_index) == list(full.test_index)  # the dataset itself still tests on the test set


def test_holdout_that_starves_a_class_is_one_clear_message(demo, capsys):
    with pytest.raises(DataError, match=r"leaves class 'Action\d' with [01] training video"):
        SampleDataset(demo / "demo", NAME, num_class=3, feature_size=32, max_seqlen=48, holdout=0.9)
    argv = ["--path-dataset", str(demo / "demo"), *DEMO, "--select-on", "holdout", "--holdout", "0.9",
            "--output-dir", str(demo / "bad")]
    assert main_module.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--holdout 0.9" in err and "lower --holdout" in err


def test_holdout_must_be_a_fraction(capsys):
    with pytest.raises(SystemExit) as exit_:
        main_module.parse_args(["--holdout", "1.5"])
    assert exit_.value.code == 2 and "--holdout is a fraction" in capsys.readouterr().err


def test_select_on_last_keeps_the_final_weights(demo):
    run, summary = _train(demo / "demo", demo / "runs", "last", "--select-on", "last")
    assert summary["select_on"] == "last" and "no selection" in summary["selection"]
    assert summary["best"]["iteration"] == summary["last"]["iteration"] == 15
    assert summary["best"]["summary"] == summary["last"]["summary"]
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["model"]
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(best[k], last[k]) for k in best)
    assert [r["best"] for r in read_csv(run / "results.csv")] == ["0", "0", "0"]


def test_seed_table_says_which_rule_chose():
    summaries = [{"seed": s, "select_on": "holdout", "selection": "best sum on 6 held-out training videos",
                  "best": {"summary": {"cmAP": 1.0 + s}}, "last": {"summary": {"cmAP": 2.0}}} for s in (0, 1)]
    table = main_module.seed_table(summaries)
    assert "selected (holdout)" in table and "best sum on 6 held-out training videos" in table
    assert "1.50 +- 0.71" in table
