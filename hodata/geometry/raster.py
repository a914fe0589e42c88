"""Rendering entry points: differentiable silhouettes and z-buffered label / shaded images.

- render_silhouette: soft (differentiable) or hard silhouettes of closed meshes, for the
  object loss (paper Eq. 3); see raster_silhouette for the method and its cost.
- render_labels, render_shaded: no-gradient z-buffer rasteriser (raster_zbuffer) for
  ground-truth masks with occlusion, synthetic frames and overlays.
"""

from hodata.geometry.raster_silhouette import (
    DEFAULT_SIGMA,
    MeshEdges,
    contour_edges,
    front_facing,
    mesh_edges,
    render_silhouette,
    winding_coverage,
)
from hodata.geometry.raster_zbuffer import Fragments, rasterize, render_labels, render_shaded

__all__ = [
    "DEFAULT_SIGMA",
    "Fragments",
    "MeshEdges",
    "contour_edges",
    "front_facing",
    "mesh_edges",
    "rasterize",
    "render_labels",
    "render_shaded",
    "render_silhouette",
    "winding_coverage",
]
