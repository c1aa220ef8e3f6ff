"""Convert the released joint features file into the memory-mapped feature store (``feature_store.py``).

    python convert_features.py --path-dataset dataset/THUMOS14                      # float32, same numbers
    python convert_features.py --path-dataset /data/ActivityNet1.3 --dataset-name ActivityNet1.3 \\
        --feature-dtype float16                                                     # half the size

reads ``<path-dataset>/<dataset-name>-I3D-JOINTFeatures.npy`` (in the order of
``<dataset-name>-Annotations/videoname.npy``) and writes the store beside it; main.py,
test.py and localize.py then read it (``--feature-format auto`` takes it when it is there).
"""
from __future__ import annotations

import argparse
import sys

from feature_store import DTYPES, convert
from utils.layout import STORE_FEATURES_SUFFIX
from utils.errors import STCLError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False, prog="python convert_features.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--path-dataset", default="dataset/THUMOS14", help="folder of the features and annotations")
    p.add_argument("--dataset-name", default="Thumos14reduced", help="file prefix of the features and annotations")
    p.add_argument("--feature-dtype", default="float32", choices=DTYPES,
                   help="dtype of the store; float16 halves its size (values rounded to 11 significant bits)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        header = convert(args.path_dataset, args.dataset_name, args.feature_dtype)
    except STCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote the feature store {header.with_name(args.dataset_name + STORE_FEATURES_SUFFIX)} (+ offsets, header)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
