"""Running a trained STCL-Net: the evaluation exemplar bank, the network on videos, detections.

Three layers, each usable alone, shared by ``test.py`` (the annotated test split) and
``localize.py`` (any video), so that the two cannot compute different things:

- the **evaluation exemplar bank** (docs/METHOD.md#3-scl): SCL needs class exemplars
  drawn from training videos. At evaluation the bank is a policy, not a sample: one
  seeded draw (or the mean over several), computed once and reused for every video.
  :class:`EvaluationBank` holds it with how it was drawn, so a checkpoint can carry it and
  be evaluated without the training set;
- the network on one video (:func:`video_outputs`) or on every test video of a dataset
  (:func:`run_network`): CAS (T, C+1) and actionness (T, 1);
- the network and the evaluation protocol (``protocol.py``, numpy only) together:
  :func:`test` (every test video, then ``protocol.evaluate``: mAP) and :func:`localize`
  (one video: features in, detections in seconds out, ``protocol.detections_of``).

Units: T snippets of 16 frames; ``seconds_per_snippet`` = 16 / feature fps (0.64 s for
the 25 fps I3D features of THUMOS-14).
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from dataset_record import dataset_record
from proposal_methods import GAMMA
from protocol import Detection, EvaluationResult, Outputs, Reference, as_detections, detections_of, evaluate
from utils.device import autocast
from utils.errors import CheckpointError, DataError
from utils.evaluation import SECONDS_PER_SNIPPET
from utils.progress import progress_bar

#: Where a project checkpoint keeps its evaluation bank.
BANK_KEY = "exemplar_bank"

#: Draws SCL exemplar videos: a numpy generator -> (C, M, N, D) tensor on the model's device.
ExemplarDraw = Callable[[np.random.Generator], torch.Tensor]


# ======================================================================================
# The evaluation exemplar bank
# ======================================================================================

@dataclass(frozen=True)
class BankRecipe:
    """How an evaluation bank is drawn: ``draws`` seeded draws from ``numpy.random.default_rng(seed)``
    of M exemplar videos per class, each random-perturbed to N snippets, averaged."""

    seed: int
    draws: int
    num_exemplars: int  # M
    max_seqlen: int  # N

    @classmethod
    def from_args(cls, args) -> "BankRecipe":
        """The recipe the options ask for (``--exemplar-seed``, ``--exemplar-draws``, M, N)."""
        return cls(int(args.exemplar_seed), int(args.exemplar_draws), int(args.num_exemplars), int(args.max_seqlen))

    def describe(self) -> str:
        return (f"seed {self.seed}, {self.draws} draw{'s' if self.draws != 1 else ''}, "
                f"M = {self.num_exemplars}, N = {self.max_seqlen}")

    def differences(self, other: "BankRecipe") -> List[str]:
        """Option by option, where ``other`` differs from this recipe (``--flag mine vs theirs``)."""
        flags = {"seed": "--exemplar-seed", "draws": "--exemplar-draws", "num_exemplars": "--num-exemplars",
                 "max_seqlen": "--max-seqlen"}
        return [f"{flag} {getattr(self, k)} vs {getattr(other, k)}" for k, flag in flags.items()
                if getattr(self, k) != getattr(other, k)]


@dataclass(frozen=True)
class EvaluationBank:
    """An exemplar bank for evaluation and how it was drawn.

    bank: (C+1, D, M) float32 on the CPU, background set last (what
    ``STCLNet.exemplar_bank`` returns, averaged over the draws).
    class_names: (C,) the classes of the bank's rows (the dataset's class list), when known.
    """

    bank: torch.Tensor
    recipe: BankRecipe
    class_names: Optional[List[str]] = None

    @property
    def num_class(self) -> int:
        return self.bank.shape[0] - 1

    @property
    def feature_size(self) -> int:
        return self.bank.shape[1]

    def to_checkpoint(self) -> dict:
        """What a checkpoint stores under :data:`BANK_KEY` (tensors and ints only)."""
        r = self.recipe
        record = {"bank": self.bank.detach().cpu().float(), "seed": r.seed, "draws": r.draws,
                  "num_exemplars": r.num_exemplars, "max_seqlen": r.max_seqlen}
        if self.class_names is not None:
            record["class_names"] = list(self.class_names)
        return record

    @classmethod
    def from_checkpoint(cls, record, path) -> "EvaluationBank":
        """Read :meth:`to_checkpoint`'s record; a CheckpointError naming ``path`` if it is malformed."""
        keys = ("bank", "seed", "draws", "num_exemplars", "max_seqlen")
        if not isinstance(record, dict) or any(k not in record for k in keys):
            raise CheckpointError(f"checkpoint {path}: its {BANK_KEY!r} entry is not an exemplar bank "
                                  f"(expected a dict with {', '.join(keys)})")
        bank = record["bank"]
        if not isinstance(bank, torch.Tensor) or bank.dim() != 3 or bank.shape[0] < 2:
            shape = tuple(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__
            raise CheckpointError(f"checkpoint {path}: the stored exemplar bank has shape {shape}, "
                                  "expected (C+1, D, M)")
        if not torch.isfinite(bank).all():
            raise CheckpointError(f"checkpoint {path}: the stored exemplar bank holds NaN or infinite values")
        recipe = BankRecipe(*(int(record[k]) for k in keys[1:]))
        if bank.shape[2] != recipe.num_exemplars:
            raise CheckpointError(f"checkpoint {path}: the stored exemplar bank holds {bank.shape[2]} exemplars "
                                  f"per class but says it was drawn with M = {recipe.num_exemplars}")
        names = record.get("class_names")
        if names is not None and (not isinstance(names, (list, tuple)) or len(names) != bank.shape[0] - 1):
            raise CheckpointError(f"checkpoint {path}: the stored exemplar bank has {bank.shape[0] - 1} classes "
                                  f"but names {len(names) if isinstance(names, (list, tuple)) else names!r}")
        return cls(bank.float(), recipe, None if names is None else [str(n) for n in names])

    def check_fits(self, model, path) -> None:
        """A CheckpointError naming both when the bank's D or C is not the model's."""
        if (self.feature_size, self.num_class) != (model.feature_size, model.num_class):
            raise CheckpointError(
                f"the exemplar bank of {path} was built with feature size D = {self.feature_size} and "
                f"{self.num_class} classes, but the model has D = {model.feature_size} and "
                f"{model.num_class} classes: the bank belongs to another model")


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """The model in eval mode (no dropout) and without autograd; its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def mean_bank(model, draw: ExemplarDraw, rng: np.random.Generator, draws: int = 1) -> torch.Tensor:
    """The mean over ``draws`` draws of ``model.exemplar_bank(draw(rng))``: (C+1, D, M)."""
    with evaluating(model):
        return torch.stack([model.exemplar_bank(draw(rng)) for _ in range(draws)]).mean(dim=0)


def evaluation_bank(model, draw: ExemplarDraw, *, seed: int = 0, draws: int = 1,
                    class_names: Optional[Iterable[str]] = None) -> EvaluationBank:
    """The deterministic evaluation bank of ``model``: ``draws`` draws from a generator seeded
    with ``seed``, averaged (eval mode, no gradient). M and N are read off the drawn videos;
    ``class_names`` (C,) are kept with it (a checkpoint then names its classes)."""
    rng = np.random.default_rng(seed)
    shapes = []

    def recorded(generator):
        videos = draw(generator)  # (C, M, N, D)
        shapes.append(tuple(videos.shape))
        return videos

    bank = mean_bank(model, recorded, rng, draws)
    _, m, n, _ = shapes[0]
    return EvaluationBank(bank.detach().cpu().float(), BankRecipe(seed, draws, m, n),
                          None if class_names is None else [str(c) for c in class_names])


# ======================================================================================
# The network on videos
# ======================================================================================

BankLike = Union[torch.Tensor, EvaluationBank]


def _bank_tensor(bank: BankLike) -> torch.Tensor:
    return bank.bank if isinstance(bank, EvaluationBank) else bank


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def video_outputs(model, bank: BankLike, features, *, device: Optional[torch.device] = None,
                  amp: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """The network on one whole video (batch of one, eval mode, no resampling).

    features: (T, D) snippet features (numpy or torch); bank: (C+1, D, M) exemplar bank.
    Returns cas (T, C+1) and actionness attn (T, 1), float32 numpy arrays.
    """
    device = device or _device_of(model)
    features = torch.as_tensor(features, dtype=torch.float32, device=device)
    if features.dim() != 2 or features.shape[1] != model.feature_size:
        raise DataError(f"features have shape {tuple(features.shape)}; the model needs (T, {model.feature_size})")
    with evaluating(model), autocast(device, amp):
        out = model(features[None], exemplar_bank=_bank_tensor(bank).to(device))
    return out["cas"][0].float().cpu().numpy(), out["attn"][0].float().cpu().numpy()


def run_network(model, dataset, source, device: torch.device, *, exemplar_mode: str = "cached",
                exemplar_draws: int = 1, exemplar_seed: int = 0, amp: bool = False, progress: bool = True,
                bank: Optional[BankLike] = None) -> Outputs:
    """:func:`video_outputs` of every test video of ``dataset``.

    exemplar_mode ``cached``: one bank for every video, ``bank`` when given, else
    :func:`evaluation_bank` of ``source`` (anything with ``draw(rng) -> (C, M, N, D)``, e.g.
    ``exemplar_source.ExemplarSource``) with ``exemplar_seed`` and ``exemplar_draws`` (deterministic).
    ``resample``: a new one-draw bank for every video, as the released code does (the draws
    come from the same seeded generator, so the first video sees the cached bank of one draw).
    """
    if exemplar_mode == "cached":
        bank = bank if bank is not None else evaluation_bank(model, source.draw, seed=exemplar_seed,
                                                             draws=exemplar_draws)
        next_bank = lambda: bank  # noqa: E731
    elif exemplar_mode == "resample":
        rng = np.random.default_rng(exemplar_seed)
        next_bank = lambda: mean_bank(model, source.draw, rng, 1)  # noqa: E731
    else:
        raise ValueError(f"exemplar_mode must be 'cached' or 'resample', got {exemplar_mode!r}")
    outputs = {}
    videos = progress_bar(dataset.test_videos(), total=dataset.num_test, desc="evaluating", leave=False,
                          enabled=progress)
    for features, _, name, _ in videos:
        outputs[name] = video_outputs(model, next_bank(), features, device=device, amp=amp)
    return outputs


def post_processing(args) -> dict:
    """The keyword arguments of ``protocol.evaluate`` the options give (``--proposal_method``,
    ``--gamma-oic``, ``--classification-topk``)."""
    return {"proposal_method": args.proposal_method, "gamma": args.gamma_oic,
            "classification_topk": args.classification_topk}


def test(model, dataset, source, args: argparse.Namespace, device: torch.device,
         reference: Optional[Reference] = None, progress: bool = True,
         bank: Optional[EvaluationBank] = None) -> EvaluationResult:
    """Evaluate ``model`` on the test videos of ``dataset`` (called by main.py).

    source: draws exemplar videos (``draw(rng)``); bank: the cached evaluation bank, when
    the caller has drawn it already (main.py stores it in its checkpoints).
    """
    outputs = run_network(model, dataset, source, device, exemplar_mode=args.exemplar_mode,
                          exemplar_draws=args.exemplar_draws, exemplar_seed=args.exemplar_seed,
                          amp=args.amp, progress=progress, bank=bank)
    reference = reference or Reference.from_dataset(dataset, dataset_record(args.dataset_name, args.use_model),
                                                    args.feature_fps)
    return evaluate(outputs, reference, **post_processing(args))


# ======================================================================================
# One video: features in, detections in seconds out
# ======================================================================================

def localize(model, bank: BankLike, features, *, class_names: Optional[Iterable[str]] = None,
             seconds_per_snippet: float = SECONDS_PER_SNIPPET, proposal_method: str = "multiple_threshold_hamnet",
             gamma: float = GAMMA, device: Optional[torch.device] = None, amp: bool = False) -> List[Detection]:
    """Action instances in one untrimmed video, most confident first.

    Args:
        model: a trained ``STCLNet`` (any mode; it runs in eval mode, then is restored).
        bank: its evaluation exemplar bank, (C+1, D, M) or an :class:`EvaluationBank`.
        features: (T, D) two-stream snippet features of the whole video (RGB first D/2).
        class_names: (C,) names, default ``"class <c>"``.
        seconds_per_snippet: 16 / feature fps.
        proposal_method, gamma: as ``test.py``'s ``--proposal_method`` and ``--gamma-oic``.
    Returns:
        a list of :class:`Detection` (start, end in seconds), by descending score. The same
        computation as ``test.py`` (:func:`video_outputs`, then :func:`detections_of`).
    """
    cas, attn = video_outputs(model, bank, features, device=device, amp=amp)
    table = detections_of(cas, attn, proposal_method=proposal_method, gamma=gamma)
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(model.num_class)]
    return sorted(as_detections(table, names, seconds_per_snippet), key=lambda d: -d.score)
