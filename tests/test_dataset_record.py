"""The dataset record: what it fills in, and the flags the user gives winning over it."""
import numpy as np
import pytest

from dataset_record import ACTIVITYNET12, THUMOS14, dataset_record
from options import parse_args
from model import build_criterion, build_model


def test_thumos_defaults_are_the_released_ones():
    args = parse_args([])
    assert (args.num_class, args.use_model, args.num_exemplars, args.kl_weight, args.alpha4) == \
        (20, "STCL_THU", 10, 1.0, 1.0)
    assert (args.k, args.lr, args.max_seqlen, args.max_iter) == (7, 5e-5, 500, 10000)
    assert (args.tcl_depth, args.smooth_kernel, args.t) == (2, 1, None)


@pytest.mark.parametrize("name, classes", [("ActivityNet1.2", 100), ("ActivityNet1.3", 200)])
def test_activitynet_record_reaches_the_model_and_the_criterion(name, classes):
    args = parse_args(["--dataset-name", name, "--feature-size", "16"])
    assert (args.num_class, args.use_model, args.num_exemplars, args.k, args.lr, args.max_seqlen, args.max_iter) == \
        (classes, "STCL_ACT", 5, 5, 3e-5, 60, 40000)
    model = build_model(args)
    assert (model.num_class, model.tcl_depth, model.smooth_kernel) == (classes, 1, 13)  # (60 // 5) // 2 * 2 + 1
    criterion = build_criterion(args)
    assert criterion.k == 5
    assert (criterion.weight_dict["kl"], criterion.weight_dict["mutual"]) == (0.1, 1.0)


def test_a_flag_given_wins_over_the_record():
    # the released STCL_ACT ignores --alpha4; here it reaches the criterion's weights
    args = parse_args(["--dataset-name", "ActivityNet1.2", "--alpha4", "3", "--kl-weight", "0.5",
                       "--num-exemplars", "7", "--k", "8", "--max-seqlen", "100", "--t", "10", "--num-class", "7"])
    weights = build_criterion(args).weight_dict
    assert (weights["mutual"], weights["kl"]) == (3.0, 0.5)
    assert (args.num_exemplars, args.k, args.num_class, args.smooth_kernel) == (7, 8, 7, 11)  # (100 // 10) // 2 * 2 + 1


def test_t_for_a_model_that_does_not_smooth_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--t", "5"])
    assert exit_.value.code == 2
    assert "--t sets the smoothing of STCL_ACT, but STCL_THU does not smooth" in capsys.readouterr().err


def test_use_model_takes_the_model_settings_and_keeps_the_dataset_protocol():
    record = dataset_record("Thumos14reduced", "STCL_ACT")
    assert (record.tcl_depth, record.smooth_t, record.num_exemplars, record.kl_weight) == (1, 5, 5, 0.1)
    assert record.tiou_thresholds == THUMOS14.tiou_thresholds and record.train_subset == "validation"
    args = parse_args(["--use-model", "STCL_ACT"])  # the THUMOS-14 N = 500: K = 101
    assert (args.max_seqlen, args.smooth_kernel, args.k) == (500, 101, 7)


def test_a_dataset_of_your_own_takes_the_record_of_its_model():
    assert dataset_record("MyVideos").tiou_thresholds == THUMOS14.tiou_thresholds
    mine = dataset_record("MyVideos", "STCL_ACT")
    assert mine.name == "MyVideos" and mine.tiou_thresholds == ACTIVITYNET12.tiou_thresholds


def test_selection_scores():
    """The records' selection rule, as the evaluation protocol applies it (protocol.Reference)."""
    from protocol import Reference
    from utils.evaluation import SegmentTable

    def score(record, summary):
        reference = Reference([], [], np.zeros((0, 0)), SegmentTable.empty(), {}, np.asarray(record.tiou_thresholds),
                              selection_thresholds=record.selection_thresholds, selection=record.selection)
        return reference.selection_score(summary)

    thumos = {f"mAP@{t / 10:g}": float(t) for t in range(1, 10)}
    assert score(THUMOS14, thumos) == 1 + 2 + 3 + 4 + 5 + 6 + 7  # mAP@0.8, 0.9 left out
    anet = {f"mAP@{t:g}": 10.0 * i for i, t in enumerate(ACTIVITYNET12.tiou_thresholds)}
    assert score(ACTIVITYNET12, anet) == pytest.approx(45.0)
    assert ACTIVITYNET12.tiou_thresholds == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
