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


BOX_MODEL_ID = "testbox"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A mesh cache holding a prepared 8 x 5 x 3 cm box under BOX_MODEL_ID (asymmetric:
    rotations show). Shared by the overlay and review-page tests."""
    import trimesh

    from hodata.objects import prepare_mesh

    folder = tmp_path_factory.mktemp("meshes")
    trimesh.creation.box(extents=(0.08, 0.05, 0.03)).export(folder / "box.ply")
    result = prepare_mesh(folder / "box.ply", folder / "cache", target_vertices=300, model_id=BOX_MODEL_ID)
    assert result.status == "prepared", result.error
    return folder / "cache"
