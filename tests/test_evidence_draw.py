"""Evidence pictures: what is drawn lands where the geometry says."""

from __future__ import annotations

import numpy as np
import torch

from hodata import handmodel
from hodata.evidence import draw
from hodata.geometry.camera import project


def test_keypoints_and_boxes_drawn_in_place():
    image = np.zeros((100, 120, 3), np.uint8)
    kp = np.stack([np.linspace(20, 100, 21), np.linspace(30, 70, 21)], 1)
    out = draw.draw_keypoints(image, kp, scale=2.0)
    assert out.shape == (200, 240, 3) and image.max() == 0       # input unchanged
    assert out[int(kp[0, 1] * 2), int(kp[0, 0] * 2)].max() > 0 and out[190, 10].max() == 0
    assert draw.draw_keypoints(image, np.full((21, 2), np.nan)).max() == 0
    boxed = draw.draw_boxes(image, [(np.array([10, 10, 50, 40]), (0, 255, 0), ""), (np.full(4, np.nan), (255, 0, 0), "")])
    assert tuple(boxed[10, 30]) == (0, 255, 0) and boxed[25, 30].max() == 0


def test_object_target_tints():
    image = np.full((4, 4, 3), 100, np.uint8)
    target = np.array([[1, 0, -1, 0]] * 4, dtype=np.float32)
    out = draw.draw_object_target(image, target)
    assert out[0, 0, 1] > 100 and (out[0, 1] == 100).all() and out[0, 2, 0] > 100 and out[0, 2, 1] < 100


def test_hand_mesh_drawn_where_it_projects():
    layer = handmodel.load("right", dtype=torch.float64)
    verts = layer(transl=torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64)).vertices[0]
    K = torch.tensor([[300.0, 0, 80], [0, 300.0, 60], [0, 0, 1]], dtype=torch.float64)
    image = np.zeros((120, 160, 3), np.uint8)
    out = draw.draw_hand_mesh(image, verts, layer.faces, K, scale=1.0)
    drawn = out.max(-1) > 0
    uv = project(verts[None], K)[0].numpy()
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 160) & (uv[:, 1] >= 0) & (uv[:, 1] < 120)
    ys, xs = np.nonzero(drawn)
    assert drawn.sum() > 100
    # The drawn pixels lie within the projected vertices' box (1 px slack).
    assert xs.min() >= uv[inside, 0].min() - 1 and xs.max() <= uv[inside, 0].max() + 1
    assert ys.min() >= uv[inside, 1].min() - 1 and ys.max() <= uv[inside, 1].max() + 1
    big = draw.draw_hand_mesh(image, verts, layer.faces, K, scale=2.0)
    assert big.shape == (240, 320, 3) and abs((big.max(-1) > 0).sum() / drawn.sum() - 4) < 0.5
