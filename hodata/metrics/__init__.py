"""Metrics of hand-object reconstructions (paper Sec. 4.1) and the HO-3D challenge export.

- object: vertex distance, ADD-S, chamfer distance
- hand: vertex / joint errors, official Procrustes and scale-translation alignment, PCK AUC,
  F-scores
- interaction: penetration depth, contact %, contact accuracy (from object SDF values)
- hold: the HO-3D v3 metrics of HOLD (CVPR 2024) and its followers: root-aligned MPJPE,
  squared chamfer distance and F-scores at 5 / 10 mm of the object, hand-relative CD_h
- summary: per-clip metric dicts with stable keys (`METRIC_KEYS`) and their aggregation
- official: the HO-3D challenge `pred.json` / `pred.zip`
All metric functions are batched over frames ((T, N, 3) in, (T,) out) and device-agnostic.
"""

from hodata.metrics.hand import (
    fscore,
    joint_error,
    pa_error,
    pa_point_errors,
    pck_auc,
    pck_curve,
    point_errors,
    precision_recall,
    procrustes_align,
    procrustes_transform,
    scale_translation_align,
    st_joint_error,
    vertex_error,
)
from hodata.metrics.hold import (
    bounding_box_centre,
    hand_relative_chamfer_distance,
    object_chamfer_fscores,
    root_aligned_mpjpe,
    squared_chamfer_distance,
)
from hodata.metrics.interaction import (
    contact,
    contact_accuracy,
    contact_percent,
    hand_object_sdf_values,
    penetration_depth,
)
from hodata.metrics.object import (
    add_s,
    chamfer_distance,
    mutual_nearest_distances,
    nearest_neighbour_distances,
    object_vertex_error,
    posed_object_vertices,
)
from hodata.metrics.official import (
    fill_missing_frames,
    opencv_to_opengl,
    read_ho3d_predictions,
    write_ho3d_predictions,
)
from hodata.metrics.summary import METRIC_KEYS, aggregate, evaluate_clip, evaluate_fit

__all__ = [
    "squared_chamfer_distance",
    "root_aligned_mpjpe",
    "object_chamfer_fscores",
    "hand_relative_chamfer_distance",
    "bounding_box_centre",
    "METRIC_KEYS",
    "add_s",
    "aggregate",
    "chamfer_distance",
    "contact",
    "contact_accuracy",
    "contact_percent",
    "evaluate_clip",
    "evaluate_fit",
    "fill_missing_frames",
    "fscore",
    "hand_object_sdf_values",
    "joint_error",
    "mutual_nearest_distances",
    "nearest_neighbour_distances",
    "object_vertex_error",
    "opencv_to_opengl",
    "pa_error",
    "pa_point_errors",
    "pck_auc",
    "pck_curve",
    "penetration_depth",
    "point_errors",
    "posed_object_vertices",
    "precision_recall",
    "procrustes_align",
    "procrustes_transform",
    "read_ho3d_predictions",
    "scale_translation_align",
    "st_joint_error",
    "vertex_error",
    "write_ho3d_predictions",
]
