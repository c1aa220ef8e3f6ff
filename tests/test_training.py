"""One training step, and a short run on planted data that really learns."""

import numpy as np
import pytest
import torch

from options import parse_args
from model import build_criterion, build_model
from train import NonFiniteLossError, build_optimizer, train_step

D, C, T = 16, 3, 32


def planted_videos(rng, n, directions):
    """n videos of T snippets; class c puts ``directions[c]`` on a random run of 6-14 snippets."""
    feats = rng.normal(0, 1, (n, T, D)).astype(np.float32)
    labels = rng.integers(0, C, n)
    for v, c in enumerate(labels):
        length = rng.integers(6, 15)
        start = rng.integers(0, T - length)
        feats[v, start:start + length] += directions[c]
    return feats, labels


def small_args(**kw):
    args = parse_args(["--feature-size", str(D), "--num-class", str(C), "--max-seqlen", str(T), "--lr", "1e-3"])
    vars(args).update(kw)
    return args


def video_accuracy(model, feats, labels, bank):
    model.eval()
    with torch.no_grad():
        cas = model(torch.from_numpy(feats), exemplar_bank=bank)["cas"]
    video_logits = cas.topk(max(1, T // 8), dim=1).values.mean(1)[:, :-1]
    return (video_logits.argmax(1).numpy() == labels).mean()


def test_short_run_learns_planted_classes():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    directions = rng.normal(0, 1, (C, D)).astype(np.float32) * 2.5
    pool_feats, pool_labels = planted_videos(rng, 60, directions)
    test_feats, test_labels = planted_videos(rng, 45, directions)
    args = small_args()
    model, criterion = build_model(args), build_criterion(args)
    optimizer = build_optimizer(model, args)

    def draw_exemplars():
        picks = [rng.choice(np.flatnonzero(pool_labels == c), 2, replace=False) for c in range(C)]
        return torch.from_numpy(pool_feats[np.stack(picks)])  # (C, M=2, T, D)

    def draw_batch():
        classes = rng.integers(0, C, 3)
        idx = np.concatenate([rng.choice(np.flatnonzero(pool_labels == c), 2, replace=False) for c in classes]
                             + [rng.integers(0, len(pool_labels), 2)])
        return torch.from_numpy(pool_feats[idx]), torch.eye(C)[pool_labels[idx]]

    with torch.no_grad():
        bank = model.eval().exemplar_bank(draw_exemplars())
    before = video_accuracy(model, test_feats, test_labels, bank)
    totals = []
    for it in range(150):
        feats, labels = draw_batch()
        totals.append(train_step(model, criterion, optimizer, feats, labels, draw_exemplars(), it)["total"])
    with torch.no_grad():
        bank = model.eval().exemplar_bank(draw_exemplars())
    after = video_accuracy(model, test_feats, test_labels, bank)
    first, last = np.mean(totals[:15]), np.mean(totals[-15:])
    assert last < first - 0.5, f"loss {first:.3f} -> {last:.3f}"
    assert after >= 0.9 and after > before + 0.3, f"video accuracy {before:.2f} -> {after:.2f}"


def test_train_step_returns_floats_and_updates():
    torch.manual_seed(0)
    args = small_args()
    model, criterion = build_model(args), build_criterion(args)
    optimizer = build_optimizer(model, args)
    before = model.cls_base[4].weight.detach().clone()
    labels = torch.eye(C)[[0, 0, 1, 1, 2, 2]]
    losses = train_step(model, criterion, optimizer, torch.randn(6, T, D), labels, torch.randn(C, 2, T, D))
    terms = {"mil", "branch", "kl", "co", "mutual", "norm", "guide", "snippet"}
    assert set(losses) == terms | {"total"} | {f"raw_{t}" for t in terms}
    assert all(isinstance(v, float) and np.isfinite(v) for v in losses.values())
    assert losses["total"] == pytest.approx(sum(losses[t] for t in terms), rel=1e-5)
    weights = criterion.weight_dict  # weighted = raw x weight, applied in one place (model.weigh)
    assert (weights["norm"], weights["guide"]) == (0.8, 0.8)
    for t in terms:
        assert losses[t] == pytest.approx(weights[t] * losses[f"raw_{t}"], rel=1e-6), t
    assert not torch.equal(before, model.cls_base[4].weight)


def test_amp_step_runs_in_bfloat16_and_keeps_float32_weights():
    # --amp is bfloat16 autocast on any device: the loss moves a little (proof that the
    # network ran in bfloat16), the weights and their update stay float32.
    labels = torch.eye(C)[[0, 0, 1, 1, 2, 2]]
    inputs = torch.Generator().manual_seed(0)
    features, exemplars = torch.randn(6, T, D, generator=inputs), torch.randn(C, 2, T, D, generator=inputs)
    results = {}
    for amp in (False, True):
        torch.manual_seed(0)
        args = small_args()
        model, criterion = build_model(args), build_criterion(args)
        optimizer = build_optimizer(model, args)
        torch.manual_seed(1)
        results[amp] = train_step(model, criterion, optimizer, features, labels, exemplars, amp=amp), model
    (plain, _), (mixed, model) = results[False], results[True]
    assert mixed["total"] != plain["total"]
    for term in set(plain) - {"snippet", "raw_snippet", "total"}:  # the snippet term picks snippets by thresholds
        assert mixed[term] == pytest.approx(plain[term], rel=0.05, abs=0.01), term
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())


def test_non_finite_loss_stops_before_the_update():
    args = small_args()
    model, criterion = build_model(args), build_criterion(args)
    optimizer = build_optimizer(model, args)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = torch.randn(6, T, D)
    feats[0, 3, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="iteration 7"):
        train_step(model, criterion, optimizer, feats, torch.eye(C)[[0, 0, 1, 1, 2, 2]],
                   torch.randn(C, 2, T, D), iteration=7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_variant_defaults():
    thu = parse_args([])
    act = parse_args(["--use-model", "STCL_ACT"])
    assert (thu.num_exemplars, thu.kl_weight, thu.use_model) == (10, 1.0, "STCL_THU")
    assert (act.num_exemplars, act.kl_weight, act.use_model) == (5, 0.1, "STCL_ACT")
    assert build_criterion(act).weight_dict["mutual"] == 1.0  # the released STCL_ACT's fixed weight
    assert (thu.lr, thu.weight_decay, thu.max_iter, thu.interval, thu.seed, thu.k) == (5e-5, 1e-3, 10000, 200, 3552, 7)
