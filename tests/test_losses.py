"""Each term of Eq. 6: zero where it should be, decreasing when optimised alone, and moving
only the parameters it should."""

import pytest
import torch

from hodata.fitting import losses as L


def test_object_silhouette_loss_ignores_hand_pixels_and_is_zero_at_target():
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    target[:, 0, :] = -1  # hand-occluded row
    rendered = target.clamp_min(0).clone()
    assert L.object_silhouette_loss(rendered, target) == 0
    rendered[:, 0, :] = 1  # object drawn under the hand: not penalised
    assert L.object_silhouette_loss(rendered, target) == 0
    rendered[:, 7, 7] = 1  # one wrong kept pixel per frame
    kept = (target >= 0).sum()
    expected = 2 / kept / 2  # two wrong pixels over the clip / kept pixels / T
    assert torch.isclose(L.object_silhouette_loss(rendered, target), expected)


def test_v2d_normalisation_closed_form():
    target = torch.zeros(3, 5, 2)
    projected = target + torch.tensor([6.4, 0.0])
    # error 6.4 px on x only, divided by max(H, W) = 640 -> 0.01; squared 1e-4, mean over 2 coords
    assert torch.isclose(L.hand_v2d_loss(projected, target, (480, 640)), torch.tensor(0.5e-4))
    assert L.hand_v2d_loss(target, target, (480, 640)) == 0


def test_priors_zero_at_rest():
    assert L.pca_prior_loss(torch.zeros(10, 16)) == 0
    assert L.scale_prior_loss(torch.tensor(0.12), 0.12) == 0
    assert torch.isclose(L.scale_prior_loss(torch.tensor(0.24), 0.12), torch.tensor(1.0))
    # in units of the category's relative spread: one spread off costs 1
    assert torch.isclose(L.scale_prior_loss(torch.tensor(1.07), 1.0, spread=0.07), torch.tensor(1.0))
    assert torch.isclose(L.scale_prior_loss(torch.tensor(0.86), 1.0, spread=0.07), torch.tensor(4.0))
    with pytest.raises(ValueError, match="spread"):
        L.scale_prior_loss(torch.tensor(1.0), 1.0, spread=0.0)
    static = torch.randn(1, 50, 3).expand(5, 50, 3)
    assert L.smoothness_loss(static) == 0
    moving = static + torch.arange(5.0)[:, None, None] * torch.tensor([0.01, 0.0, 0.0])
    assert torch.isclose(L.smoothness_loss(moving), torch.tensor(0.01**2 / 3))


