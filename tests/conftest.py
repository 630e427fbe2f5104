"""Shared test helpers.

- `torch` fixture: PyTorch as an oracle. Outside CI the torch tests skip when it
  is not installed; under CI=true a missing torch is a failure (docs/ARCHITECTURE.md, Data).
- `data_root` fixture: the folder named by FUNKCIJE_DATA (else the repository's
  datasets/). Tests on real data skip outside CI when it is missing, and fail in CI.
- `rng`: a seeded numpy Generator per test.
"""
import os
from pathlib import Path

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent


def _missing(what):
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is missing")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def torch():
    try:
        import torch as _torch
    except ImportError:
        _missing("torch==2.13.0 (the test oracle)")
    _torch.set_default_dtype(_torch.float64)
    return _torch


@pytest.fixture(scope="session")
def data_root():
    root = Path(os.environ.get("FUNKCIJE_DATA", REPO / "datasets"))
    if not (root / "cifar-10-batches-py").is_dir() or not (root / "fashion-mnist").is_dir():
        _missing(f"real data under {root} (set FUNKCIJE_DATA)")
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
