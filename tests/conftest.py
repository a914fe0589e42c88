"""Shared fixtures. Tests run on the CPU with float64 where precision is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """Real dataset files from ../shared/data; absent in a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present (only in the team's checkout)")
    return SHARED_DATA


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
