"""Numbers over seeds: mean +- sample std of every metric of several runs (``main.py --seeds``
and each configuration of ``sweep.py``), so that both tables report the same statistics."""
from __future__ import annotations

from typing import Dict, List

import numpy as np


def mean_std(values) -> dict:
    """``{"values", "mean", "std"}`` of ``values``: the sample std (n - 1); None for one value (no
    spread was measured)."""
    values = np.asarray(values, dtype=np.float64)
    return {"values": values.tolist(), "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None}


def over_seeds(summaries: List[dict]) -> Dict[str, Dict[str, dict]]:
    """Per checkpoint ("best", the selected one, and "last") and metric of the runs' summary.json
    entries: :func:`mean_std` over the runs, metrics in the order of the first run."""
    return {which: {key: mean_std([s[which]["summary"][key] for s in summaries])
                    for key in summaries[0][which]["summary"]}
            for which in ("best", "last")}


def format_mean_std(stats: dict) -> str:
    """``mean +- std``; ``mean +- n/a`` for one seed."""
    return f"{stats['mean']:.2f} +- " + ("n/a" if stats["std"] is None else f"{stats['std']:.2f}")
