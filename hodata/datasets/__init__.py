"""hodata.datasets: adapters from datasets on disk to `hodata.types.Clip`s.

Built in: `ho3d` (HO-3D v2/v3, also hodata's synthetic sets), `core50`, `epic`
(Epic-Kitchens-100), `video` (your own recording). Importing the package registers them (`registry`).
"""

from .registry import adapter_options, available_datasets, get_adapter, open_dataset, register_dataset
from . import core50, epic, ho3d, video  # noqa: E402,F401  (register the built-in adapters)

__all__ = ["adapter_options", "available_datasets", "get_adapter", "open_dataset", "register_dataset"]
