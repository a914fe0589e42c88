"""Z-buffered triangle rasterisation without gradients: label masks and shaded frames.

Used for ground-truth masks (object / hand / background with occlusion) and synthetic RGB
frames and overlays. Triangles are rasterised by their pixel bounding boxes, vectorised over
all (face, pixel-in-box) pairs of a batch and chunked so that at most MAX_PAIRS pairs are
alive at once (~100 bytes each). A pixel is covered when its centre (integer coordinates,
OpenCV convention as camera.project) has all three screen-space barycentrics >= 0. Depth is
the camera z interpolated perspective-correctly (1/z is affine in screen space over a planar
triangle). Faces with a vertex at z <= Z_NEAR are dropped (no clipping): fine for objects
and hands in front of the camera.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from hodata.geometry.camera import project
from hodata.geometry.raster_silhouette import _chunks_of_pairs, _expand_ranges

Z_NEAR = 1e-3
"""Metres; faces with a vertex closer to the camera plane are not drawn."""

MAX_PAIRS = 1 << 22

AMBIENT = 0.3
"""Share of the colour that is unlit; the rest follows Lambert's law with a headlight."""


class Fragments(NamedTuple):
    """Per-pixel result of z-buffered rasterisation of B frames at (H, W).

    face: (B, H, W) long, index into the concatenated faces of all meshes, -1 if empty;
    mesh: (B, H, W) long, index of the mesh, -1 if empty;
    depth: (B, H, W) camera z, inf if empty;
    bary: (B, H, W, 3) perspective-correct barycentric weights of the visible face.
    """

    face: torch.Tensor
    mesh: torch.Tensor
    depth: torch.Tensor
    bary: torch.Tensor


