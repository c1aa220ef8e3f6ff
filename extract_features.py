"""Video files -> two-stream I3D features in the layout the loader reads (README, "Your own videos").

    python extract_features.py VIDEO_OR_DIR... --out dataset/MyData --name MyData \\
        --rgb-weights models/rgb_imagenet.pt --flow-weights models/flow_imagenet.pt \\
        [--annotations annotations.json|.csv]

writes ``<out>/features/<video>.npy`` ((T, 2048) float32 each, written to a temporary file
and renamed, so a killed run leaves no partial file and a rerun skips what is done),
``<out>/<name>-Annotations/`` (imported from --annotations) and the joint
``<out>/<name>-I3D-JOINTFeatures.npy`` in the order of videoname.npy. A bad video is reported
with its file name and skipped; the others are still extracted; the exit code is then 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from feature_extraction.annotations import read_annotations, read_classlist, write_annotations
from feature_extraction.decode import FPS, probe
from feature_extraction.videos import VIDEO_SUFFIXES, find_videos
from options import add_device_options, add_extraction_options, flow_method
from utils.atomic import save_npy, write_json
from utils.errors import DataError, STCLError
from utils.layout import check_video_name, features_path, file_in, text_array
from utils.progress import progress_bar
from utils.progress import write as progress_write

#: The options that change the features, by their key in extraction.json -> option; a features
#: folder made with other values is refused.
SETTINGS = {"flow": "flow", "sample_mode": "sample_mode", "flow_quantize": "flow_quantize", "size": "extract_size",
            "short_side": "short_side", "rgb_weights": "rgb_weights", "flow_weights": "flow_weights"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False, prog="python extract_features.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="*", help="video files and folders of videos (searched recursively)")
    p.add_argument("--out", help="dataset folder: becomes --path-dataset of main.py / test.py")
    p.add_argument("--name", help="dataset name: file prefix, becomes --dataset-name of main.py / test.py")
    p.add_argument("--annotations", help="ActivityNet-style .json or a .csv (video,subset,start,end,label[,duration]) "
                                         "imported into <out>/<name>-Annotations/ before extracting")
    p.add_argument("--classlist", help="class names, one per line (or a classlist.npy): fixes the class order; "
                                       "a label outside it is an error (default: the labels, sorted)")
    p.add_argument("--ambiguous", help="THUMOS-style Ambiguous_test.txt to copy into the annotation folder")
    p.add_argument("--make-sample", metavar="DIR",
                   help="write a small generated sample (videos, annotations.csv, stand-in random weights) to DIR "
                        "and exit; see the README for the commands that use it")
    add_extraction_options(p)
    add_device_options(p, "I3D under bfloat16 autocast (utils.device.autocast); TV-L1 stays float32")
    return p




def _prepare_output(out: Path, settings: dict) -> Path:
    """Create <out>/features (checked writable) and check the settings of earlier runs
    (extraction.json, written once the first extractor is built)."""
    features = out / "features"
    try:
        features.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=features):
            pass
    except OSError as error:
        raise DataError(f"{out}: cannot write to the output folder ({error.strerror or error})") from error
    record = features / "extraction.json"
    if record.is_file():
        try:
            earlier = json.loads(record.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise DataError(f"{record}: cannot read the settings of the earlier extraction ({error}); "
                            "delete the file if the features in that folder are yours, or use another --out") from None
        if not isinstance(earlier, dict):
            raise DataError(f"{record}: expected a JSON object of extraction settings")
        changed = {k: (earlier.get(k), settings[k]) for k in SETTINGS if earlier.get(k) != settings[k]}
        if changed:
            listing = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in changed.items())
            raise DataError(f"{record}: the features in {features} were made with other settings ({listing}); "
                            "use another --out, or delete that folder")
    return features


def _import_annotations(args, videos: list[Path], out: Path) -> Path:
    classlist = read_classlist(args.classlist) if args.classlist else None
    durations = None
    if Path(args.annotations).suffix.lower() == ".csv":
        durations = {}
        for video in videos:
            try:
                durations[video.stem] = probe(video).duration_s
            except STCLError:
                pass  # reported when its extraction fails
    annotations = read_annotations(args.annotations, classlist, durations)
    folder = write_annotations(out / f"{args.name}-Annotations", annotations,
                               Path(args.ambiguous) if args.ambiguous else None, FPS)
    print(f"annotations: {len(annotations.videos)} videos, {len(annotations.class_names)} classes -> {folder}")
    return folder


def _joint_order(out: Path, name: str, videos: list[Path]) -> list[str]:
    names_file = out / f"{name}-Annotations" / "videoname.npy"
    if names_file.is_file():
        return [check_video_name(v, f"{names_file}: entry {i}") for i, v in enumerate(text_array(names_file))]
    return [video.stem for video in videos]


def write_joint(out: Path, name: str, order: list[str]) -> Path:
    """<out>/<name>-I3D-JOINTFeatures.npy: an object array of the per-video features, in `order`."""
    features = out / "features"
    missing = [video for video in order if not file_in(features, video, ".npy").is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise DataError(f"{out / f'{name}-Annotations' / 'videoname.npy'} names videos without features in "
                        f"{features}: {shown}; the joint features file was not written")
    joint = np.empty(len(order), dtype=object)
    for i, video in enumerate(order):
        joint[i] = np.load(file_in(features, video, ".npy"), allow_pickle=False)
    path = features_path(out, name)
    save_npy(path, joint)
    return path


def extract(args) -> int:
    """Run the extraction; returns the exit code (2 when a video failed)."""
    from feature_extraction.pipeline import FeatureExtractor
    from utils.device import choose_device

    if not args.inputs or not args.out or not args.name:
        raise STCLError("give the videos (files or folders), --out and --name")
    out = Path(args.out)
    videos = find_videos(args.inputs)
    if not videos:
        raise DataError(f"no video files found in {', '.join(args.inputs)} (extensions: {' '.join(VIDEO_SUFFIXES)})")
    # weights by file name: moving the files is fine, other files are other features
    device = choose_device(args.device)
    args.flow = flow_method(args.flow, device.type)
    settings = {key: Path(getattr(args, dest)).name if key.endswith("weights") else getattr(args, dest)
                for key, dest in SETTINGS.items()}
    features = _prepare_output(out, settings)
    if args.annotations:
        _import_annotations(args, videos, out)
    todo = [v for v in videos if not (features / f"{v.stem}.npy").is_file()]
    print(f"{len(videos)} videos, {len(videos) - len(todo)} already extracted in {features}")
    failures = []
    if todo:
        extractor = FeatureExtractor(args.rgb_weights, args.flow_weights, flow=args.flow, sample_mode=args.sample_mode,
                                     batch_size=args.extract_batch_size, device=device, amp=args.amp,
                                     flow_quantize=args.flow_quantize, size=args.extract_size,
                                     short_side=args.short_side)
        write_json(features / "extraction.json", settings)
        quiet = getattr(args, "quiet", False)
        for video in progress_bar(todo, desc="videos", unit="video", quiet=quiet):
            try:
                total = round(probe(video).duration_s * FPS) or None
                with progress_bar(total=total, desc=video.stem, unit="frame", leave=False, quiet=quiet) as bar:
                    array = extractor.extract(video, progress=bar.update)
            except STCLError as error:
                failures.append(f"video {video.stem}: {error}")
                progress_write(f"error: video {video.stem}: {error}", file=sys.stderr)
                continue
            save_npy(file_in(features, video.stem, ".npy"), array)
    if failures:
        print(f"error: {len(failures)} of {len(videos)} videos failed (the others are kept in {features}; "
              "fix or remove these and run the same command again):\n  " + "\n  ".join(failures), file=sys.stderr)
        return 2
    joint = write_joint(out, args.name, _joint_order(out, args.name, videos))
    print(f"features: {joint}")
    if not (out / f"{args.name}-Annotations").is_dir():
        print("no annotations yet: import them with --annotations (or import_annotations.py) so that the loader "
              "can read this dataset; the joint file is in the order of the videos given")
    return 0


def make_sample(folder) -> None:
    """Eight 3-second videos of two generated 'actions', annotations.csv and stand-in weights."""
    from feature_extraction.synthetic import write_sample

    paths = write_sample(folder)
    print("\n".join(f"wrote {p}" for p in paths))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.make_sample:
            make_sample(args.make_sample)
            return 0
        return extract(args)
    except STCLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the videos finished so far are kept; run the same command again to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
