"""Which mesh is in front where two meshes overlap on the image: vertex depth grids.

The depth-order term of the joint fit (`hodata.fitting.losses.depth_order_loss`) asks, for a
point of one mesh, how near the camera the other mesh comes around the point's pixel. A
z-buffer of the other mesh answers that exactly but is not differentiable in its depths
without a renderer; hodata splats the other mesh's vertices instead: each vertex writes its
camera z into the cell of a grid (cells about one mesh spacing wide, so a cell inside the
mesh's projection holds a vertex), and a point reads the nearest depth of the 3 x 3 cells
around its own (reach one to two cells). The grid is O(vertices) per frame, where all
(point, vertex) pairs were 7.8 M for a 10-frame clip and 4x slower than the whole fit step.
The depths are differentiable (the minimum passes its gradient to the vertex that attains
it); the cell assignment is not.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def mean_edge_pixels(pixels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Mean projected edge length (B,) of a mesh whose vertices project to pixels (B, V, 2).

    faces: (F, 3) vertex indices (each interior edge counted twice, which leaves the mean
    of a closed mesh's edges as it is). No gradient (a spacing, not a term).
    """
    if pixels.dim() != 3 or pixels.shape[-1] != 2:
        raise ValueError(f"mean_edge_pixels: pixels must be (B, V, 2), got {tuple(pixels.shape)}")
    p = pixels.detach()
    start, end = faces.reshape(-1), faces[:, [1, 2, 0]].reshape(-1)
    return (p.index_select(1, start) - p.index_select(1, end)).norm(dim=-1).mean(-1)


def _radii(erode, frames: int) -> tuple[int, ...]:
    """One erosion radius per frame from an int (every frame) or a sequence (one per frame)."""
    radii = (int(erode),) * frames if isinstance(erode, (int, float)) else tuple(int(r) for r in erode)
    if len(radii) != frames:
        raise ValueError(f"depth-order labels: {len(radii)} erosion radii for {frames} frames")
    if any(r < 0 for r in radii):
        raise ValueError(f"depth-order labels: radii must be >= 0, got {radii}")
    return radii


def _max_filter(labels: torch.Tensor, radii: tuple[int, ...]) -> torch.Tensor:
    """Maximum of float labels (B, C, S, S) over each frame's (2 r + 1)^2 window, r = radii[b]
    (separable: a row pass, then a column pass; frames sharing a radius are pooled together)."""
    out = torch.empty_like(labels)
    for radius in sorted(set(radii)):
        rows = [i for i, r in enumerate(radii) if r == radius]
        chunk = labels[rows]
        if radius > 0:
            k = 2 * radius + 1
            chunk = F.max_pool2d(chunk, (1, k), stride=1, padding=(0, radius))
            chunk = F.max_pool2d(chunk, (k, 1), stride=1, padding=(radius, 0))
        out[rows] = chunk
    return out


