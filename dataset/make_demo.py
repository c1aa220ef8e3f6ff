"""A small synthetic dataset in the THUMOS-14 or the ActivityNet layout, for trying the pipeline
without the real features.

    python -m dataset.make_demo [--out dataset/demo] [--difficulty 0.5] [--seed 0]
                                [--num-train 40] [--num-test 30] [--num-class 5] [--feature-size 64]
    python -m dataset.make_demo --layout activitynet --out dataset/demo_activitynet
    python -m dataset.make_demo --out dataset/demo --per-video-features features/   # + test videos as .npy

then train with `--path-dataset dataset/demo --num-class 5 --feature-size 64` (or
`bash train.sh --demo` / `bash train.sh --demo-activitynet`).

The features are built so that localisation is learnable but not trivial. The first
D/2 channels play the RGB stream and the last D/2 the flow stream; each stream has its
own random direction per class, one direction for "actionness" shared by every class and
one for background. A snippet inside an action instance carries its class direction plus
the actionness direction; background snippets carry the background direction; the few
snippets just before and after an instance carry a weaker, partial copy of the class
direction, so the boundaries are blurred. Everything gets Gaussian noise, a per-video
appearance offset and a per-video gain. `difficulty` in [0, 1] scales the noise, the
appearance offset and the strength of the context snippets.

THUMOS layout ('validation' trains, 'test' tests, Ambiguous_test.txt): videos are 80..300
snippets long with 1 or 2 classes (class c co-occurs with c + 1) and instances of 4..40
snippets. ActivityNet layout ('training' trains, 'validation' tests, no ambiguous file,
named ActivityNet1.2 by default): one class per video, lengths spread like ActivityNet 1.2's
(a median near 170 snippets, a few videos of 10 snippets or fewer, which the loader drops),
and one or two instances covering most of the video (35..90 %; the real median is 70 %).
Times are seconds = snippets * 16 / 25 (16-frame snippets at 25 fps).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.evaluation import FEATURE_FPS, SNIPPET_FRAMES
from utils.atomic import save_npy
from utils.layout import (ANNOTATIONS_SUFFIX, JOINT_FEATURES_SUFFIX, REQUIRED_ANNOTATIONS, check_video_name, file_in,
                          load_npy, text_array)

DEFAULT_OUT = Path(__file__).resolve().parent / "demo"
DEFAULT_NAME = "Thumos14reduced"
LAYOUTS = {"thumos": ("validation", "test"), "activitynet": ("training", "validation")}
DEFAULT_NAMES = {"thumos": DEFAULT_NAME, "activitynet": "ActivityNet1.2"}
ANET_LENGTHS = (20, 340)  # snippets of an ordinary ActivityNet-layout video (uniform; 1.2's 5..95 % span is 25..350)
ANET_SHORT = (3, 10)  # snippets of a short one, dropped by the loader
ANET_SHORT_SHARE = 0.04  # of the videos are short
ANET_COVERAGE = (0.35, 0.9)  # share of a video its instances cover
ANET_TWO_INSTANCES = 0.3  # probability of a second instance
ANNOTATION_FILES = (*REQUIRED_ANNOTATIONS, "extracted_fps", "original_fps")
FPS = FEATURE_FPS
SNIPPET_SECONDS = SNIPPET_FRAMES / FPS

MIN_LENGTH, MAX_LENGTH = 80, 300  # snippets per video
MIN_INSTANCE, MAX_INSTANCE = 4, 40  # snippets per action instance
MAX_INSTANCES = 6  # per video
CONTEXT = 3  # snippets of blurred context on each side of an instance
GAP = 2 * CONTEXT + 2  # the least background between two instances (and at the video ends)
CO_OCCURRENCE = 0.3  # probability that a video of class c also shows class c + 1
AMBIGUOUS_VIDEOS = 4


@dataclass(frozen=True)
class _Video:
    """One synthetic video: T snippets and its instances [start, end) in snippets."""

    name: str
    subset: str
    length: int
    classes: tuple[int, ...]
    instances: tuple[tuple[int, int, int], ...]  # (start, end, class), sorted by start


@dataclass(frozen=True)
class _Style:
    """The directions every snippet is built from; each array holds unit vectors of width D/2 per stream."""

    classes: np.ndarray  # (2, C, D/2)
    actionness: np.ndarray  # (2, D/2)
    background: np.ndarray  # (2, D/2)
    noise: float
    appearance: float
    context: float


def make_demo_dataset(out_dir=DEFAULT_OUT, *, num_train=40, num_test=30, num_class=5, feature_size=64,
                      difficulty=0.5, seed=0, dataset_name=None, layout="thumos") -> Path:
    """Write a synthetic dataset to `out_dir` in the layout of docs/METHOD.md#10-data-layout and return `out_dir`.

    `layout` "thumos": `num_train` videos form the 'validation' (training) subset and
    `num_test` the 'test' subset; "activitynet": 'training' and 'validation' (docs/METHOD.md#6-activitynet).
    `dataset_name` defaults to Thumos14reduced / ActivityNet1.2. The same seed gives the
    same files. A previous demo of the same name in `out_dir` is replaced; until the new
    one is complete its features file is absent.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    dataset_name = dataset_name or DEFAULT_NAMES[layout]
    _check_arguments(num_train, num_test, num_class, feature_size, difficulty)
    rng = np.random.default_rng(seed)
    style = _draw_style(rng, num_class, feature_size, difficulty)
    train_subset, test_subset = LAYOUTS[layout]
    draw = _draw_videos if layout == "thumos" else _draw_activitynet_videos
    videos = draw(rng, train_subset, num_train, num_class) + draw(rng, test_subset, num_test, num_class)
    features = [_render(video, style, rng) for video in videos]
    ambiguous = _ambiguous_lines([v for v in videos if v.subset == "test"], rng) if layout == "thumos" else None
    class_names = [f"Action{c}" for c in range(num_class)]
    out_dir = Path(out_dir)
    _write_atomically(out_dir, dataset_name, lambda staging: _write_layout(
        staging, dataset_name, class_names, videos, features, ambiguous))
    return out_dir


def write_per_video_features(dataset_dir, out_dir, dataset_name: str = DEFAULT_NAME) -> list[Path]:
    """Each test video of the dataset at ``dataset_dir`` as ``out_dir/<video>.npy``, its ``(T, D)``
    float32 snippet features, written atomically: the files ``localize.py`` reads.

    The test subset is 'test' (THUMOS layout) or 'validation' (ActivityNet layout). The
    dataset's files are read with the project's safe reader (utils.layout).
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    folder = dataset_dir / f"{dataset_name}{ANNOTATIONS_SUFFIX}"
    names = text_array(folder / "videoname.npy", "video names")
    subsets = text_array(folder / "subset.npy", "subsets")
    features = load_npy(dataset_dir / f"{dataset_name}{JOINT_FEATURES_SUFFIX}", "features")
    test = "test" if "test" in subsets else "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, subset, array in zip(names, subsets, features):
        if subset == test:
            name = check_video_name(name, str(folder / "videoname.npy"))
            written.append(save_npy(file_in(out_dir, name, ".npy"), np.asarray(array, dtype=np.float32)))
    return written


def ensure_demo(out_dir=DEFAULT_OUT, **kwargs) -> Path:
    """Build the demo with make_demo_dataset(out_dir, **kwargs) unless a complete one is there already.

    An existing demo is kept as it is, whatever `kwargs` say.
    """
    out_dir = Path(out_dir)
    name = kwargs.get("dataset_name") or DEFAULT_NAMES[kwargs.get("layout", "thumos")]
    if not _is_complete(out_dir, name):
        make_demo_dataset(out_dir, **kwargs)
    return out_dir


def _check_arguments(num_train: int, num_test: int, num_class: int, feature_size: int, difficulty: float) -> None:
    if not 0 <= difficulty <= 1:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    if feature_size < 2 or feature_size % 2:
        raise ValueError(f"feature_size must be even (two streams of D/2 channels), got {feature_size}")
    if num_class < 1 or num_train < 2 * num_class or num_test < 1:
        raise ValueError(f"need at least two training videos per class and one test video; got {num_train} "
                         f"training and {num_test} test videos for {num_class} classes")


# ----------------------------------------------------------------------------- videos

def _draw_videos(rng: np.random.Generator, subset: str, count: int, num_class: int) -> list[_Video]:
    """`count` videos whose first classes cycle through every class, so each class has videos."""
    primaries = rng.permutation(np.arange(count) % num_class)
    return [_draw_video(rng, f"video_{subset}_{i + 1:07d}", subset, int(primary), num_class)
            for i, primary in enumerate(primaries)]


def _draw_video(rng: np.random.Generator, name: str, subset: str, primary: int, num_class: int) -> _Video:
    length = int(rng.integers(MIN_LENGTH, MAX_LENGTH + 1))
    classes = [primary]
    if num_class > 1 and rng.random() < CO_OCCURRENCE:
        classes.append((primary + 1) % num_class)
    count = int(rng.integers(len(classes), MAX_INSTANCES + 1))
    instance_classes = classes + list(rng.choice(classes, size=count - len(classes)))
    longest = min(MAX_INSTANCE, length // 4)
    lengths = list(rng.integers(MIN_INSTANCE, longest + 1, size=count))
    while sum(lengths) + (len(lengths) + 1) * GAP > length:  # drop optional instances until they fit
        lengths.pop()
        instance_classes.pop()
    order = rng.permutation(len(lengths))
    return _Video(name, subset, length, tuple(sorted(classes)),
                  _place(rng, length, [int(lengths[i]) for i in order], [int(instance_classes[i]) for i in order]))


def _place(rng: np.random.Generator, length: int, lengths: list[int],
           classes: list[int]) -> tuple[tuple[int, int, int], ...]:
    """Instances in order, separated by at least GAP snippets of background, the spare room spread at random."""
    spare = length - sum(lengths) - (len(lengths) + 1) * GAP
    extra = rng.multinomial(spare, np.full(len(lengths) + 1, 1 / (len(lengths) + 1)))
    instances, cursor = [], 0
    for size, cls, pad in zip(lengths, classes, extra):
        start = cursor + GAP + int(pad)
        instances.append((start, start + size, cls))
        cursor = start + size
    return tuple(instances)


def _draw_activitynet_videos(rng: np.random.Generator, subset: str, count: int, num_class: int) -> list[_Video]:
    """`count` one-class videos (every class cycled through) with ActivityNet-like lengths and
    one or two long instances."""
    primaries = rng.permutation(np.arange(count) % num_class)
    return [_draw_activitynet_video(rng, f"video_{subset}_{i + 1:07d}", subset, int(c))
            for i, c in enumerate(primaries)]


def _draw_activitynet_video(rng: np.random.Generator, name: str, subset: str, cls: int) -> _Video:
    if rng.random() < ANET_SHORT_SHARE:
        length = int(rng.integers(ANET_SHORT[0], ANET_SHORT[1] + 1))
    else:
        length = int(rng.integers(ANET_LENGTHS[0], ANET_LENGTHS[1] + 1))
    covered = max(1, int(round(rng.uniform(*ANET_COVERAGE) * length)))
    spare = length - covered  # background snippets
    if covered >= 8 and spare >= 1 and rng.random() < ANET_TWO_INSTANCES:  # two, background between them
        first = int(rng.integers(2, covered - 1))
        sizes = [first, covered - first]
    else:
        sizes = [covered]
    gaps = rng.multinomial(spare - (len(sizes) - 1), np.full(len(sizes) + 1, 1 / (len(sizes) + 1)))
    gaps[1:-1] += 1  # at least one background snippet between two instances
    instances, cursor = [], 0
    for size, gap in zip(sizes, gaps):
        start = cursor + int(gap)
        instances.append((start, start + size, cls))
        cursor = start + size
    return _Video(name, subset, length, (cls,), tuple(instances))


# ----------------------------------------------------------------------------- features

def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    vectors = rng.standard_normal(shape)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _draw_style(rng: np.random.Generator, num_class: int, feature_size: int, difficulty: float) -> _Style:
    half = feature_size // 2
    return _Style(classes=_unit(rng, 2, num_class, half), actionness=_unit(rng, 2, half),
                  background=_unit(rng, 2, half), noise=0.1 + 0.7 * difficulty,
                  appearance=0.1 + 0.4 * difficulty, context=0.2 + 0.5 * difficulty)


def _render(video: _Video, style: _Style, rng: np.random.Generator) -> np.ndarray:
    """(T, D) float32 features of one video, stream by stream."""
    streams = [_render_stream(video, style, stream, rng) for stream in range(2)]
    gain = rng.uniform(0.75, 1.25)
    return (gain * np.concatenate(streams, axis=1)).astype(np.float32)


def _render_stream(video: _Video, style: _Style, stream: int, rng: np.random.Generator) -> np.ndarray:
    """(T, D/2) features of one stream: background, then context and action snippets on top."""
    half = style.actionness.shape[1]
    appearance = style.appearance * _unit(rng, half)
    features = style.noise * rng.standard_normal((video.length, half)) + appearance
    features += style.background[stream]
    for start, end, cls in video.instances:
        signature = style.classes[stream, cls]
        strength = rng.uniform(0.7, 1.0, size=(end - start, 1))
        features[start:end] += strength * (signature + style.actionness[stream]) - style.background[stream]
        partial = signature * (rng.random(half) < 0.5)
        for lo, hi in ((max(0, start - CONTEXT), start), (end, min(video.length, end + CONTEXT))):
            features[lo:hi] += style.context * partial
    return features


def _ambiguous_lines(test_videos: list[_Video], rng: np.random.Generator) -> list[str]:
    """A few short 'ambiguous' intervals in the background before the first instance of some test videos."""
    chosen = rng.choice(len(test_videos), size=min(AMBIGUOUS_VIDEOS, len(test_videos)), replace=False)
    lines = []
    for index in sorted(chosen):
        video = test_videos[index]
        room = video.instances[0][0] - CONTEXT  # at least GAP - CONTEXT = 5 snippets
        start = int(rng.integers(0, room - 1))
        end = min(room, start + int(rng.integers(2, 7)))
        lines.append(f"{video.name}  {_seconds(start)} {_seconds(end)}")
    return lines


def _seconds(snippets: int) -> float:
    return round(snippets * SNIPPET_SECONDS, 2)


# ----------------------------------------------------------------------------- files

def _object_array(items: list) -> np.ndarray:
    """A 1-D object array holding `items` as they are (np.array would stack equal-length lists)."""
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


def _write_layout(root: Path, dataset_name: str, class_names: list[str], videos: list[_Video],
                  features: list[np.ndarray], ambiguous: list[str]) -> None:
    """The files of docs/METHOD.md#10-data-layout, with the dtypes of the released THUMOS-14 annotations."""
    folder = root / f"{dataset_name}{ANNOTATIONS_SUFFIX}"
    folder.mkdir()
    arrays = {
        "classlist": np.array([name.encode() for name in class_names]),
        "videoname": np.array([video.name.encode() for video in videos]),
        "subset": np.array([video.subset.encode() for video in videos]),
        "duration": np.array([[_seconds(video.length)] for video in videos]),
        "labels_all": _object_array([[class_names[c] for c in video.classes] for video in videos]),
        "labels": _object_array([[class_names[c] for _, _, c in video.instances] for video in videos]),
        "segments": _object_array([[[_seconds(s), _seconds(e)] for s, e, _ in video.instances] for video in videos]),
        "extracted_fps": np.full(len(videos), FPS, dtype=np.int64),
        "original_fps": np.full(len(videos), float(FPS)),
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array, allow_pickle=True)
    if ambiguous is not None:  # THUMOS only
        (folder / "Ambiguous_test.txt").write_text("".join(line + "\n" for line in ambiguous))
    np.save(root / f"{dataset_name}{JOINT_FEATURES_SUFFIX}", _object_array(features), allow_pickle=True)


def _write_atomically(out_dir: Path, dataset_name: str, write) -> None:
    """Run write(staging) in a temporary folder inside `out_dir`, then move its two entries in place.

    The old features file goes first and the new one comes last, so a half-written demo
    never has both a features file and an annotation folder.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".make_demo-", dir=out_dir))
    try:
        write(staging)
        features = f"{dataset_name}{JOINT_FEATURES_SUFFIX}"
        annotations = f"{dataset_name}{ANNOTATIONS_SUFFIX}"
        (out_dir / features).unlink(missing_ok=True)
        if (out_dir / annotations).exists():
            (out_dir / annotations).rename(staging / "previous-annotations")
        (staging / annotations).rename(out_dir / annotations)
        (staging / features).rename(out_dir / features)
    finally:
        shutil.rmtree(staging)


def _is_complete(out_dir: Path, dataset_name: str) -> bool:
    folder = out_dir / f"{dataset_name}{ANNOTATIONS_SUFFIX}"
    return (out_dir / f"{dataset_name}{JOINT_FEATURES_SUFFIX}").is_file() and all(
        (folder / f"{name}.npy").is_file() for name in ANNOTATION_FILES)


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> Path:
    """Command-line entry point: parse `argv` and build the demo."""
    parser = argparse.ArgumentParser(description="Build the synthetic STCL-Net demo dataset.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write the dataset into")
    parser.add_argument("--layout", default="thumos", choices=sorted(LAYOUTS),
                        help="thumos: 'validation' trains, 'test' tests; activitynet: 'training' / 'validation', "
                             "ActivityNet-like lengths and long instances")
    parser.add_argument("--dataset-name", default=None,
                        help="file prefix of the features and annotations (default: Thumos14reduced / ActivityNet1.2)")
    parser.add_argument("--difficulty", type=float, default=0.5, help="0 = clean features, 1 = noisy, blurred")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator")
    parser.add_argument("--num-train", type=int, default=40, help="training ('validation' subset) videos")
    parser.add_argument("--num-test", type=int, default=30, help="test videos")
    parser.add_argument("--num-class", type=int, default=5, help="action classes C")
    parser.add_argument("--feature-size", type=int, default=64, help="feature width D (even: two streams)")
    parser.add_argument("--per-video-features", type=Path, default=None, metavar="DIR",
                        help="also write each test video's (T, D) features as DIR/<video>.npy: the input "
                             "localize.py reads")
    args = parser.parse_args(argv)
    out = make_demo_dataset(args.out, num_train=args.num_train, num_test=args.num_test, num_class=args.num_class,
                            feature_size=args.feature_size, difficulty=args.difficulty, seed=args.seed,
                            dataset_name=args.dataset_name, layout=args.layout)
    name = args.dataset_name or DEFAULT_NAMES[args.layout]
    print(f"demo dataset written to {out}; train on it with --path-dataset {out} --dataset-name "
          f"{name} --num-class {args.num_class} --feature-size {args.feature_size}")
    if args.per_video_features:
        written = write_per_video_features(out, args.per_video_features, name)
        print(f"{len(written)} test videos' features written to {args.per_video_features}/<video>.npy "
              f"(localize.py --pretrained-ckpt CKPT {args.per_video_features})")
    return out


if __name__ == "__main__":
    main()
