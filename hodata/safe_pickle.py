"""Unpickling of dataset and model files that may only rebuild numpy arrays and plain data.

MANO and HO-3D ship pickles; a plain `pickle.load` would run whatever a tampered file names.
`NumpyUnpickler` resolves an allow-list of exact (module, name) pairs, numpy's array / dtype
/ scalar reconstructors and harmless builtins, and refuses every other global with
`pickle.UnpicklingError` before importing anything: a module name is never imported just
because a pickle mentions it (importing `numpy.f2py.__main__`, say, runs f2py).
"""

from __future__ import annotations

import pickle

# numpy >= 2 keeps these in numpy._core; pickles from numpy < 2 (and Python 2) name numpy.core.
_NUMPY_PAIRS = {
    (f"{package}.{module}", name)
    for package in ("numpy.core", "numpy._core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "frombuffer")}
_BUILTIN_NAMES = {"object", "set", "frozenset", "slice", "complex", "list", "dict", "tuple", "bytearray"}
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    _NUMPY_PAIRS
    | {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("_codecs", "encode")}
    | {(module, name) for module in ("builtins", "__builtin__") for name in _BUILTIN_NAMES}
)
_RENAMED_MODULES = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric": "numpy._core.numeric",
                    "copy_reg": "copyreg", "__builtin__": "builtins"}


class NumpyUnpickler(pickle.Unpickler):
    """Allows numpy arrays, dtypes and scalars, and plain builtins (Python 2 pickles included)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and plain data)")
        return super().find_class(_RENAMED_MODULES.get(module, module), name)


def load_pickle(path, unpickler: type[pickle.Unpickler] = NumpyUnpickler):
    """Unpickle a file with a restricted unpickler. latin-1 decodes the numpy byte strings of
    Python 2 pickles (MANO, HO-3D v2). Errors propagate: callers name the file and the fix.

    SystemExit / GeneratorExit raised while unpickling (nothing allowed should raise them) become
    `pickle.UnpicklingError`, so a file can never end the process as if it had succeeded.
    """
    with open(path, "rb") as f:
        try:
            return unpickler(f, encoding="latin1").load()
        except (SystemExit, GeneratorExit) as exc:
            raise pickle.UnpicklingError(f"unpickling raised {type(exc).__name__}") from None
