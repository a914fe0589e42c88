"""Optional PointRend object masks (paper Sec. 3.1) for users who have detectron2 and its weights.

UNTESTED HERE: detectron2 is not on PyPI and its weights cannot be downloaded on the machines
hodata is developed on, so this code path has never run in hodata's tests (none fakes it).
Everything else in hodata works without it; the offline default is GrabCut (masks.py), and
masks from a PointRend run elsewhere plug in through `--evidence files:DIR` (FRAME_object.png).

Use: `hodata fit DATASET --evidence pointrend:CONFIG.yaml:WEIGHTS.pkl`, with CONFIG one of
detectron2's `projects/PointRend/configs/InstanceSegmentation/*.yaml` (COCO classes) and
WEIGHTS the matching model file. The clip's hands, tracks and hand init come from the
detected provider; per frame the PointRend instance whose box overlaps the tracked object box
most (IoU, any class but "person") becomes the object mask, with the hand pixels marked as
occluder (-1). A frame where no instance overlaps the box keeps GrabCut's mask.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from hodata.errors import HodataError

PROVIDER = "pointrend"
COCO_PERSON = 0


@functools.lru_cache(maxsize=2)
def _predictor(config: str, weights: str, device: str):
    try:
        from detectron2.config import get_cfg
        from detectron2.engine import DefaultPredictor
        from detectron2.projects import point_rend
    except ImportError:
        raise HodataError("--evidence pointrend needs detectron2 with its PointRend project "
                          "(install it from its source for your torch/CUDA); or run PointRend elsewhere and pass "
                          "its masks with --evidence files:DIR") from None
    for path in (config, weights):
        if not Path(path).is_file():
            raise HodataError(f"{path}: PointRend config or weights file not found")
    cfg = get_cfg()
    point_rend.add_pointrend_config(cfg)
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = device
    return DefaultPredictor(cfg)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) with one box b (4,), xyxy."""
    lo = np.maximum(a[:, :2], b[:2])
    hi = np.minimum(a[:, 2:], b[2:])
    inter = np.clip(hi - lo, 0, None).prod(1)
    area = lambda x: np.clip(x[..., 2:] - x[..., :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def pointrend_object_targets(images: list[np.ndarray], object_boxes: torch.Tensor, hand_masks: torch.Tensor,
                             fallback: torch.Tensor, config: str, weights: str, device: str = "cpu") -> torch.Tensor:
    """Object targets (T, H, W) in {-1, 0, 1} from PointRend instances matched to the tracked
    object boxes (module docstring); `fallback` (T, H, W) where no instance matches."""
    predictor = _predictor(str(config), str(weights), str(device))
    out = fallback.clone()
    boxes = object_boxes.detach().cpu().double().numpy()
    for t, (image, box) in enumerate(zip(images, boxes)):
        if not np.isfinite(box).all():
            continue
        instances = predictor(np.ascontiguousarray(image[:, :, ::-1]))["instances"].to("cpu")
        keep = instances.pred_classes.numpy() != COCO_PERSON
        if not keep.any():
            continue
        iou = _box_iou(instances.pred_boxes.tensor.numpy()[keep], box)
        if iou.max() <= 0:
            continue
        mask = torch.as_tensor(instances.pred_masks.numpy()[keep][int(iou.argmax())])
        target = mask.to(out.dtype)
        out[t] = torch.where(hand_masks[t].to(torch.bool), torch.full_like(target, -1.0), target)
    return out
