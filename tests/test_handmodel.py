"""Hand models: MANO-format layer vs smplx, LBS closed forms, the open hand, file handling."""

from __future__ import annotations

import pickle
import sys
import time
import types

import numpy as np
import pytest
import torch
import trimesh

import hodata.handmodel as hm
from hodata.errors import HodataError
from hodata.geometry.rotations import random_rotations
from hodata.handmodel.constants import JOINT_NAMES, THUMB_FIRST_ORDER
from hodata.handmodel.meshing import boundary_loops, close_wrist
from hodata.handmodel.open_hand import _right_hand

F64 = torch.float64


@pytest.fixture(scope="module")
def mano_folder(tmp_path_factory):
    """The open hand exported as MANO-format pickles, in the `<root>/mano/` layout smplx wants."""
    root = tmp_path_factory.mktemp("models")
    for side in ("right", "left"):
        hm.write_mano_pickle(root / "mano" / f"MANO_{side.upper()}.pkl", side)
    return root


def _random_inputs(gen, batch, pose_dim, pose_scale):
    return (
        torch.randn(batch, 3, generator=gen, dtype=F64),
        torch.randn(batch, pose_dim, generator=gen, dtype=F64) * pose_scale,
        torch.randn(batch, 10, generator=gen, dtype=F64),
        torch.randn(batch, 3, generator=gen, dtype=F64) * 0.1,
    )


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("use_pca,k", [(True, 16), (True, 6), (False, 45)])
@pytest.mark.parametrize("flat", [False, True])
def test_agrees_with_smplx(mano_folder, side, use_pca, k, flat, generator):
    smplx = pytest.importorskip("smplx")
    ours = hm.load(side, mano_dir=mano_folder / "mano", model="mano", use_pca=use_pca, num_pca_comps=k,
                   flat_hand_mean=flat, dtype=F64)
    ref = smplx.create(str(mano_folder), model_type="mano", is_rhand=side == "right", use_pca=use_pca,
                       num_pca_comps=k, flat_hand_mean=flat, dtype=F64, batch_size=5)
    go, pose, betas, transl = _random_inputs(generator, 5, k if use_pca else 45, 1.0 if use_pca else 0.4)
    out = ours(go, pose, betas, transl)
    exp = ref(global_orient=go, hand_pose=pose, betas=betas, transl=transl)
    assert out.vertices.shape == exp.vertices.shape
    assert (out.vertices - exp.vertices).abs().max() < 1e-5
    assert (out.joints[:, :16] - exp.joints[:, :16]).abs().max() < 1e-5
    assert (out.joints[:, 16:] - exp.vertices[:, ours.tip_vertex_ids]).abs().max() < 1e-5
    # The poses are not trivial: the hand really moved away from the template.
    assert (exp.vertices - ref.v_template).norm(dim=-1).mean() > 0.02
    assert out.model_name == "mano"  # a file from --mano-dir is named as such, whatever model_name key it has


@pytest.fixture(scope="module")
def layer():
    return hm.load("right", model="open", flat_hand_mean=True, dtype=F64)


