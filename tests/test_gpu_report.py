"""benchmarks/gpu_report.py: the --smoke run goes through every part of the GPU report."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu_report
from options import parse_args
from wsad_dataset import SampleDataset


def test_smoke_report_runs_every_part_and_writes_json_and_markdown(tmp_path, capsys):
    report = gpu_report.main(["--smoke", "--out", str(tmp_path), "--device", "cpu"])
    printed = capsys.readouterr().out
    table = (tmp_path / "report.md").read_text()
    assert "| measure | fp32 | --amp (bf16) | target on an H200 | authors' code, H200 |" in printed
    assert table.strip() in printed and "SMOKE RUN" in table and "not judged (no GPU)" in table
    assert json.loads((tmp_path / "report.json").read_text())["config"] == report["config"]
    assert report["config"]["test_videos"] == 212 and report["config"]["C"] == 20 and report["config"]["M"] == 10
    for mode in ("fp32", "amp"):
        train, evaluation = report["train"][mode], report["evaluation"][mode]
        assert train["iteration_s"] >= train["train_step_s"] > 0 and train["steps_timed"] == 3
        assert train["train_step_gflop"] > 0 and evaluation["network_gflop"] > 0
        assert evaluation["videos"] == 212 and evaluation["detections"] > 0
        assert evaluation["pass_s"] == pytest.approx(evaluation["network_s"] + evaluation["proposals_map_s"])
        assert report["schedule"][mode]["evaluations"] == 50
    assert report["train"]["fp32"]["exemplar_pool"] == "host"  # a mapped store on the CPU
    assert set(report["profiles"]) == {"train_fp32", "train_amp", "eval_network", "eval_proposals_map"}
    for profile in report["profiles"].values():
        assert profile["top"] and (tmp_path / profile["table"]).is_file()
    assert "evaluate" in " ".join(e["name"] for e in report["profiles"]["eval_proposals_map"]["top"])
    assert set(report["targets"]) == {"step_s", "amp_step_s", "eval_s", "schedule_h"}
    if all(importlib.util.find_spec(name) for name in ("feature_extraction", "cv2")):
        extraction = report["extraction"]
        assert extraction["flow_pairs_per_s"] > 0 and extraction["i3d_rgb_snippets_per_s"] > 0
        assert "flow pairs/s" in table
    else:
        assert "skipped" in report["extraction"]


def test_schedule_is_iterations_plus_periodic_and_final_evaluations_plus_saves():
    args = parse_args([])  # 10,000 iterations, evaluation every 200
    plan = gpu_report.schedule({"iteration_s": 0.2}, {"pass_s": 10.0}, {"last_s": 2.0, "best_s": 1.0}, args)
    assert plan["evaluations"] == 50  # after 200, 400, ..., 9,800 and after the last iteration
    assert plan["hours"] == pytest.approx((10_000 * 0.2 + 50 * 10 + 50 * 2) / 3600)


def test_without_the_annotations_a_demo_of_212_test_videos_stands_in(tmp_path):
    cfg = dict(gpu_report.SMOKE, device="cpu")
    origin = gpu_report.write_dataset(tmp_path, cfg, Path(tmp_path / "absent"), seed=0)
    assert origin.startswith("SYNTHETIC") and "not found" in origin
    dataset = SampleDataset(tmp_path, gpu_report.NAME, feature_size=cfg["feature_size"], max_seqlen=16)
    assert dataset.store.mapped and dataset.num_test == 212 and len(dataset.train_index) == 200
    assert np.all(dataset.store.lengths >= 80)


def test_owned_bytes_counts_weights_gradients_and_adam_state(tmp_path):
    cfg = dict(gpu_report.SMOKE, device="cpu")
    gpu_report.write_dataset(tmp_path, cfg, Path(tmp_path / "absent"), seed=0)
    args = gpu_report.project_args(cfg, amp=False)
    dataset = SampleDataset(tmp_path, gpu_report.NAME, feature_size=cfg["feature_size"], max_seqlen=16)
    trainer = gpu_report.Trainer(dataset, args, gpu_report.build_model(args).state_dict(), torch.device("cpu"), 0)
    trainer.timed()
    parameters = list(trainer.model.parameters())
    weights = sum(p.numel() * 4 for p in parameters)
    assert trainer.source.placement == "host"  # a mapped store on the CPU: no pool tensor of its own
    # weights, gradients, Adam's two moments, and one float32 step count per parameter tensor
    assert gpu_report.owned_bytes(trainer) == 4 * weights + 4 * len(parameters)