def test_coarse_interaction_moves_only_the_hand():
    hand = (torch.randn(4, 30, 3) * 0.02 + torch.tensor([0.1, 0.0, 0.5])).requires_grad_(True)
    obj = (torch.randn(4, 40, 3) * 0.03 + torch.tensor([0.0, 0.0, 0.5])).requires_grad_(True)
    active = torch.tensor([True, True, False, True])
    loss = L.coarse_interaction_loss(hand, obj, active)
    loss.backward()
    assert obj.grad is None or obj.grad.abs().max() == 0
    assert hand.grad[2].abs().max() == 0 and hand.grad[0].abs().max() > 0
    # optimised alone, the hand centroid converges to the object centroid
    shift = torch.zeros(4, 1, 3, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        L.coarse_interaction_loss(hand.detach() + shift, obj.detach(), torch.ones(4, dtype=torch.bool)).backward()
        opt.step()
    gap = ((hand.detach() + shift).mean(1) - obj.detach().mean(1)).norm(dim=-1)
    assert gap.max() < 2e-3


def test_centroid_activation_rules():
    hand_boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    obj_boxes = torch.tensor([[11.0, 0, 20, 10], [30, 0, 40, 10], [11, 0, 20, 10]])
    depth_h = torch.tensor([0.5, 0.5, 0.5])
    depth_o = torch.tensor([0.6, 0.6, 4.0])
    active = L.centroid_pairs_active(hand_boxes, obj_boxes, depth_h, depth_o)
    assert active.tolist() == [True, False, False]  # 1 px gap closes after 20 % growth; far apart; too deep


def _sphere_sdf(points, centre, radius):
    return (points - centre).norm(dim=-1) - radius


def test_collision_pushes_meshes_apart():
    centre = torch.tensor([0.0, 0.0, 0.5])
    base = torch.randn(1, 100, 3)
    base = base / base.norm(dim=-1, keepdim=True) * 0.02 + torch.tensor([0.03, 0.0, 0.5])
    offset = torch.zeros(1, 1, 3, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=0.002)
    first = None
    for _ in range(200):
        opt.zero_grad()
        loss = L.collision_loss(_sphere_sdf(base + offset, centre, 0.04))
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert first > 0
    final = L.collision_loss(_sphere_sdf(base + offset, centre, 0.04)).item()
    assert final < 0.01 * first
    assert offset[0, 0, 0] > 0  # pushed out along +x, away from the sphere centre
    assert L.collision_loss(torch.rand(3, 10)) == 0  # nothing inside -> zero


def test_local_contact_attracts_near_and_repels_inside():
    # Intended behaviour (not the reference's inverted sign test).
    sdf = torch.tensor([[0.005, 0.05, -0.01]])
    dist = sdf.abs()
    loss = L.local_contact_loss(sdf, dist)
    a, r = 0.01, 0.02
    expected = (a * torch.tanh(torch.tensor(0.5)) + r * torch.tanh(torch.tensor(0.5))) / 3
    assert torch.isclose(loss, expected)
    # vertex on the surface, vertex far away: zero
    assert L.local_contact_loss(torch.tensor([[0.0, 0.2]]), torch.tensor([[0.0, 0.2]])) == 0
    # optimised alone on a sphere: near vertices land on the surface, inside ones come out
    centre, radius = torch.tensor([0.0, 0.0, 0.0]), 0.05
    pts = torch.tensor([[[0.056, 0.0, 0.0], [0.0, 0.04, 0.0], [0.0, 0.0, 0.2]]], requires_grad=True)
    opt = torch.optim.Adam([pts], lr=1e-3)
    for _ in range(300):
        opt.zero_grad()
        s = _sphere_sdf(pts, centre, radius)
        L.local_contact_loss(s, s.abs()).backward()
        opt.step()
    s = _sphere_sdf(pts.detach(), centre, radius)[0]
    assert s[0].abs() < 1.5e-3 and s[1].abs() < 1.5e-3
    assert torch.isclose(s[2], torch.tensor(0.15))  # far vertex untouched


def test_acceleration_loss_ignores_constant_velocity_and_matches_closed_form():
    static = torch.randn(1, 20, 3).expand(6, 20, 3)
    steps = torch.arange(6.0)[:, None, None]
    moving = static + steps * torch.tensor([0.015, -0.01, 0.0])  # 1.8 cm per frame, constant velocity
    assert L.acceleration_loss(moving) < 1e-12
    assert L.smoothness_loss(moving) > 0  # the paper's term penalises the motion itself
    # x = a t^2 / 2: second difference a on x, so the mean over 3 coordinates is a^2 / 3
    a = 0.004
    accelerating = static + 0.5 * a * steps**2 * torch.tensor([1.0, 0.0, 0.0])
    assert torch.isclose(L.acceleration_loss(accelerating), torch.tensor(a**2 / 3), rtol=1e-4)
    assert L.acceleration_loss(moving[:2]) == 0  # fewer than 3 frames
    # leading candidate dimension: one value per candidate
    both = torch.stack([moving, accelerating])
    assert torch.allclose(L.acceleration_loss(both), torch.stack([L.acceleration_loss(moving),
                                                                  L.acceleration_loss(accelerating)]))


def test_surface_interaction_is_the_squared_gap_over_active_frames():
    sdf = torch.tensor([[0.05, 0.03, 0.08], [0.02, -0.01, 0.04], [0.07, 0.09, 0.1]])  # (T=3, V=3)
    active = torch.tensor([True, True, False])
    # frame 0: gap 3 cm; frame 1: a vertex inside -> 0; frame 2 inactive
    assert torch.isclose(L.surface_interaction_loss(sdf, active), torch.tensor(0.03**2))
    # optimised alone on a sphere of 5 cm, a point cloud 'hand' translated: it stops at the surface
    centre = torch.tensor([0.0, 0.0, 0.5])
    hand = torch.randn(2, 40, 3) * 0.01 + torch.tensor([0.0, 0.0, 0.65])
    shift = torch.zeros(2, 1, 3, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.002)
    for _ in range(300):
        opt.zero_grad()
        L.surface_interaction_loss(_sphere_sdf(hand + shift, centre, 0.05), torch.ones(2, dtype=torch.bool)).backward()
        opt.step()
    closest = _sphere_sdf(hand + shift.detach(), centre, 0.05).amin(-1)
    # touching (Adam's momentum carries it a few mm on: nothing pushes back inside; collision does
    # that in the fit), not pulled into the middle as the centroid term does
    assert (closest < 2e-3).all() and (closest > -6e-3).all()
    assert ((hand + shift.detach()).mean(1) - centre).norm(dim=-1).min() > 0.05
    try:
        L.surface_interaction_loss(sdf, active[:2])
    except ValueError as exc:
        assert "active" in str(exc)
    else:
        raise AssertionError("shape mismatch not reported")


def test_init_pose_prior_zero_at_the_init():
    init = torch.randn(4, 16)
    assert L.init_pose_prior_loss(init, init) == 0
    assert torch.isclose(L.init_pose_prior_loss(init + 0.5, init), torch.tensor(0.25))


def test_v2d_target_keypoints_uses_projected_joints():
    """FitConfig.v2d_target="keypoints": the v2d term compares projected joints with the
    init's keypoints (zero when they agree), vertices otherwise."""
    import torch

    from hodata import handmodel
    from hodata.fitting.joint import FitConfig, HandEvidence, compute_terms, make_hand_parameters
    from hodata.geometry.camera import project
    from hodata.types import HandInit

    layer = handmodel.load("right", model="open", num_pca_comps=16, use_pca=True, dtype=torch.float64)
    T = 2
    orient = torch.eye(3, dtype=torch.float64).expand(T, 3, 3).clone()
    pose = torch.zeros(T, 16, dtype=torch.float64)
    transl = torch.tensor([[0.0, 0.0, 0.5]] * T, dtype=torch.float64)
    out = layer(global_orient=orient, hand_pose=pose, transl=transl)
    K = torch.tensor([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]], dtype=torch.float64)
    joints_2d, verts_2d = project(out.joints, K), project(out.vertices, K)
    init = HandInit("right", orient, pose, torch.zeros(10, dtype=torch.float64), transl, verts_2d + 5.0, "test",
                    keypoints_2d=joints_2d)
    evidence = HandEvidence(layer, init)
    for target, expected_zero in (("keypoints", True), ("vertices", False)):
        config = FitConfig(v2d_target=target)
        hand = make_hand_parameters(evidence, config)
        value = compute_terms([hand], [evidence], [], [], K, (480, 640), ("v2d",), config)["v2d"]
        assert (float(value.detach().sum()) < 1e-12) == expected_zero, (target, value)
    from hodata.errors import HodataError

    try:
        FitConfig(v2d_target="joints")
    except HodataError as exc:
        assert "v2d_target" in str(exc)
    else:
        raise AssertionError("an unknown v2d_target was accepted")
