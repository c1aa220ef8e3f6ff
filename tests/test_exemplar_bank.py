"""The evaluation exemplar bank: cached vs resampled, mean of draws, and the loop reference.

A small demo dataset and an untrained small STCL-Net (D = 16) stand in for THUMOS.
"""
import dataclasses

import numpy as np
import pytest
import torch

from dataset.make_demo import make_demo_dataset
from model import STCLNet
from inference import evaluation_bank, mean_bank, run_network
from protocol import Reference, evaluate
from tests.oracles.released_loops import LoopSTCLNet, loop_exemplar_videos
from tests.helpers import exemplar_rows, exemplar_videos
from exemplar_source import ExemplarSource
from utils.checkpoint import load_weights, model_state_of, read_checkpoint, save_atomic
from wsad_dataset import SampleDataset

D, C, M, N = 16, 3, 2, 16
CPU = torch.device("cpu")


def small_model(num_class: int = C) -> STCLNet:
    torch.manual_seed(0)
    return STCLNet(feature_size=D, num_class=num_class).eval()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = make_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=12, num_test=6, num_class=C,
                             feature_size=D, seed=0)
    return SampleDataset(root, num_class=C, feature_size=D, max_seqlen=N)


def write_full_pool_dataset(root, test_lengths, rng):
    """One class whose pool holds exactly M training videos of exactly N snippets, and test videos.

    Then random-perturb is the identity and drawing M of M videos without replacement is a
    permutation: every exemplar draw is the same set of videos, in a random order.
    """
    folder = root / "Thumos14reduced-Annotations"
    folder.mkdir(parents=True)
    lengths = [N] * M + list(test_lengths)
    subsets = ["validation"] * M + ["test"] * len(test_lengths)

    def objects(items):
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array

    arrays = {"classlist": np.array([b"Action0"]),
              "videoname": np.array([f"video_{i}".encode() for i in range(len(lengths))]),
              "subset": np.array([s.encode() for s in subsets]),
              "duration": np.array([[t * 16 / 25] for t in lengths]),
              "labels_all": objects([["Action0"] for _ in lengths]),
              "labels": objects([["Action0"] for _ in lengths]),
              "segments": objects([[[0.0, t * 8 / 25]] for t in lengths])}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array, allow_pickle=True)
    features = objects([rng.normal(0, 1, (t, D)).astype(np.float32) for t in lengths])
    np.save(root / "Thumos14reduced-I3D-JOINTFeatures.npy", features, allow_pickle=True)
    return root


def assert_same_outputs(first, second, atol=0.0):
    assert list(first) == list(second)
    for name in first:
        for a, b in zip(first[name], second[name]):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=name)


def evaluate_checkpoint(path, dataset, seed):
    """A fresh model (other random weights) loaded from ``path``, evaluated with a cached bank."""
    torch.manual_seed(seed)
    model = STCLNet(feature_size=D, num_class=C)
    load_weights(model, model_state_of(read_checkpoint(path), path), path)
    outputs = run_network(model, dataset, ExemplarSource(dataset, M, CPU), CPU, exemplar_mode="cached",
                          exemplar_seed=5, progress=False)
    return outputs, evaluate(outputs, Reference.from_dataset(dataset))


def test_cached_evaluation_of_a_checkpoint_is_deterministic(demo, tmp_path):
    path = save_atomic({"model": small_model().state_dict()}, tmp_path / "checkpoint.pt")
    (outputs, first), (again, second) = (evaluate_checkpoint(path, demo, seed) for seed in (1, 2))
    assert_same_outputs(outputs, again)
    assert len(first.detections) > 0
    for column in dataclasses.fields(first.detections):
        np.testing.assert_array_equal(getattr(first.detections, column.name), getattr(second.detections, column.name))
    assert first.summary == second.summary
    # the bank matters: another seed draws other exemplars and gives other scores
    model, source = small_model(), ExemplarSource(demo, M, CPU)
    other = run_network(model, demo, source, CPU, exemplar_mode="cached", exemplar_seed=6, progress=False)
    assert any(not np.array_equal(other[name][0], outputs[name][0]) for name in other)


def test_resample_sees_the_cached_bank_on_the_first_video_only(demo):
    model, source = small_model(), ExemplarSource(demo, M, CPU)
    cached = run_network(model, demo, source, CPU, exemplar_mode="cached", exemplar_seed=3, progress=False)
    resampled = run_network(model, demo, source, CPU, exemplar_mode="resample", exemplar_seed=3, progress=False)
    names = list(cached)
    assert names[0] == demo.video_names[demo.test_index[0]]
    np.testing.assert_array_equal(resampled[names[0]][0], cached[names[0]][0])
    np.testing.assert_array_equal(resampled[names[0]][1], cached[names[0]][1])
    assert all(not np.allclose(resampled[n][0], cached[n][0], atol=1e-6) for n in names[1:])


