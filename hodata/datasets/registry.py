"""Dataset adapters by name: `@register_dataset("ho3d")` on an adapter class, `get_adapter`
and `open_dataset` for the CLI and the orchestration layer. The built-in adapters register
when `hodata.datasets` is imported (its `__init__` imports them after this module), so this
module imports no adapter and adapters import only this module: no import cycle."""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from hodata.errors import HodataError

_ADAPTERS: dict[str, Callable] = {}

A = TypeVar("A")


def register_dataset(name: str) -> Callable[[A], A]:
    """Class decorator: make an adapter reachable as `get_adapter(name)`."""

    def decorate(adapter: A) -> A:
        if name in _ADAPTERS and _ADAPTERS[name] is not adapter:
            raise ValueError(f"dataset adapter {name!r} registered twice")
        _ADAPTERS[name] = adapter
        return adapter

    return decorate


def get_adapter(name: str) -> Callable:
    """The adapter class registered under `name` (e.g. "ho3d"); HodataError listing the known ones."""
    if name not in _ADAPTERS:
        known = ", ".join(sorted(_ADAPTERS)) or "none"
        raise HodataError(f"unknown dataset {name!r}; known datasets: {known}")
    return _ADAPTERS[name]


def available_datasets() -> list[str]:
    """Names of the registered adapters."""
    return sorted(_ADAPTERS)


def adapter_options(name: str) -> set[str]:
    """Keyword options the adapter's constructor takes."""
    return set(inspect.signature(get_adapter(name)).parameters) - {"self", "root"}


def open_dataset(name: str, root, options: dict[str, Any] | None = None, **shared: Any):
    """The adapter `name` on `root`.

    options: what the user asked for (e.g. sessions for Core50): each one set (not None)
    must be an option of this adapter, else HodataError naming it; shared: what hodata passes
    to every adapter that takes it (mesh cache, MANO folder, ...), dropped where not taken.
    """
    adapter = get_adapter(name)
    accepted = adapter_options(name)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(k for k in given if k not in accepted)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise HodataError(f"{flags} does not apply to dataset {name!r}")
    kwargs = {k: v for k, v in shared.items() if v is not None and k in accepted}
    return adapter(root, **given, **kwargs)