def _concatenate(meshes: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    verts, faces, mesh_of_face, offset = [], [], [], 0
    for index, (v, f) in enumerate(meshes):
        verts.append(v)
        faces.append(f.to(v.device).long() + offset)
        mesh_of_face.append(torch.full((f.shape[0],), index, dtype=torch.long, device=v.device))
        offset += v.shape[1]
    return torch.cat(verts, 1), torch.cat(faces, 0), torch.cat(mesh_of_face, 0)


@torch.no_grad()
def rasterize(
    meshes: Sequence[tuple[torch.Tensor, torch.Tensor]], K: torch.Tensor, image_size: tuple[int, int]
) -> Fragments:
    """Z-buffer the meshes [(verts (B, Vi, 3) camera coords, faces (Fi, 3))] seen through
    K (B, 3, 3) or (3, 3) into (H, W) images. No back-face culling (open meshes are fine)."""
    height, width = image_size
    verts, faces, mesh_of_face = _concatenate(meshes)
    batch, num_faces = verts.shape[0], faces.shape[0]
    K = (K.expand(batch, 3, 3) if K.dim() == 2 else K).to(verts)
    device, dtype = verts.device, verts.dtype
    pixels = project(verts, K)
    tri_xy = pixels[:, faces]  # (B, F, 3, 2)
    tri_z = verts[:, faces, 2]  # (B, F, 3)
    x, y = tri_xy[..., 0], tri_xy[..., 1]
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (y[..., 1] - y[..., 0])
    drawable = (tri_z.amin(-1) > Z_NEAR) & (area.abs() > 1e-12)
    col_lo = torch.ceil(x.amin(-1).clamp(-1, width + 1)).clamp_min(0).long()
    col_hi = torch.floor(x.amax(-1).clamp(-1, width + 1)).clamp_max(width - 1).long()
    row_lo = torch.ceil(y.amin(-1).clamp(-1, height + 1)).clamp_min(0).long()
    row_hi = torch.floor(y.amax(-1).clamp(-1, height + 1)).clamp_max(height - 1).long()
    box_w = (col_hi - col_lo + 1).clamp_min(0)
    box_h = (row_hi - row_lo + 1).clamp_min(0)
    count = (box_w * box_h * drawable).reshape(-1)  # over (B * F)

    num_pixels = batch * height * width
    depth = torch.full((num_pixels,), torch.inf, dtype=dtype, device=device)
    face = torch.full((num_pixels,), -1, dtype=torch.long, device=device)
    bary = torch.zeros(num_pixels, 3, dtype=dtype, device=device)
    # One packed row per (frame, face), so each pair needs a single gather (gathers dominate).
    face_rows = torch.cat(
        [
            x.reshape(-1, 3),
            y.reshape(-1, 3),
            1.0 / tri_z.reshape(-1, 3),
            (1.0 / area).reshape(-1, 1),
        ],
        dim=-1,
    )
    box_rows = torch.stack([col_lo, row_lo, box_w], dim=-1).reshape(-1, 3)
    for first, last in _chunks_of_pairs(count, MAX_PAIRS):
        owner, rank = _expand_ranges(count[first:last])
        bf = first + owner  # index into B * F
        box = box_rows.index_select(0, bf)
        w = box[:, 2]
        row_in_box = torch.div(rank, w, rounding_mode="floor")
        px = box[:, 0] + rank - row_in_box * w
        py = box[:, 1] + row_in_box
        rows = face_rows.index_select(0, bf)
        fx, fy = px.to(dtype), py.to(dtype)
        tx, ty, inv_area = rows[:, 0:3], rows[:, 3:6], rows[:, 9]
        w0 = ((tx[:, 1] - fx) * (ty[:, 2] - fy) - (tx[:, 2] - fx) * (ty[:, 1] - fy)) * inv_area
        w1 = ((tx[:, 2] - fx) * (ty[:, 0] - fy) - (tx[:, 0] - fx) * (ty[:, 2] - fy)) * inv_area
        w2 = 1.0 - w0 - w1
        keep = ((w0 >= 0) & (w1 >= 0) & (w2 >= 0)).nonzero().squeeze(1)
        # Screen-space weights over camera z give 1/z-weights: perspective-correct.
        inv_z = torch.stack([w0, w1, w2], -1).index_select(0, keep) * rows.index_select(0, keep)[:, 6:9]
        bf, px, py = bf.index_select(0, keep), px.index_select(0, keep), py.index_select(0, keep)
        z = 1.0 / inv_z.sum(-1)
        frame = torch.div(bf, num_faces, rounding_mode="floor")
        pixel = (frame * height + py) * width + px
        chunk_depth = torch.full((num_pixels,), torch.inf, dtype=dtype, device=device)
        chunk_depth.scatter_reduce_(0, pixel, z, "amin")
        # One winner per pixel among equal depths (shared edges): the highest pair index.
        at_front = (z == chunk_depth.index_select(0, pixel)).nonzero().squeeze(1)
        winner = torch.full((num_pixels,), -1, dtype=torch.long, device=device)
        winner.scatter_reduce_(0, pixel.index_select(0, at_front), at_front, "amax")
        closer = (chunk_depth < depth).nonzero().squeeze(1)
        win = winner.index_select(0, closer)
        depth[closer] = chunk_depth.index_select(0, closer)
        face[closer] = bf.index_select(0, win) - frame.index_select(0, win) * num_faces
        bary[closer] = inv_z.index_select(0, win) * z.index_select(0, win)[:, None]
    mesh = torch.where(face >= 0, mesh_of_face[face.clamp_min(0)], -1)
    shape = (batch, height, width)
    return Fragments(face.view(shape), mesh.view(shape), depth.view(shape), bary.view(shape + (3,)))


def render_labels(
    meshes: Sequence[tuple[torch.Tensor, torch.Tensor]], K: torch.Tensor, image_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label and depth images of meshes [(verts (B, Vi, 3), faces (Fi, 3))] with occlusion.

    K: (B, 3, 3) or (3, 3); image_size (H, W) -> labels (B, H, W) long (0 background, i + 1
    where mesh i is the nearest surface), depth (B, H, W) camera z in metres (inf if empty).
    """
    fragments = rasterize(meshes, K, image_size)
    return fragments.mesh + 1, fragments.depth


def _vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (B, V, 3), unit length (zero for unused vertices)."""
    tri = verts[:, faces]
    face_normal = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    normals = torch.zeros_like(verts)
    for corner in range(3):
        normals.index_add_(1, faces[:, corner], face_normal)
    return torch.nn.functional.normalize(normals, dim=-1)


@torch.no_grad()
def render_shaded(
    meshes: Sequence[tuple[torch.Tensor, torch.Tensor]],
    colors: Sequence,
    K: torch.Tensor,
    image_size: tuple[int, int],
    background: torch.Tensor | None = None,
    smooth: bool = True,
    ambient: float = AMBIENT,
) -> torch.Tensor:
    """Lambert-shaded colour images of meshes lit by a headlight (a light at the camera).

    meshes: [(verts (B, Vi, 3) camera coords, faces (Fi, 3))]; colors: one rgb (3,) in [0, 1]
    per mesh; K: (B, 3, 3) or (3, 3); background: (B, H, W, 3) in [0, 1] kept where no mesh
    is drawn (black if None); smooth: interpolate area-weighted vertex normals, else flat
    face normals. Intensity = ambient + (1 - ambient) |n . l| with l the unit ray to the
    camera; |.| lights both sides, so open meshes (raw YCB, the hand's wrist) seen from inside
    are not black. Returns (B, H, W, 3) in [0, 1], dtype of the first mesh's vertices.
    """
    height, width = image_size
    fragments = rasterize(meshes, K, image_size)
    verts, faces, _ = _concatenate(meshes)
    batch, dtype, device = verts.shape[0], verts.dtype, verts.device
    drawn = fragments.face >= 0
    frame = torch.arange(batch, device=device)[:, None, None].expand(batch, height, width)[drawn]
    face = fragments.face[drawn]
    corners = faces[face]  # (N, 3)
    bary = fragments.bary[drawn]
    tri = verts[frame[:, None], corners]  # (N, 3, 3)
    point = (bary[..., None] * tri).sum(1)
    if smooth:
        normal = (bary[..., None] * _vertex_normals(verts, faces)[frame[:, None], corners]).sum(1)
    else:
        normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    normal = torch.nn.functional.normalize(normal, dim=-1)
    to_camera = torch.nn.functional.normalize(-point, dim=-1)
    intensity = ambient + (1.0 - ambient) * (normal * to_camera).sum(-1).abs()
    palette = torch.stack([torch.as_tensor(c, dtype=dtype, device=device).reshape(3) for c in colors])
    if background is None:
        image = torch.zeros(batch, height, width, 3, dtype=dtype, device=device)
    else:
        image = background.to(dtype=dtype, device=device).clone()
    image[drawn] = (palette[fragments.mesh[drawn]] * intensity[:, None]).clamp(0.0, 1.0)
    return image