def test_resample_equals_cached_when_every_draw_is_the_same_set(tmp_path):
    rng = np.random.default_rng(0)
    dataset = SampleDataset(write_full_pool_dataset(tmp_path, [10, N, 40, 75], rng), num_class=1,
                            feature_size=D, max_seqlen=N)
    generator = np.random.default_rng(1)
    draws = [exemplar_rows(dataset, M, generator) for _ in range(4)]
    # the draws are the same M videos in different orders (so the bank's columns permute)
    assert len({d.tobytes() for d in draws}) > 1
    assert len({np.sort(d, axis=1).tobytes() for d in draws}) == 1
    model, source = small_model(num_class=1), ExemplarSource(dataset, M, CPU)
    cached = run_network(model, dataset, source, CPU, exemplar_mode="cached", exemplar_seed=1, progress=False)
    resampled = run_network(model, dataset, source, CPU, exemplar_mode="resample", exemplar_seed=1, progress=False)
    assert_same_outputs(cached, resampled, atol=1e-6)


def test_background_set_depends_on_the_order_of_each_class_draw(demo):
    """With two or more classes, full pools do not fix the bank: the background set is the
    mean over classes of the m-th background exemplar of each class, so reordering one
    class's videos permutes its foreground set but changes the background set."""
    model = small_model()
    videos = torch.as_tensor(exemplar_videos(demo, M, np.random.default_rng(0)))  # (C, M, N, D)
    reordered = videos.clone()
    reordered[1] = videos[1].flip(0)
    with torch.no_grad():
        bank, other = model.exemplar_bank(videos), model.exemplar_bank(reordered)  # (C+1, D, M)
    torch.testing.assert_close(other[:C], torch.cat([bank[:1], bank[1:2].flip(-1), bank[2:C]]))
    for order in ([0, 1], [1, 0]):
        assert not torch.allclose(other[C], bank[C][:, order], atol=1e-4)


def test_scl_is_invariant_to_the_order_of_each_class_exemplars():
    torch.manual_seed(0)
    model = small_model()
    x, bank = torch.randn(2, D, 7), torch.randn(C + 1, D, 4)
    permuted = torch.stack([row[:, torch.randperm(4)] for row in bank])
    with torch.no_grad():
        torch.testing.assert_close(model.scl(x, permuted), model.scl(x, bank), rtol=0, atol=1e-6)
        mixed = bank.clone()
        mixed[0, :, 0], mixed[1, :, 0] = bank[1, :, 0], bank[0, :, 0]  # exemplars moved between classes
        assert not torch.allclose(model.scl(x, mixed), model.scl(x, bank), atol=1e-4)


def test_mean_of_draws_is_the_mean_of_single_draw_banks(demo):
    model, source = small_model(), ExemplarSource(demo, M, CPU)
    mean = mean_bank(model, source.draw, np.random.default_rng(7), draws=3)
    generator = np.random.default_rng(7)
    singles = [mean_bank(model, source.draw, generator, draws=1) for _ in range(3)]
    assert not torch.allclose(singles[0], singles[1])
    torch.testing.assert_close(mean, torch.stack(singles).mean(dim=0), rtol=0, atol=1e-6)
    recorded = evaluation_bank(model, source.draw, seed=7, draws=3)
    torch.testing.assert_close(recorded.bank, mean, rtol=0, atol=0)
    assert recorded.recipe.describe() == f"seed 7, 3 draws, M = {M}, N = {N}"


def test_the_one_source_draws_the_same_exemplars_from_either_placement(demo):
    """Training and evaluation draw through ExemplarSource alone: pools kept on the device or
    gathered on the host give the same videos and snippets for the same generator."""
    device, host = ExemplarSource(demo, M, CPU, "device"), ExemplarSource(demo, M, CPU, "host")
    for seed in (0, 1):
        torch.testing.assert_close(host.draw(np.random.default_rng(seed)),
                                   device.draw(np.random.default_rng(seed)), rtol=0, atol=0)


def test_loop_reference_computes_what_the_project_computes(demo):
    """The benchmarks' loop-based baseline draws the same exemplars and gives the same
    outputs and gradients (eval mode, so no dropout)."""
    model = small_model()
    loop = LoopSTCLNet(feature_size=D, num_class=C).eval()
    loop.load_state_dict(model.state_dict())
    source = ExemplarSource(demo, M, CPU)
    videos = source.draw(np.random.default_rng(2))
    torch.testing.assert_close(loop_exemplar_videos(demo, M, np.random.default_rng(2), CPU), videos, rtol=0, atol=0)
    features = torch.as_tensor(demo.load_batch(np.random.default_rng(4))[0][:4])
    outputs = [net(features, exemplar_videos=videos) for net in (model, loop)]
    for name in outputs[0]:
        torch.testing.assert_close(outputs[1][name], outputs[0][name], rtol=1e-5, atol=1e-5)
    for out in outputs:
        out["cas"].square().mean().backward()
    loop_parameters = dict(loop.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(loop_parameters[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