def eroded_labels(target: torch.Tensor, erode: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """ROI targets (B, S, S) in {-1 hand, 0 background, 1 object} -> (object shown, hand shown),
    each (B, S, S) bool and eroded by `erode` pixels (an int, or one radius per frame): a pixel
    keeps its label when its whole (2 erode + 1)^2 window has it."""
    radii = _radii(erode, target.shape[0])
    labels = torch.stack([target > 0.5, target < -0.5], 1).to(torch.float32)  # (B, 2, S, S)
    out = -_max_filter(-labels, radii)
    return out[:, 0] > 0.5, out[:, 1] > 0.5


def object_shown_beyond_hand(target: torch.Tensor, erode: int, band: int | Sequence[int]) -> torch.Tensor:
    """Object-shown pixels (B, S, S) bool of ROI targets (B, S, S) in {-1 hand, 0 background,
    1 object}: eroded by `erode` pixels (as `eroded_labels`) and farther than `band` pixels
    (an int, or one per frame; a square window) from every hand-shown pixel.

    Why only the hand's side: a fitted hand's 2D misfit lands its border vertices on the object
    pixels beside the hand's mask, where nothing hides them in truth; a finger truly hidden
    behind the object reaches beyond that band, and one near the object's outer edge stays
    counted (eroding the object label from every side drops it).
    """
    radii = _radii(band, target.shape[0])
    near_hand = _max_filter((target < -0.5).to(torch.float32)[:, None], radii)[:, 0] > 0.5
    return eroded_labels(target, erode)[0] & ~near_hand


_LABEL_CACHE: dict[tuple, tuple] = {}


def _cached(key: tuple, target: torch.Tensor, compute):
    """compute() once per target tensor and key (a fit reads the same targets every step;
    keyed by the tensor's identity and version, so a target edited in place is computed again)."""
    key = (id(target),) + key
    hit = _LABEL_CACHE.get(key)
    if hit is not None and hit[0]() is target and hit[1] == target._version:
        return hit[2]
    value = compute()
    if len(_LABEL_CACHE) > 64:
        _LABEL_CACHE.clear()
    _LABEL_CACHE[key] = (weakref.ref(target), target._version, value)
    return value


def cached_eroded_labels(target: torch.Tensor, erode: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`eroded_labels`, once per target tensor and radii."""
    radii = _radii(erode, target.shape[0])
    return _cached(("eroded", radii), target, lambda: eroded_labels(target, radii))


def cached_object_shown_beyond_hand(target: torch.Tensor, erode: int, band: int | Sequence[int]) -> torch.Tensor:
    """`object_shown_beyond_hand`, once per target tensor, erosion and band."""
    radii = _radii(band, target.shape[0])
    return _cached(("beyond_hand", int(erode), radii), target,
                   lambda: object_shown_beyond_hand(target, erode, radii))


def metric_erosion_radii(tolerance_m: float, focal_px: torch.Tensor, depth_m: torch.Tensor,
                         minimum: int = 0) -> tuple[int, ...]:
    """Erosion radii (one int per frame) that span `tolerance_m` metres at depth `depth_m`.

    focal_px: (B,) focal length of the (ROI) camera in pixels; depth_m: (B,) camera z of the
    object -> round(f * tolerance / z), at least `minimum`. A fixed pixel radius is a
    different metric band at every ROI scale; this keeps it a band on the object (one host
    read: call it once per stage, not per step).
    """
    if focal_px.shape != depth_m.shape or focal_px.dim() != 1:
        raise ValueError(f"metric_erosion_radii: focal_px {tuple(focal_px.shape)} and depth_m "
                         f"{tuple(depth_m.shape)} must both be (B,)")
    if not tolerance_m >= 0:
        raise ValueError(f"metric_erosion_radii: tolerance must be >= 0 metres, got {tolerance_m}")
    radii = (focal_px.detach() * tolerance_m / depth_m.detach().clamp_min(1e-3)).round()
    return tuple(max(int(r), int(minimum)) for r in radii.tolist())


def label_at(labels: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """labels (B, S, S) bool at pixel coordinates (B, P, 2), x then y (nearest pixel centre, as
    the renderer samples pixel i at coordinate i; False outside) -> (B, P)."""
    size = labels.shape[-1]
    index = pixels.detach().round().long()
    inside = ((index >= 0) & (index < size)).all(-1)
    index = index.clamp(0, size - 1)
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None]
    return labels[rows, index[..., 1], index[..., 0]] & inside


def front_depth_grid(pixels: torch.Tensor, depth: torch.Tensor, cell: torch.Tensor, grid: int) -> torch.Tensor:
    """Nearest depth of a mesh's vertices per image cell, spread over each cell's 3 x 3 block.

    pixels: (B, P, 2) projected vertices (x, y) in an image whose pixels 0 .. grid * cell
    the grid covers; depth: (B, P) their camera z; cell: (B,) cell size in pixels (> 0);
    grid: cells per side -> (B, grid, grid): at cell (i, j) (row i from y, column j from x)
    the least depth of the vertices in cells (i - 1 .. i + 1, j - 1 .. j + 1), +inf where
    there are none. Vertices outside the grid are left out.
    """
    if pixels.shape[:-1] != depth.shape or pixels.shape[-1] != 2:
        raise ValueError(f"front_depth_grid: pixels {tuple(pixels.shape)} must be depth's shape "
                         f"{tuple(depth.shape)} + (2,)")
    if cell.shape != pixels.shape[:1]:
        raise ValueError(f"front_depth_grid: cell must be ({pixels.shape[0]},), got {tuple(cell.shape)}")
    batch = pixels.shape[0]
    index = torch.floor(pixels.detach() / cell[:, None, None]).long()
    inside = ((index >= 0) & (index < grid)).all(-1)
    flat = index[..., 1].clamp(0, grid - 1) * grid + index[..., 0].clamp(0, grid - 1)
    flat = torch.where(inside, flat, torch.full_like(flat, grid * grid))  # one spare cell for the outside
    cells = torch.full((batch, grid * grid + 1), float("inf"), dtype=depth.dtype, device=depth.device)
    cells = cells.scatter_reduce(1, flat, depth, reduce="amin", include_self=True)
    nearest = cells[:, : grid * grid].reshape(batch, 1, grid, grid)
    return -F.max_pool2d(-nearest, 3, stride=1, padding=1)[:, 0]


def front_depth_at(front: torch.Tensor, pixels: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Read a `front_depth_grid` (B, G, G) at points projecting to pixels (B, Q, 2) -> (B, Q).

    +inf outside the grid or where the other mesh has no vertex near.
    """
    batch, grid = front.shape[0], front.shape[-1]
    index = torch.floor(pixels.detach() / cell[:, None, None]).long()
    inside = ((index >= 0) & (index < grid)).all(-1)
    flat = index[..., 1].clamp(0, grid - 1) * grid + index[..., 0].clamp(0, grid - 1)
    values = front.reshape(batch, grid * grid).gather(1, flat)
    return torch.where(inside, values, torch.full_like(values, float("inf")))
