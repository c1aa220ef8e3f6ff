"""Per-video figures (utils/visualize.py) and learning curves (utils/plots.py)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from utils.errors import DataError
from utils.plots import (learning_curve_data, main as plots_main, plot_learning_curves,
                         read_losses, read_results, running_mean)
from utils.cas_folder import read_cas_folder, write_cas_folder
from utils.visualize import main as visualize_main, plot_video, video_figure_data, video_score, visualize_videos

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["A", "B", "C", "D"]  # C = 4 classes, background is column 4


def small_video():
    """T = 10 snippets. Class A fires at snippets 2..4 (cas 2), B at snippet 7 (cas 1)."""
    cas = np.zeros((10, 5))
    cas[2:5, 0] = 2.0
    cas[7, 1] = 1.0
    attn = np.full((10, 1), 0.5)
    attn[[2, 3, 4, 7]] = 1.0
    gt_segments, gt_labels = np.array([[6.0, 9.0]]), np.array([2])  # class C only
    detections = (np.array([2.0, 2.0, 7.0, 0.0]),   # start
                  np.array([5.0, 4.0, 8.0, 1.0]),   # end
                  np.array([0, 0, 1, 1]),           # label
                  np.array([0.9, 0.3, 0.5, 0.6]))   # score
    return cas, attn, gt_segments, gt_labels, detections


def small_figure_data():
    cas, attn, gt_segments, gt_labels, detections = small_video()
    return video_figure_data(cas, attn, gt_segments, gt_labels, detections, NAMES,
                             score_cut=0.5, top_classes=1, scale=0.5)


def assert_png(path: Path, width: int, height: int):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert imread(path).shape[:2] == (height, width)


def test_video_score_is_the_softmax_of_top_k_means_of_cas_times_attn():
    cas = np.zeros((20, 3))  # T = 20 -> top k = 2
    cas[0, 0], cas[1, 0] = 4.0, 2.0
    cas[:, 1] = 1.0
    attn = np.full((20, 1), 0.5)
    # top-2 means of cas * attn: class 0 (2 + 1) / 2 = 1.5, class 1: 0.5, background 0
    expected = np.exp([1.5, 0.5]) / np.exp([1.5, 0.5, 0.0]).sum()
    np.testing.assert_allclose(video_score(cas, attn), expected)


def test_classes_are_the_top_ones_plus_ground_truth_and_detected_classes_by_score():
    data = small_figure_data()
    # top 1 by video score: A; C has the ground truth; B a detection above the cut; D none.
    assert data.classes.tolist() == [0, 1, 2]
    assert data.class_names == ["A", "B", "C"]
    # video maxima of cas * attn: A 2, B 1, C 0, D 0, background 0
    np.testing.assert_allclose(data.video_score, np.exp([2.0, 1.0, 0.0]) / (np.exp(2) + np.e + 3))


def test_segments_are_converted_to_seconds_and_only_detections_above_the_cut_kept():
    data = small_figure_data()
    np.testing.assert_array_equal(data.gt[2], [[3.0, 4.5]])
    assert data.gt[0].shape == (0, 2) and data.gt[1].shape == (0, 2)
    np.testing.assert_array_equal(data.detections[0], [[1.0, 2.5]])  # 0.3 dropped
    np.testing.assert_array_equal(data.detection_scores[0], [0.9])
    np.testing.assert_array_equal(data.detections[1], [[0.0, 0.5]])  # 0.5 is not above 0.5
    np.testing.assert_array_equal(data.detection_scores[1], [0.6])
    assert data.detections[2].shape == (0, 2)


def test_time_axis_and_curves():
    data = small_figure_data()
    np.testing.assert_allclose(data.time, np.arange(10) * 0.5 + 0.25)
    assert data.duration == 5.0
    np.testing.assert_array_equal(data.actionness, [0.5, 0.5, 1, 1, 1, 0.5, 0.5, 1, 0.5, 0.5])
    # CAS is a softmax over the C+1 = 5 columns of each snippet
    np.testing.assert_allclose(data.cas[0][[0, 2]], [0.2, np.exp(2) / (np.exp(2) + 4)])
    np.testing.assert_allclose(data.cas[1][7], np.e / (np.e + 4))
    e2, e = np.exp(2), np.e  # class C is 0 everywhere: 1 / (sum of exp of the row)
    np.testing.assert_allclose(data.cas[2], 1 / np.array([5, 5, e2 + 4, e2 + 4, e2 + 4, 5, 5,
                                                          e + 4, 5, 5]))


def test_detections_may_be_any_object_with_the_four_attributes():
    cas, attn, gt_segments, gt_labels, (start, end, label, score) = small_video()

    class Table:  # duck-typed like utils.evaluation.SegmentTable
        pass

    table = Table()
    table.start, table.end, table.label, table.score = start, end, label, score
    data = video_figure_data(cas, attn, gt_segments, gt_labels, table, NAMES,
                             score_cut=0.5, top_classes=1, scale=0.5)
    np.testing.assert_array_equal(data.detections[0], [[1.0, 2.5]])


def test_plot_video_writes_a_1200_by_600_png(tmp_path):
    path = plot_video(small_figure_data(), tmp_path / "v.png", title="video_test_0000001")
    assert_png(path, 1200, 600)


def test_visualize_videos_writes_one_png_per_name_and_rejects_unknown_names(tmp_path):
    cas, attn, gt_segments, gt_labels, detections = small_video()
    args = ({"v1": cas, "v2": cas}, {"v1": attn, "v2": attn},
            {"v1": (gt_segments, gt_labels)}, {"v2": detections}, NAMES)
    written = visualize_videos(*args, ["v1", "v2"], tmp_path / "out", 0.5, 0.5)
    assert written == [tmp_path / "out" / "v1.png", tmp_path / "out" / "v2.png"]
    for path in written:
        assert_png(path, 1200, 600)
    with pytest.raises(DataError, match="'v3'"):
        visualize_videos(*args, ["v3"], tmp_path / "out", 0.5, 0.5)


def write_cas_dir(directory: Path) -> Path:
    """A ``test.py --save-cas`` folder of one video, the small one above, and a second,
    unsaved-here test video 1 that holds a ground-truth instance of its own."""
    cas, attn, _, _, _ = small_video()
    meta = {"class_names": NAMES, "video_names": ["video_test_0000004", "video_test_0000007"],
            "labels": [[0, 0, 1, 0], [1, 0, 0, 0]], "tiou_thresholds": [0.5], "scale": 0.5,
            "ground_truth_rows": [[0, 2, 6, 9], [1, 0, 1, 3]], "ambiguous": {}}
    return write_cas_folder(directory, {"video_test_0000004": (cas.astype(np.float32), attn.astype(np.float32))},
                            meta, {"video_test_0000004": [[2, 5, 0, 0.9], [7, 8, 1, 0.5]]})


def test_the_cas_folder_reads_back_what_was_written(tmp_path):
    saved = read_cas_folder(write_cas_dir(tmp_path / "cas"), ["video_test_0000004"])
    assert saved.class_names == NAMES and saved.scale == 0.5
    assert sorted(p.name for p in (tmp_path / "cas").iterdir()) == ["meta.json", "proposals.json",
                                                                     "video_test_0000004.npz"]
    assert list(saved.cas) == ["video_test_0000004"]
    assert saved.cas["video_test_0000004"].shape == (10, 5)
    assert saved.attn["video_test_0000004"].shape == (10, 1)
    segments, labels = saved.ground_truth()["video_test_0000004"]
    np.testing.assert_array_equal(segments, [[6, 9]])  # the row of video position 0 only
    assert labels.tolist() == [2]
    start, end, label, score = saved.detections()["video_test_0000004"]
    assert start.tolist() == [2, 7] and end.tolist() == [5, 8]
    assert label.tolist() == [0, 1] and score.tolist() == [0.9, 0.5]


def test_the_cas_folder_reader_names_the_file_and_the_problem(tmp_path):
    directory = write_cas_dir(tmp_path / "cas")
    with pytest.raises(DataError, match="video_test_0000007.npz.*incomplete"):
        read_cas_folder(directory)  # every video of meta.json
    with pytest.raises(DataError, match="video_test_0000009.npz"):
        read_cas_folder(directory, ["video_test_0000009"])
    one = ["video_test_0000004"]
    (directory / "proposals.json").write_text(json.dumps({"video_test_0000004": [[1, 2, 4, 0.1]]}))
    with pytest.raises(DataError, match=r"proposals.json.*video_test_0000004.*0\.\.3"):
        read_cas_folder(directory, one)
    np.savez(directory / "video_test_0000004.npz", cas=np.zeros((10, 21)), attn=np.zeros((10, 1)))
    with pytest.raises(DataError, match=r"video_test_0000004.npz.*\(10, 21\)"):
        read_cas_folder(directory, one)
    (directory / "meta.json").write_text(json.dumps({"class_names": NAMES, "scale": 0.5}))
    with pytest.raises(DataError, match="meta.json: video_names, labels, tiou_thresholds, ground_truth_rows, "
                                        "ambiguous missing"):
        read_cas_folder(directory, one)
    (directory / "meta.json").unlink()
    with pytest.raises(DataError, match="is not a --save-cas folder: .*meta.json is missing"):
        read_cas_folder(directory, one)


def test_visualize_cli_writes_the_requested_figures(tmp_path):
    directory = write_cas_dir(tmp_path / "cas")
    result = subprocess.run(
        [sys.executable, "-m", "utils.visualize", "--from-cas", str(directory),
         "--video", "video_test_0000004", "--out", str(tmp_path / "figs")],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_png(tmp_path / "figs" / "video_test_0000004.png", 1200, 600)


def test_visualize_cli_defaults_and_errors(tmp_path, capsys):
    directory = write_cas_dir(tmp_path / "cas")
    assert visualize_main(["--from-cas", str(directory), "--video", "video_test_0000004",
                           "--score-cut", "0.1"]) == 0
    assert_png(directory / "figures" / "video_test_0000004.png", 1200, 600)
    assert visualize_main(["--from-cas", str(directory), "--video", "nope"]) == 1
    assert "nope.npz" in capsys.readouterr().err
    for argv in (["--from-cas", str(directory)], ["--video", "x"], ["--from-cas"],
                 ["--bogus", "1"], ["--from-cas", "d", "--video", "x", "--score-cut", "high"]):
        with pytest.raises(SystemExit):
            visualize_main(argv)
        assert "usage" in capsys.readouterr().err


RESULTS_THUMOS = """iteration,mAP@0.1,mAP@0.2,mAP@0.3,mAP@0.4,mAP@0.5,mAP@0.6,mAP@0.7,mAP@0.8,mAP@0.9,avg 0.1:0.7,cmAP
200,10,10,10,10,10,10,10,1,1,10,50
400,80,70,60,50,40,30,10,5,1,48.57,90
600,70,60,50,40,30,20,10,5,1,40,91
"""
LOSSES = """iteration,mil,kl,total
0,1,-0.1,0.9
10,3,-0.3,2.7
20,5,-0.5,4.5
30,7,-0.7,6.3
"""


def write_run(directory: Path, results: str = RESULTS_THUMOS) -> Path:
    directory.mkdir()
    (directory / "results.csv").write_text(results)
    (directory / "losses.csv").write_text(LOSSES)
    return directory


def test_learning_curve_data_thumos_draws_0_1_to_0_7_and_their_average(tmp_path):
    run = write_run(tmp_path / "run")
    data = learning_curve_data(read_results(run / "results.csv"),
                               read_losses(run / "losses.csv"), window=2)
    assert list(data.map_curves) == [f"mAP@0.{i}" for i in range(1, 8)] + ["avg 0.1:0.7"]
    np.testing.assert_allclose(data.map_curves["avg 0.1:0.7"], [10, 340 / 7, 280 / 7])
    np.testing.assert_array_equal(data.eval_iteration, [200, 400, 600])
    assert data.best_iteration == 400
    assert list(data.loss_raw) == ["mil", "kl", "total"]
    np.testing.assert_array_equal(data.loss_iteration, [0, 10, 20, 30])
    np.testing.assert_allclose(data.loss_smooth["mil"], [1, 2, 4, 6])
    np.testing.assert_allclose(data.loss_smooth["kl"], [-0.1, -0.2, -0.4, -0.6])


def test_learning_curve_data_activitynet_draws_every_threshold():
    thresholds = ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"]
    results = {"iteration": np.array([100.0, 200.0])}
    results |= {f"mAP@{t}": np.array([float(i), 2.0 * i]) for i, t in enumerate(thresholds)}
    data = learning_curve_data(results, {"iteration": np.zeros(0)})
    assert list(data.map_curves)[-1] == "avg 0.5:0.95" and len(data.map_curves) == 11
    np.testing.assert_allclose(data.map_curves["avg 0.5:0.95"], [4.5, 9.0])
    assert data.best_iteration == 200


def test_running_mean_is_trailing_with_short_windows_at_the_start():
    np.testing.assert_allclose(running_mean(np.array([3.0, 6.0, 0.0, 3.0]), 3), [3, 4.5, 3, 3])
    np.testing.assert_allclose(running_mean(np.array([3.0, 6.0]), 1), [3, 6])


def test_plot_learning_curves_and_its_cli(tmp_path):
    run = write_run(tmp_path / "run")
    assert_png(plot_learning_curves(run, tmp_path / "curves.png"), 1200, 600)
    assert plots_main([str(run)]) == 0
    assert_png(run / "learning_curves.png", 1200, 600)
    with pytest.raises(SystemExit):
        plots_main([])


def test_bad_results_file_is_a_data_error_naming_file_and_line(tmp_path, capsys):
    run = write_run(tmp_path / "run", RESULTS_THUMOS.replace("48.57", "n/a"))
    with pytest.raises(DataError, match=r"results.csv: line 3.*'n/a'"):
        read_results(run / "results.csv")
    assert plots_main([str(run)]) == 1
    assert "results.csv: line 3" in capsys.readouterr().err
    with pytest.raises(DataError, match="not found"):
        read_losses(tmp_path / "missing.csv")


def test_best_marker_follows_the_selected_checkpoint(tmp_path):
    # main.py marks the checkpoint it kept in a `best` column; a final, unselected
    # evaluation with a higher average must not move the marker.
    results = RESULTS_THUMOS.replace("cmAP\n", "cmAP,best\n").replace(",50\n", ",50,1\n") \
        .replace(",90\n", ",90,1\n").replace(",91\n", ",91,0\n")
    results += "700,99,99,99,99,99,99,99,9,9,99,99,0\n"
    run = write_run(tmp_path / "run", results)
    data = learning_curve_data(read_results(run / "results.csv"), read_losses(run / "losses.csv"))
    assert data.best_iteration == 400


# -- detections that can be counted (issue 25) ----------------------------------------------------

def _overlapping_figure_data():
    from utils.visualize import video_figure_data as figure_data

    rng = np.random.default_rng(0)
    cas, attn = rng.normal(size=(100, 4)), rng.random(100)
    detections = (np.array([0, 18, 22, 25, 58, 61, 41]), np.array([100, 41, 39, 45, 82, 79, 58]),
                  np.array([0, 0, 0, 0, 1, 1, 1]), np.array([0.9, 1.2, 1.1, 0.8, 1.3, 0.7, 0.6]))
    return figure_data(cas, attn, np.array([[20, 40], [60, 80]]), np.array([0, 1]), detections,
                       ["Jump", "Run", "Swim"])


def test_overlapping_detections_get_lanes_of_their_own_and_touching_ones_share():
    from utils.visualize import assign_lanes

    segments = np.array([[0, 10], [2, 5], [5, 8], [10, 12], [3, 4]], dtype=float)
    lanes = assign_lanes(segments)
    assert lanes.tolist() == [0, 1, 1, 0, 2]  # [2, 5) and [5, 8) touch: one lane
    for lane in set(lanes.tolist()):
        spans = sorted(segments[lanes == lane].tolist())
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), lane


def test_lane_bars_do_not_overlap_carry_scores_and_mark_the_whole_video_detection():
    from utils.visualize import lane_bars, lane_rows

    data = _overlapping_figure_data()
    bars = lane_bars(data)
    detections = [b for b in bars if b.kind == "det"]
    assert len(detections) == 7 and sorted(b.score for b in detections) == [0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.3]
    by_row = {}
    for bar in bars:
        by_row.setdefault(bar.row, []).append(bar)
    for row, lane in by_row.items():
        assert len({(b.kind, b.c) for b in lane}) == 1, row  # one class and kind per lane
        spans = sorted((b.start, b.end) for b in lane)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), row
    assert [b.whole_video for b in detections if b.score == 0.9] == [True]  # snippets 0..100 of 100
    assert sum(b.whole_video for b in detections) == 1
    # Jump: GT + 4 lanes (the whole-video one overlaps all three others); Run: GT + 2; Swim: GT + 1 empty
    assert lane_rows(data) == 5 + 3 + 2 and max(b.row for b in bars) < lane_rows(data)


def test_legend_swatches_are_the_colours_of_the_class_bars(tmp_path):
    from utils.visualize import lane_bars, legend_entries, plot_video as draw

    data = _overlapping_figure_data()
    legend = {label: colour for label, colour, _ in legend_entries(data)}
    for bar in lane_bars(data):
        assert legend[data.class_names[list(data.classes).index(bar.c)]] == bar.colour
    assert any(hatch == "//" for *_, hatch in legend_entries(data))  # the whole-video style is explained
    assert len({legend[name] for name in data.class_names}) == len(data.class_names)
    assert_png(draw(data, tmp_path / "v.png"), 1200, 600)
