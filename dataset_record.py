"""What differs between THUMOS-14 and ActivityNet: one record per dataset.

The released code spreads these differences over two model classes, two loaders, the
training script and the evaluator; here each dataset is one frozen :class:`DatasetRecord`
(docs/METHOD.md#5-objective, ``#6-activitynet``, ``#8-detection-map``), and every part of the
program reads its settings from it:

- the data: class count, which ``subset.npy`` values train and test, the short-video drop;
- the model (``STCLNet`` constructor arguments): which TCL layer feeds ``cls_intra``, the
  smoothing of the scores;
- the objective (criterion arguments and loss weights): M, the KL weight, the weight of the
  mutual-learning term, the top-k ratio k;
- the paper's optimisation settings: learning rate, N = max_seqlen, iterations;
- the evaluation: tIoU thresholds, the averages shown, the checkpoint-selection score.

``options.resolve_dataset`` fills every option the user did not give from the record; an
option the user gives wins. A dataset of your own (a ``--dataset-name`` not listed here)
takes the record of the model it is trained with (``--use-model``: STCL_THU -> THUMOS-14,
STCL_ACT -> ActivityNet 1.2) under its own name, and its split is read from ``subset.npy``.

No torch: the options module reads it. The tIoU thresholds are those of ``utils/evaluation.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from utils import evaluation

#: The tIoU thresholds of each protocol, as plain floats (their one definition is utils/evaluation.py).
THUMOS_TIOU = tuple(evaluation.THUMOS_TIOU.tolist())  # 0.1, 0.2, ..., 0.9
ACTIVITYNET_TIOU = tuple(evaluation.ACTIVITYNET_TIOU.tolist())  # 0.5, 0.55, ..., 0.95


@dataclass(frozen=True)
class DatasetRecord:
    """Everything that differs between the datasets (docs/METHOD.md#6-activitynet).

    Data:
        name: the file prefix (``--dataset-name``).
        num_class: C, action classes without background.
        train_subset, test_subset: the ``subset.npy`` values of the training and test lists.
        subsets: every ``subset.npy`` value the dataset may hold (others are an error).
        min_snippets: videos with fewer snippets leave both lists (ActivityNet: 11, i.e.
            videos of 10 snippets or fewer are dropped); they still serve as exemplars, and
            the test ones keep their ground truth (their instances count as misses).
    Model (``STCLNet`` arguments):
        use_model: the released model class this dataset was published with.
        tcl_depth: which TCL layer's output feeds ``cls_intra`` (2 = the last; ActivityNet 1).
        smooth_t: ActivityNet smoothing, kernel ``(max_seqlen // t) // 2 * 2 + 1``; None = none.
    Objective:
        num_exemplars: M, exemplar videos per class for SCL.
        kl_weight: weight of the branch KL term.
        mutual_weight: weight of the RGB/flow mutual-learning term (``--alpha4``; the
            released STCL_ACT fixes it at 1 and ignores ``--alpha4``).
        k: top-k MIL ratio, the top T // k snippets of each class are averaged.
    Optimisation (the paper's runs):
        lr, max_seqlen (N), max_iter.
    Evaluation:
        tiou_thresholds: the tIoU thresholds of detection mAP.
        averages: the named averages reported beside them (``utils.evaluation.summarize``).
        selection_thresholds, selection: the checkpoint-selection score, the ``"sum"`` or the
            ``"mean"`` of mAP at those thresholds (THUMOS: sum over 0.1..0.7; ActivityNet:
            mean over its 10 thresholds).
    """

    name: str
    num_class: int
    train_subset: str
    test_subset: str
    subsets: Tuple[str, ...]
    min_snippets: int
    use_model: str
    tcl_depth: int
    smooth_t: Optional[int]
    num_exemplars: int
    kl_weight: float
    mutual_weight: float
    k: float
    lr: float
    max_seqlen: int
    max_iter: int
    tiou_thresholds: Tuple[float, ...]
    averages: Tuple[str, ...]
    selection_thresholds: Tuple[float, ...]
    selection: str

    def smooth_kernel(self, max_seqlen: int, t: Optional[int] = None) -> int:
        """The width of the ActivityNet average pool for N = ``max_seqlen`` (1 = no smoothing).

        ``t`` overrides the record's ``smooth_t`` (the ``--t`` option).
        """
        t = self.smooth_t if t is None else t
        return 1 if t is None else (max_seqlen // t) // 2 * 2 + 1

THUMOS14 = DatasetRecord(
    name="Thumos14reduced", num_class=20,
    train_subset="validation", test_subset="test", subsets=("validation", "test"), min_snippets=0,
    use_model="STCL_THU", tcl_depth=2, smooth_t=None,
    num_exemplars=10, kl_weight=1.0, mutual_weight=1.0, k=7,
    lr=5e-5, max_seqlen=500, max_iter=10000,
    tiou_thresholds=THUMOS_TIOU, averages=("avg 0.1:0.5", "avg 0.3:0.7", "avg 0.1:0.7", "avg 0.1:0.9"),
    selection_thresholds=THUMOS_TIOU[:7], selection="sum",  # 0.1 .. 0.7
)

ACTIVITYNET12 = DatasetRecord(
    name="ActivityNet1.2", num_class=100,
    train_subset="training", test_subset="validation", subsets=("training", "validation", "testing"),
    min_snippets=11,
    use_model="STCL_ACT", tcl_depth=1, smooth_t=5,
    num_exemplars=5, kl_weight=0.1, mutual_weight=1.0, k=5,
    lr=3e-5, max_seqlen=60, max_iter=40000,
    tiou_thresholds=ACTIVITYNET_TIOU, averages=("avg 0.5:0.95",),
    selection_thresholds=ACTIVITYNET_TIOU, selection="mean",
)

#: ActivityNet 1.3: the same record with 200 classes.
ACTIVITYNET13 = replace(ACTIVITYNET12, name="ActivityNet1.3", num_class=200)

RECORDS: Dict[str, DatasetRecord] = {r.name: r for r in (THUMOS14, ACTIVITYNET12, ACTIVITYNET13)}

#: The record each released model class was published with; its model and objective
#: settings are the ones ``--use-model`` selects.
MODEL_RECORDS: Dict[str, DatasetRecord] = {"STCL_THU": THUMOS14, "STCL_ACT": ACTIVITYNET12}

#: The fields ``--use-model`` takes from its model's record (the released model class
#: hard-codes them); the others stay the dataset's.
MODEL_FIELDS = ("use_model", "tcl_depth", "smooth_t", "num_exemplars", "kl_weight", "mutual_weight")


def dataset_record(dataset_name: str, use_model: Optional[str] = None) -> DatasetRecord:
    """The record of ``dataset_name``, with the model settings of ``use_model`` if given.

    A name that is not in :data:`RECORDS` takes the record of ``use_model`` (default
    STCL_THU) under its own name.
    """
    if use_model is not None and use_model not in MODEL_RECORDS:
        raise ValueError(f"unknown model {use_model!r}; expected one of {sorted(MODEL_RECORDS)}")
    if dataset_name not in RECORDS:
        return replace(MODEL_RECORDS[use_model or "STCL_THU"], name=dataset_name)
    record = RECORDS[dataset_name]
    if use_model is None or use_model == record.use_model:
        return record
    model = MODEL_RECORDS[use_model]
    return replace(record, **{name: getattr(model, name) for name in MODEL_FIELDS})


def record_for_subsets(values) -> DatasetRecord:
    """THUMOS-14 or ActivityNet 1.2, from the values of a ``subset.npy`` (a dataset of your own)."""
    return ACTIVITYNET12 if "training" in set(values) else THUMOS14
