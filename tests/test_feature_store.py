"""The memory-mapped feature store: conversion, loading, identical training and evaluation, bad stores."""
import json

import numpy as np
import pytest
import torch

import convert_features
from dataset.make_demo import make_demo_dataset
from feature_store import FeatureStore, StoreWriter, convert, store_paths
from options import parse_args
from inference import run_network
from exemplar_source import ExemplarSource
from model import build_criterion, build_model
from tests.helpers import exemplar_videos
from train import build_optimizer, train_step
from utils.errors import DataError
from wsad_dataset import SampleDataset, build_dataset

D, C, N, M = 16, 3, 24, 2
NAME = "Thumos14reduced"


def _dataset(root, **kwargs):
    return SampleDataset(root, num_class=C, feature_size=D, max_seqlen=N, num_similar=1, batch_size=4, **kwargs)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo dataset holding both the released joint file and a float32 store of it."""
    root = make_demo_dataset(tmp_path_factory.mktemp("store"), num_train=12, num_test=4, num_class=C,
                             feature_size=D, seed=1)
    convert(root, NAME, progress=False)
    return root


def test_the_store_is_a_plain_npy_with_offsets_and_a_header(demo):
    features_file, offsets_file, header_file = store_paths(demo, NAME)
    joint = np.load(demo / f"{NAME}-I3D-JOINTFeatures.npy", allow_pickle=True)
    snippets = np.load(features_file, mmap_mode="r")
    offsets = np.load(offsets_file)
    header = json.loads(header_file.read_text())
    assert isinstance(snippets, np.memmap) and snippets.dtype == np.float32
    assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(v) for v in joint])]).tolist()
    for v, video in enumerate(joint):
        np.testing.assert_array_equal(snippets[offsets[v]:offsets[v + 1]], video.astype(np.float32))
    names = np.load(demo / f"{NAME}-Annotations" / "videoname.npy")
    assert header["videos"] == [n.decode() for n in names] and header["total_snippets"] == len(snippets)
    assert header["all_zero_videos"] == [] and not list(demo.glob("*.tmp"))


def test_auto_reads_the_store_and_joint_can_be_forced(demo):
    mapped, joint = _dataset(demo), _dataset(demo, feature_format="joint")
    assert mapped.store.mapped and not joint.store.mapped
    for name in ("train_index", "test_index", "train_offsets", "train_lengths"):
        np.testing.assert_array_equal(getattr(mapped, name), getattr(joint, name))
    for a, b in zip(mapped.class_train_index, joint.class_train_index):
        np.testing.assert_array_equal(a, b)
    for v in range(len(joint.features)):
        np.testing.assert_array_equal(mapped.features[v], joint.features[v])
    for a, b in zip(mapped.load_batch(np.random.default_rng(3)), joint.load_batch(np.random.default_rng(3))):
        np.testing.assert_array_equal(a, b)


def _losses_and_outputs(dataset, placement, steps=3):
    """Loss terms of `steps` training steps from a seeded start, then the network on every test video."""
    args = parse_args(["--feature-size", str(D), "--num-class", str(C), "--max-seqlen", str(N),
                       "--num-exemplars", str(M), "--batch-size", "4", "--num-similar", "1"])
    torch.manual_seed(0)
    model, criterion = build_model(args), build_criterion(args)
    optimizer = build_optimizer(model, args)
    source = ExemplarSource(dataset, M, torch.device("cpu"), placement)
    rng = np.random.default_rng(5)
    losses = []
    for iteration in range(steps):
        features, labels, _ = dataset.load_batch(rng)
        losses.append(train_step(model, criterion, optimizer, torch.from_numpy(features), torch.from_numpy(labels),
                                 source.draw(rng), iteration))
    return source.placement, losses, run_network(model, dataset, source, torch.device("cpu"), progress=False)


def test_training_and_evaluation_from_the_store_give_the_same_numbers(demo):
    placement, reference, outputs = _losses_and_outputs(_dataset(demo, feature_format="joint"), "auto")
    assert placement == "device"
    for expected_placement, dataset_placement in (("host", "auto"), ("device", "device")):
        placement, losses, mapped_outputs = _losses_and_outputs(_dataset(demo), dataset_placement)
        assert placement == expected_placement  # auto keeps a mapped store on the host on the CPU
        assert losses == reference  # identical floats, every term of every step
        assert mapped_outputs.keys() == outputs.keys()
        for name, (cas, attn) in outputs.items():
            np.testing.assert_array_equal(mapped_outputs[name][0], cas)
            np.testing.assert_array_equal(mapped_outputs[name][1], attn)
    assert reference[0]["total"] != reference[-1]["total"]  # the steps really changed the weights


def test_float16_store_holds_the_rounded_features(tmp_path):
    root = make_demo_dataset(tmp_path, num_train=6, num_test=2, num_class=C, feature_size=D, seed=2)
    assert convert_features.main(["--path-dataset", str(root), "--feature-dtype", "float16"]) == 0
    half, full = _dataset(root), _dataset(root, feature_format="joint")
    assert half.store.snippets.dtype == np.float16 and half.store.snippets.nbytes * 2 == full.store.snippets.nbytes
    for v in range(len(full.features)):
        assert half.features[v].dtype == np.float32
        np.testing.assert_array_equal(half.features[v], full.features[v].astype(np.float16).astype(np.float32))
    draw = ExemplarSource(half, M, torch.device("cpu"), "device").draw(np.random.default_rng(0))
    assert draw.dtype == torch.float32 and draw.shape == (C, M, N, D)
    rows = np.array([[5, 0, 5], [len(half.store.snippets) - 1, 2, 1]])
    staging = np.empty((2, 3, D), dtype=np.float16)  # the pinned buffer of a host pool on CUDA holds the store dtype
    assert half.store.gather(rows, out=staging) is staging
    np.testing.assert_array_equal(staging, half.store.snippets[rows])
    np.testing.assert_array_equal(full.store.gather(rows), full.store.snippets[rows])
    with pytest.raises(ValueError, match="out has shape"):
        half.store.gather(rows, out=staging[:1])


def test_writer_checks_every_video_and_leaves_no_store_after_a_failure(tmp_path):
    ok = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(DataError, match="video b: features hold 3 NaN"):
        with StoreWriter(tmp_path, NAME, 4) as writer:
            writer.add("a", ok)
            writer.add("b", np.where(np.eye(3, 4) > 0, np.nan, 1.0))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="video big: values up to 1e\\+06 do not fit float16"):
        with StoreWriter(tmp_path, NAME, 4, "float16") as writer:
            writer.add("big", ok * 1e6)
    with pytest.raises(DataError, match=r"video c: expected \(T, 4\) features, got shape \(3, 5\)"):
        with StoreWriter(tmp_path, NAME, 4) as writer:
            writer.add("c", np.ones((3, 5)))
    with StoreWriter(tmp_path, NAME, 4) as writer:
        writer.add("z", np.zeros((2, 4)))
        writer.add("a", ok)
    store = FeatureStore.open(tmp_path, NAME, ["z", "a"], 4)
    assert store.has_signal.tolist() == [False, True] and store.lengths.tolist() == [2, 3]
    np.testing.assert_array_equal(store.gather(np.array([[4, 0]])), [[ok[2], np.zeros(4)]])


def test_bad_stores_are_clear_errors_naming_the_file(tmp_path):
    root = make_demo_dataset(tmp_path, num_train=6, num_test=2, num_class=C, feature_size=D, seed=3)
    with pytest.raises(DataError, match="feature store not found"):
        _dataset(root, feature_format="store")
    convert(root, NAME, progress=False)
    with pytest.raises(DataError, match="features have 16 channels but feature_size is 8"):
        SampleDataset(root, num_class=C, feature_size=8, max_seqlen=N, num_similar=1, batch_size=4)
    features_file, offsets_file, header_file = store_paths(root, NAME)
    header = json.loads(header_file.read_text())
    header_file.write_text(json.dumps({**header, "videos": header["videos"][::-1]}))
    with pytest.raises(DataError, match="not those of videoname.npy, in its order"):
        _dataset(root)
    header_file.write_text(json.dumps(header))
    features_file.write_bytes(features_file.read_bytes()[:-D * 4])
    with pytest.raises(DataError, match=str(features_file)):
        _dataset(root)
    header_file.write_text("{not json")
    with pytest.raises(DataError, match="cannot read the feature-store header"):
        _dataset(root)


def test_converter_command_line_reports_errors_with_exit_code_2(tmp_path, capsys):
    assert convert_features.main(["--path-dataset", str(tmp_path)]) == 2
    assert "error: " in capsys.readouterr().err


def test_real_thumos_annotations_give_the_same_dataset_from_both_formats(tmp_path, thumos_annotations):
    folder = tmp_path / f"{NAME}-Annotations"
    folder.mkdir()
    for source in thumos_annotations.iterdir():
        (folder / source.name).symlink_to(source)
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((rng.integers(20, 61), 8)).astype(np.float32) for _ in range(412)]
    joint = np.empty(412, dtype=object)
    joint[:] = videos
    np.save(tmp_path / f"{NAME}-I3D-JOINTFeatures.npy", joint, allow_pickle=True)
    convert(tmp_path, NAME, progress=False)
    with pytest.warns(UserWarning, match="30 segments end after"):
        mapped = SampleDataset(tmp_path, feature_size=8, max_seqlen=50)
    with pytest.warns(UserWarning, match="30 segments end after"):
        released = SampleDataset(tmp_path, feature_size=8, max_seqlen=50, feature_format="joint")
    assert mapped.store.mapped and mapped.num_test == released.num_test == 212
    np.testing.assert_array_equal(mapped.train_index, released.train_index)
    assert all(np.array_equal(a, b) for a, b in zip(mapped.class_train_index, released.class_train_index))
    for a, b in zip(mapped.load_batch(np.random.default_rng(1)), released.load_batch(np.random.default_rng(1))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(exemplar_videos(mapped, 10, np.random.default_rng(2)),
                                  exemplar_videos(released, 10, np.random.default_rng(2)))
    for (a, *rest_a), (b, *rest_b) in zip(mapped.test_videos(), released.test_videos()):
        np.testing.assert_array_equal(a, b)
        assert rest_a[1:] == rest_b[1:]


def test_feature_format_and_exemplar_pool_flags_reach_the_training_run(demo, tmp_path):
    import main

    base = ["--path-dataset", str(demo), "--num-class", str(C), "--feature-size", str(D), "--max-seqlen", str(N),
            "--num-exemplars", str(M), "--batch-size", "4", "--num-similar", "1", "--device", "cpu",
            "--output-dir", str(tmp_path)]
    run = main.TrainingRun.start_or_resume(parse_args(base), progress=False)
    run.log.close()  # the defaults: the store is found, and a mapped store's pools stay on the host on the CPU
    assert run.dataset.store.mapped and run.source.placement == "host"
    run = main.TrainingRun.start_or_resume(parse_args(base + ["--feature-format", "joint", "--exemplar-pool", "host",
                                                              "--model-name", "joint"]), progress=False)
    run.log.close()
    assert not run.dataset.store.mapped and run.source.placement == "host"
    assert build_dataset(parse_args(base + ["--feature-format", "store"])).store.mapped
