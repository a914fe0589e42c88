"""Device selection shared by the library and the CLI."""

from __future__ import annotations

import torch

from hodata.errors import HodataError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn "auto" / "cpu" / "cuda[:i]" into a torch.device; "auto" picks CUDA when present."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HodataError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HodataError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return device


def to_device(x, device: torch.device | str, dtype: torch.dtype):
    """Move a tensor to `device`, casting floating tensors to `dtype`; other values pass through."""
    if not torch.is_tensor(x):
        return x
    return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)
