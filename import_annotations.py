"""Annotations (ActivityNet-style JSON or CSV) -> the .npy annotation folder the loader reads.

    python import_annotations.py annotations.json --out dataset/MyData --name MyData
    python import_annotations.py annotations.csv --out dataset/MyData --name MyData --videos videos/

writes ``<out>/<name>-Annotations/`` (classlist, videoname, subset, duration, segments, labels,
labels_all, extracted_fps[, original_fps].npy and Ambiguous_test.txt). The formats are described
in feature_extraction/annotations.py and in the README ("Your own videos").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from feature_extraction.annotations import read_annotations, read_classlist, write_annotations
from utils.errors import STCLError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False, prog="python import_annotations.py", description=__doc__.split("\n\n")[0])
    p.add_argument("annotations", help="an ActivityNet-style .json or a .csv (video,subset,start,end,label[,duration])")
    p.add_argument("--out", required=True, help="dataset folder (--path-dataset of main.py / test.py)")
    p.add_argument("--name", required=True, help="dataset name (--dataset-name of main.py / test.py)")
    p.add_argument("--classlist", help="class names, one per line (or a classlist.npy); default: the labels, sorted")
    p.add_argument("--ambiguous", help="THUMOS-style Ambiguous_test.txt to copy (default: an empty one)")
    p.add_argument("--videos", nargs="*", default=[],
                   help="CSV without a duration column: video files or folders to read the durations from")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        durations = None
        if args.videos:
            from feature_extraction.decode import probe
            from feature_extraction.videos import find_videos

            durations = {video.stem: probe(video).duration_s for video in find_videos(args.videos)}
        classlist = read_classlist(args.classlist) if args.classlist else None
        annotations = read_annotations(args.annotations, classlist, durations)
        folder = write_annotations(Path(args.out) / f"{args.name}-Annotations", annotations,
                                   Path(args.ambiguous) if args.ambiguous else None)
    except STCLError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(annotations.videos)} videos, {len(annotations.class_names)} classes -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
