"""Fitting (paper Sec. 3.2-3.3): object initialisation, hand initialisation, joint fit.

`from hodata.fitting import fit_clip` works; submodules load lazily so that the loss terms
can be used without the renderer and SDF engines being imported.
"""

_EXPORTS = {
    "FitConfig": "joint",
    "ObjectInitConfig": "object_init",
    "METHODS": "pipeline",
    "fit_clip": "pipeline",
    "fit_clips": "batched",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
