"""Unpickling of dataset and model files that may only rebuild numpy arrays and plain data.

MANO and HO-3D ship pickles; a plain `pickle.load` would run whatever a tampered file names.
`NumpyUnpickler` resolves only numpy's array/dtype reconstructors and harmless builtins and
refuses every other class with `pickle.UnpicklingError`.
"""

from __future__ import annotations

import pickle

_NUMPY_NAMES = {"_reconstruct", "scalar", "dtype", "ndarray", "_frombuffer", "frombuffer"}
_BUILTIN_NAMES = {"object", "set", "frozenset", "slice", "complex", "list", "dict", "tuple", "bytearray"}


class NumpyUnpickler(pickle.Unpickler):
    """Allows numpy arrays, dtypes and scalars, and plain builtins (Python 2 pickles included)."""

    def find_class(self, module: str, name: str):
        root = module.split(".")[0]
        if root == "numpy" and (name in _NUMPY_NAMES or module.startswith("numpy.dtypes")):
            if module.startswith("numpy.core"):  # pickles from numpy < 2
                module = "numpy._core" + module[len("numpy.core"):]
            return super().find_class(module, name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return super().find_class("copyreg", name)
        if module == "_codecs" and name == "encode":  # protocol 2 stores bytes this way
            return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name in _BUILTIN_NAMES:
            return super().find_class("builtins", name)
        raise pickle.UnpicklingError(f"refusing to load class {module}.{name}")


def load_pickle(path, unpickler: type[pickle.Unpickler] = NumpyUnpickler):
    """Unpickle a file with a restricted unpickler. latin-1 decodes the numpy byte strings of
    Python 2 pickles (MANO, HO-3D v2). Errors propagate: callers name the file and the fix."""
    with open(path, "rb") as f:
        return unpickler(f, encoding="latin1").load()
