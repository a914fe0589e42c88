"""ClipEvidence on disk: one `<clip id>.pt` per clip, so evidence is computed once (`hodata
evidence`) and reused by `hodata fit --evidence-cache DIR`.

The file holds only tensors, strings, numbers, lists and dicts, and is read with
`torch.load(weights_only=True)`: a tampered file cannot run code. It records the providers
that made it; a cache entry made by other providers is not reused.
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Optional

import torch

from hodata.errors import HodataError
from hodata.evidence.types import ClipEvidence, HandEvidence
from hodata.types import HandInit

FORMAT_VERSION = 1


def _plain(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def evidence_to_dict(evidence: ClipEvidence, providers: dict[str, str]) -> dict:
    """A ClipEvidence (on the CPU) as plain data."""
    evidence = evidence.to("cpu", evidence.object_boxes.dtype)
    data = _plain(evidence)
    data["image_size"] = list(evidence.image_size)
    data["hands"] = []
    for hand in evidence.hands:
        entry = _plain(hand)
        entry["init"] = None if hand.init is None else _plain(hand.init)
        data["hands"].append(entry)
    return {"version": FORMAT_VERSION, "providers": dict(providers), "evidence": data}


def evidence_from_dict(payload: dict, where: str = "") -> ClipEvidence:
    try:
        data = dict(payload["evidence"])
        hands = []
        for entry in data.pop("hands"):
            entry = dict(entry)
            init = entry.pop("init")
            hands.append(HandEvidence(**entry, init=None if init is None else HandInit(**init)))
        data["image_size"] = tuple(data["image_size"])
        return ClipEvidence(**data, hands=hands)
    except (KeyError, TypeError) as exc:
        raise HodataError(f"{where}: not a hodata evidence file ({exc}); delete it to recompute") from None


def cache_path(folder: str | os.PathLike, clip_id: str) -> Path:
    return Path(folder) / f"{clip_id}.pt"


def save_evidence(folder: str | os.PathLike, clip_id: str, evidence: ClipEvidence, providers: dict[str, str]) -> Path:
    """Write atomically (temporary file, then rename)."""
    path = cache_path(folder, clip_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(evidence_to_dict(evidence, providers), tmp)
    tmp.replace(path)
    return path


def load_evidence(folder: str | os.PathLike, clip_id: str, providers: dict[str, str]) -> Optional[ClipEvidence]:
    """The cached evidence of a clip, or None when there is none made by these providers."""
    path = cache_path(folder, clip_id)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: say which and how to fix
        raise HodataError(f"{path}: unreadable evidence cache entry ({type(exc).__name__}); delete it to recompute") from None
    if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
        raise HodataError(f"{path}: not a hodata evidence file of version {FORMAT_VERSION}; delete it to recompute")
    if payload.get("providers") != dict(providers):
        return None
    return evidence_from_dict(payload, str(path))
