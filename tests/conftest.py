"""Shared pytest fixtures."""
import sys
from pathlib import Path

import pytest
import torch

# One intra-op thread for the whole suite: the tensors here are tiny, and torch's default
# (one thread per core) oversubscribes a busy 2-core machine, slowing a learning test from
# 13 s to over 4 minutes under load. Benchmarks keep torch's default.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The real THUMOS-14 annotation files and the golden outputs of the released code live
# beside the checkout (../shared), never inside it.
SHARED = REPO.parent / "shared"
THUMOS_ANNOTATIONS = SHARED / "data" / "thumos14" / "Thumos14reduced-Annotations"
ACTIVITYNET_ANNOTATIONS = SHARED / "data" / "activitynet12" / "ActivityNet1.2-Annotations"
GOLDEN = SHARED / "data" / "golden" / "stcl_thu_official.npz"
GOLDEN_EXEMPLARS = SHARED / "data" / "golden" / "stcl_thu_official_exemplars.npz"


@pytest.fixture(scope="session")
def thumos_annotations() -> Path:
    """Path of the real THUMOS-14 annotation folder (../shared/data/thumos14/...)."""
    if not THUMOS_ANNOTATIONS.is_dir():
        pytest.skip(f"real THUMOS-14 annotations not found at {THUMOS_ANNOTATIONS}")
    return THUMOS_ANNOTATIONS


@pytest.fixture(scope="session")
def activitynet_annotations() -> Path:
    """Path of the real ActivityNet 1.2 annotation folder (../shared/data/activitynet12/...)."""
    if not ACTIVITYNET_ANNOTATIONS.is_dir():
        pytest.skip(f"real ActivityNet 1.2 annotations not found at {ACTIVITYNET_ANNOTATIONS}")
    return ACTIVITYNET_ANNOTATIONS


@pytest.fixture(scope="session")
def golden_path() -> Path:
    """Path of the golden outputs of the released STCL_THU (../shared/data/golden)."""
    if not GOLDEN.is_file():
        pytest.skip(f"golden outputs not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(scope="session")
def golden_exemplars_path() -> Path:
    """Path of the second golden file: M different exemplar videos per class (docs/METHOD.md#11-golden-outputs)."""
    if not GOLDEN_EXEMPLARS.is_file():
        pytest.skip(f"golden outputs not found at {GOLDEN_EXEMPLARS}")
    return GOLDEN_EXEMPLARS