def test_zero_pose_is_shaped_template(layer, generator):
    betas = torch.randn(3, 10, generator=generator, dtype=F64)
    out = layer(betas=betas)
    arrays = hm.open_hand_arrays("right")
    expected = arrays["v_template"][None] + np.einsum("bs,vks->bvk", betas.numpy(), arrays["shapedirs"])
    np.testing.assert_allclose(out.vertices.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(out.joints[:, :16].numpy(), arrays["J_regressor"] @ expected, atol=1e-12)


def test_global_rotation_turns_about_root(layer, generator):
    pose = torch.randn(4, 16, generator=generator, dtype=F64)
    betas = torch.randn(4, 10, generator=generator, dtype=F64)
    rot = random_rotations(4, generator=generator, dtype=F64)
    rest = layer(hand_pose=pose, betas=betas)
    turned = layer(global_orient=rot, hand_pose=pose, betas=betas)
    root = rest.joints[:, :1]
    expected = (rest.vertices - root) @ rot.transpose(1, 2) + root
    assert (turned.vertices - expected).abs().max() < 1e-12
    assert (turned.joints - ((rest.joints - root) @ rot.transpose(1, 2) + root)).abs().max() < 1e-12
    # Axis-angle and matrix inputs give the same result.
    aa = torch.as_tensor(np.stack([_rotvec(r) for r in rot.numpy()]))
    assert (layer(global_orient=aa, hand_pose=pose, betas=betas).vertices - turned.vertices).abs().max() < 1e-10


def _rotvec(r):
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(r).as_rotvec()


def test_pca_and_full_pose_are_consistent(generator):
    pca = hm.load("right", model="open", num_pca_comps=10, flat_hand_mean=False, dtype=F64)
    full_flat = hm.load("right", model="open", use_pca=False, flat_hand_mean=True, dtype=F64)
    coeffs = torch.randn(3, 10, generator=generator, dtype=F64)
    articulation = pca.pca_to_full_pose(coeffs)
    assert (pca.full_pose_to_pca(articulation) - coeffs).abs().max() < 1e-12
    assert (pca(hand_pose=coeffs).vertices - full_flat(hand_pose=articulation).vertices).abs().max() < 1e-12
    # hands_mean really is added when flat_hand_mean=False (and is not zero).
    assert pca.hand_mean.abs().max() > 0.1
    assert (articulation - coeffs @ pca.hand_components[:10] - pca.hand_mean).abs().max() < 1e-12


def test_open_hand_is_a_closed_manifold_hand():
    arrays = hm.open_hand_arrays("right")
    v, f = arrays["v_template"], arrays["f"]
    assert 500 <= len(v) <= 1500
    assert len(boundary_loops(f)) == 1  # one open loop at the wrist, as MANO
    closed = close_wrist(v, f)
    ring = len(boundary_loops(f)[0])
    assert len(closed) == len(f) + ring - 2
    mesh = trimesh.Trimesh(v, closed, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 2e-4  # positive (outward normals), ~270 cm^3
    assert mesh.euler_number == 2
    joints = arrays["J_regressor"] @ v
    tips = v[arrays["tip_vertex_ids"]]
    assert 0.18 < np.linalg.norm(tips[2] - joints[0]) < 0.195  # wrist to middle tip
    not_thumb = arrays["weights"][:, 13:16].sum(1) < 0.5
    knuckles = v[(np.abs(v[:, 0] - joints[4, 0]) < 0.004) & not_thumb]
    assert 0.08 < np.ptp(knuckles[:, 2]) < 0.09  # palm width at the knuckles
    # MANO's canonical frame: fingers along -x from the wrist, thumb on +z, palm toward -y.
    assert (tips[1:, 0] < joints[0, 0] - 0.12).all() and tips[0, 2] > joints[4, 2] + 0.05
    np.testing.assert_allclose(arrays["hands_components"] @ arrays["hands_components"].T, np.eye(45), atol=1e-12)
    np.testing.assert_allclose(arrays["weights"].sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(arrays["J_regressor"].sum(1), 1.0, atol=1e-12)
    # Skinning blends across joints: some vertices mix the wrist and the index MCP bone.
    mixed = (arrays["weights"][:, 0] > 0.2) & (arrays["weights"][:, 1] > 0.2)
    assert mixed.sum() >= 3


def test_open_hand_pose_space_is_grasp_like():
    """hands_mean is a half-closed hand (fingertips curl toward the palm side, -y) and the
    first pose component is the closure synergy: it moves all four fingertips together."""
    flat = hm.load("right", model="open", num_pca_comps=3, flat_hand_mean=True, dtype=F64)
    mean = hm.load("right", model="open", num_pca_comps=3, flat_hand_mean=False, dtype=F64)
    open_tips = flat().joints[0, 17:21]
    mean_tips = mean().joints[0, 17:21]
    assert (mean_tips[:, 1] < open_tips[:, 1] - 0.02).all()
    coeffs = torch.zeros(2, 3, dtype=F64)
    coeffs[:, 0] = torch.tensor([1.0, -1.0])
    tips_y = mean(hand_pose=coeffs).joints[:, 17:21, 1]
    change = tips_y[0] - tips_y[1]
    assert (change.abs() > 0.015).all() and (torch.sign(change) == torch.sign(change[0])).all()


def test_left_is_mirror_of_right(generator):
    right = hm.load("right", model="open", flat_hand_mean=False, dtype=F64)
    left = hm.load("left", model="open", flat_hand_mean=False, dtype=F64)
    coeffs = torch.randn(2, 16, generator=generator, dtype=F64)
    r, l = right(hand_pose=coeffs), left(hand_pose=coeffs)
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    assert (l.vertices - r.vertices * mirror).abs().max() < 1e-12
    mesh = trimesh.Trimesh(l.vertices[0].numpy(), left.closed_faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.volume > 0


def test_open_hand_is_deterministic(tmp_path):
    hm.write_mano_pickle(tmp_path / "a.pkl")
    _right_hand.cache_clear()
    hm.write_mano_pickle(tmp_path / "b.pkl")
    assert (tmp_path / "a.pkl").read_bytes() == (tmp_path / "b.pkl").read_bytes()


def test_packaged_surface_matches_what_the_generator_builds(tmp_path):
    # The packaged surface is canonical: pymeshlab's decimation/remeshing output depends on the
    # OpenMP thread count and on filters run earlier in the process, so a fresh build (in a
    # fresh process) is compared by shape, not bit for bit.
    import subprocess
    import sys

    import numpy as np

    from hodata.handmodel.meshing import close_wrist
    from hodata.handmodel.open_hand import SURFACE_FILE

    out = tmp_path / "surface.npz"
    code = f"from pathlib import Path; from hodata.handmodel.open_hand import write_surface; write_surface(Path({str(out)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    fresh, packaged = np.load(out), np.load(SURFACE_FILE)
    assert 0.6 < len(fresh["vertices"]) / len(packaged["vertices"]) < 1.4
    for a, b in ((fresh["vertices"].min(0), packaged["vertices"].min(0)), (fresh["vertices"].max(0), packaged["vertices"].max(0))):
        assert np.abs(a - b).max() < 0.004  # same hand to within 4 mm
    closed = close_wrist(fresh["vertices"], fresh["faces"])
    mesh = trimesh.Trimesh(fresh["vertices"], closed, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent


def test_joint_order_constants():
    assert len(JOINT_NAMES) == 21 and sorted(THUMB_FIRST_ORDER) == list(range(21))
    names = [JOINT_NAMES[i] for i in THUMB_FIRST_ORDER]
    assert names[1:5] == ["thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip"]
    assert names[-4:] == ["little_mcp", "little_pip", "little_dip", "little_tip"]


def test_forward_is_fast(layer, generator):
    go, pose, betas, transl = _random_inputs(generator, 10, 16, 1.0)
    f32 = hm.load("right", model="open")
    args = [t.float() for t in (go, pose, betas, transl)]
    f32(*args)
    start = time.perf_counter()
    for _ in range(20):
        f32(*args)
    ms = (time.perf_counter() - start) / 20 * 1e3
    print(f"forward B=10 float32: {ms:.2f} ms")
    assert ms < 50


# ---- chumpy pickles and bad files -------------------------------------------------------

def _fake_chumpy_pickle(path, arrays):
    """Pickle `arrays` the way the official files are: chumpy Ch objects (state = __dict__
    with the value in `x`) and a scipy sparse J_regressor, latin-1 protocol 2."""
    import scipy.sparse as sp

    ch_pkg = types.ModuleType("chumpy")
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch_mod.Ch = Ch
    ch_pkg.ch = ch_mod
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = ch_pkg, ch_mod
    try:
        data = {}
        for key, value in arrays.items():
            if key in ("v_template", "shapedirs", "weights", "hands_mean"):
                obj = Ch()
                obj.x = value
                obj.dterms = ["x"]
                data[key] = obj
            elif key == "J_regressor":
                data[key] = sp.csc_matrix(value)
            else:
                data[key] = value
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    assert b"chumpy.ch" in path.read_bytes()


def test_reads_chumpy_pickle_without_chumpy(tmp_path, generator):
    arrays = hm.open_hand_arrays("right")
    arrays.pop("tip_vertex_ids")
    arrays.pop("model_name")
    _fake_chumpy_pickle(tmp_path / "MANO_RIGHT.pkl", arrays)
    with pytest.raises(ModuleNotFoundError):
        pickle.load(open(tmp_path / "MANO_RIGHT.pkl", "rb"), encoding="latin1")
    loaded = hm.read_mano_pickle(tmp_path / "MANO_RIGHT.pkl")
    for key in ("v_template", "shapedirs", "weights", "J_regressor", "hands_mean", "f"):
        np.testing.assert_array_equal(loaded[key], arrays[key])
    layer = hm.load("right", mano_dir=tmp_path, model="mano", dtype=F64)
    assert layer.model_name == "mano"
    assert layer.tip_vertex_ids.tolist() == [745, 317, 444, 556, 673]
    plain = hm.HandLayer(arrays, "right", "mano", dtype=F64)
    pose = torch.randn(2, 16, generator=generator, dtype=F64)
    assert torch.allclose(layer(hand_pose=pose).vertices, plain(hand_pose=pose).vertices, atol=1e-12)


def test_mano_tips_default_to_official_ids(tmp_path):
    """A MANO-format pickle without `tip_vertex_ids` gets MANO's official tip vertices."""
    arrays = hm.open_hand_arrays("left")
    del arrays["tip_vertex_ids"], arrays["model_name"]
    assert len(arrays["v_template"]) > 745
    hm.mano_io.write_mano_pickle_arrays(tmp_path / "MANO_LEFT.pkl", arrays)
    layer = hm.load("left", mano_dir=tmp_path, model="mano")
    assert layer.model_name == "mano"
    assert layer.tip_vertex_ids.tolist() == [745, 317, 445, 556, 673]
    out = layer(hand_pose=torch.zeros(1, 16))
    assert torch.equal(out.joints[0, 16:], out.vertices[0, [745, 317, 445, 556, 673]])


def test_bad_mano_inputs(tmp_path):
    with pytest.raises(HodataError, match="does not exist") as err:
        hm.load("right", mano_dir=tmp_path / "nowhere", model="mano")
    assert "nowhere" in str(err.value) and "\n" not in str(err.value)

    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "MANO_RIGHT.pkl").write_text("this is not a pickle")
    with pytest.raises(HodataError, match="not a readable MANO pickle") as err:
        hm.load("right", mano_dir=tmp_path / "text", model="mano")
    assert "MANO_RIGHT.pkl" in str(err.value) and "\n" not in str(err.value)

    arrays = hm.open_hand_arrays("right")
    del arrays["posedirs"]
    (tmp_path / "nokey").mkdir()
    hm.mano_io.write_mano_pickle_arrays(tmp_path / "nokey" / "MANO_RIGHT.pkl", arrays)
    with pytest.raises(HodataError, match="lacks key.*posedirs") as err:
        hm.load("right", mano_dir=tmp_path / "nokey", model="mano")
    assert "nokey" in str(err.value) and "\n" not in str(err.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(HodataError, match="MANO_LEFT.pkl not found"):
        hm.load("left", mano_dir=tmp_path / "empty", model="auto")

    status = hm.describe(tmp_path / "nokey")
    assert status.found and any("posedirs" in p for p in status.problems)


def test_auto_falls_back_to_open_hand(tmp_path, monkeypatch):
    monkeypatch.setenv("HODATA_MANO_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    layer = hm.load("right")
    assert layer.model_name == "open-hand-v1"
    assert hm.describe().active.startswith("open hand")
    with pytest.raises(HodataError, match="looked in"):
        hm.load("right", model="mano")


def test_mano_dir_file_with_a_model_name_key_is_used_as_the_file_it_is(tmp_path):
    """Issue 9 item 4: a MANO-format file saying `model_name: open-hand-v1` (here the open hand
    with a thicker template) was replaced downstream by the built-in open hand of that name."""
    from hodata.datasets.ho3d import handmodel_arg
    from hodata.app.draw import load_hand_faces

    arrays = hm.open_hand_arrays("right")
    assert arrays["model_name"] == "open-hand-v1"
    arrays["v_template"] = arrays["v_template"] * 1.2
    hm.mano_io.write_mano_pickle_arrays(tmp_path / "MANO_RIGHT.pkl", arrays)
    from_file = hm.load("right", mano_dir=tmp_path, dtype=F64)
    built_in = hm.load("right", model="open", dtype=F64)
    assert from_file.model_name == "mano"
    assert torch.allclose(from_file.v_template, built_in.v_template * 1.2)
    # what a fit records is reloaded from the same file, not from the built-in model
    again = hm.load("right", mano_dir=tmp_path, model=handmodel_arg(from_file.model_name), dtype=F64)
    assert torch.equal(again.v_template, from_file.v_template)
    faces, n_vertices = load_hand_faces("right", from_file.model_name, tmp_path)
    assert n_vertices == from_file.num_vertices and torch.equal(faces, from_file.closed_faces.long())
