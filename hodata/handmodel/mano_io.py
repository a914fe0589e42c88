"""Read and write MANO-format pickles without chumpy.

The official `MANO_RIGHT.pkl` / `MANO_LEFT.pkl` are Python 2 (latin-1) pickles whose arrays
are partly chumpy `Ch` objects and whose J_regressor is a scipy sparse matrix. The
unpickler below maps every chumpy class to a stand-in that keeps the pickled state and
recovers the numpy array from it (a `Ch` keeps its value in the `x` attribute), rebuilds
sparse matrices from their stored arrays, and refuses any other class, so loading a
pickle never runs foreign code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from hodata.errors import HodataError
from hodata.handmodel.constants import NUM_MANO_JOINTS, POSE_DIM, REQUIRED_KEYS
from hodata.safe_pickle import NumpyUnpickler, load_pickle


class _PickledState:
    """Stand-in for a class whose module is not installed (chumpy) or not trusted."""

    _source = "?"

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}
        self.state = state


class _ChumpyStandIn(_PickledState):
    pass


class _SparseStandIn(_PickledState):
    pass


def _chumpy_class(name: str) -> type:
    return type(name, (_ChumpyStandIn,), {"_source": f"chumpy.{name}"})


def _sparse_class(name: str) -> type:
    return type(name, (_SparseStandIn,), {"_source": f"scipy.sparse.{name}"})


class _ManoUnpickler(NumpyUnpickler):
    """NumpyUnpickler plus stand-ins for chumpy objects and scipy sparse matrices."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _chumpy_class(name)
        if module.startswith("scipy.sparse"):
            return _sparse_class(name)
        return super().find_class(module, name)


_MAX_NESTING = 8  # a chumpy Ch wraps its value once or twice; deeper means a cycle or a crafted file


def _to_array(value, key: str, path: Path, depth: int = 0) -> np.ndarray | str:
    """Numpy array from a pickled value: ndarray, chumpy stand-in, or sparse stand-in."""
    if depth > _MAX_NESTING:
        raise HodataError(f"{path}: key {key!r} holds chumpy objects nested {depth} deep (or referring to "
                          "themselves); re-save the file with plain numpy arrays")
    if isinstance(value, _ChumpyStandIn):
        state = value.state if isinstance(getattr(value, "state", None), dict) else {}
        if "x" in state:
            return _to_array(state["x"], key, path, depth + 1)
        dterms = state.get("dterms", ("a",))
        if "a" in state and isinstance(dterms, (tuple, list)) and len(dterms) <= 1 and value._source.endswith("Ch"):
            return _to_array(state["a"], key, path, depth + 1)
        raise HodataError(
            f"{path}: key {key!r} holds a chumpy {value._source} expression, not a plain array; "
            "re-save the file with plain numpy arrays"
        )
    if isinstance(value, _SparseStandIn):
        import scipy.sparse as sp

        state = getattr(value, "state", {}) or {}
        if not isinstance(state, dict):
            raise HodataError(f"{path}: key {key!r} holds a sparse matrix whose state is a {type(state).__name__}, "
                              "not its arrays; re-save the file")
        fmt = state.get("format", type(value).__name__[:3])
        try:
            shape = tuple(int(n) for n in state.get("_shape", state.get("shape", ())))
            if fmt in ("csc", "csr"):
                cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
                mat = cls((state["data"], state["indices"], state["indptr"]), shape=shape)
            elif fmt == "coo":
                mat = sp.coo_matrix((state["data"], (state["row"], state["col"])), shape=shape)
            else:
                raise KeyError(fmt)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise HodataError(f"{path}: key {key!r} holds an unreadable sparse matrix ({type(exc).__name__}: {exc})") from None
        return np.asarray(mat.todense(), dtype=np.float64)
    if hasattr(value, "todense"):
        return np.asarray(value.todense(), dtype=np.float64)
    if isinstance(value, (str, bytes)):
        return value.decode("latin-1") if isinstance(value, bytes) else value
    try:
        return np.asarray(value)
    except Exception:  # noqa: BLE001 - anything unconvertible is a user file problem
        raise HodataError(f"{path}: key {key!r} is not an array") from None


def read_mano_pickle(path: str | Path) -> dict:
    """MANO-format pickle -> dict of numpy arrays (float64 / int64), validated.

    Accepts the official chumpy pickles and plain-numpy ones. Raises HodataError (one line,
    naming the file) when the file is missing, not a pickle, lacks a key or has wrong shapes.
    Extra keys `tip_vertex_ids` and `model_name` (written by the open hand) pass through.
    """
    path = Path(path)
    if not path.is_file():
        raise HodataError(f"{path}: MANO file not found; pass --mano-dir with the folder holding MANO_RIGHT.pkl / MANO_LEFT.pkl")
    try:
        raw = load_pickle(path, _ManoUnpickler)
    except HodataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise HodataError(
            f"{path}: not a readable MANO pickle ({type(exc).__name__}: {exc}); "
            "download MANO_RIGHT.pkl / MANO_LEFT.pkl from mano.is.tue.mpg.de"
        ) from None
    if not isinstance(raw, dict):
        raise HodataError(f"{path}: expected a pickled dict of MANO arrays, found {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise HodataError(f"{path}: MANO pickle lacks key(s) {', '.join(missing)}; is this a MANO model file?")
    out = {}
    for key, value in raw.items():
        if key in REQUIRED_KEYS or key in ("tip_vertex_ids", "hands_coeffs", "J"):
            out[key] = _to_array(value, key, path)
            if not isinstance(out[key], np.ndarray) or out[key].dtype.kind not in "biuf":
                kind = type(out[key]).__name__ if not isinstance(out[key], np.ndarray) else f"{out[key].dtype} array"
                raise HodataError(f"{path}: key {key!r} holds a {kind}, expected a numeric array; is this a MANO model file?")
        elif key in ("model_name", "bs_style", "bs_type") and isinstance(value, (str, bytes)):
            out[key] = _to_array(value, key, path)
    _validate(out, path)
    return out


def _validate(m: dict, path: Path) -> None:
    def bad(msg: str):
        raise HodataError(f"{path}: {msg}")

    v = m["v_template"]
    if v.ndim != 2 or v.shape[1] != 3:
        bad(f"v_template has shape {v.shape}, expected (V, 3)")
    n = v.shape[0]
    expect = {
        "shapedirs": (n, 3, None),
        "posedirs": (n, 3, 9 * (NUM_MANO_JOINTS - 1)),
        "J_regressor": (NUM_MANO_JOINTS, n),
        "weights": (n, NUM_MANO_JOINTS),
        "kintree_table": (2, NUM_MANO_JOINTS),
        "f": (None, 3),
        "hands_components": (None, POSE_DIM),
        "hands_mean": (POSE_DIM,),
    }
    for key, shape in expect.items():
        got = m[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            bad(f"{key} has shape {got}, expected {tuple('*' if s is None else s for s in shape)}")
    f = m["f"]
    if f.dtype.kind not in "iu" and not np.array_equal(f, np.round(f)):
        bad("faces f must hold integer vertex indices")
    if f.size and (f.min() < 0 or f.max() >= n):
        bad(f"faces index vertices outside 0..{n - 1}")
    parents = m["kintree_table"][0, 1:].astype(np.int64)
    wrong = [j + 1 for j, p in enumerate(parents) if not 0 <= p <= j]
    if wrong:
        bad(f"kintree_table gives joint {wrong[0]} the parent {parents[wrong[0] - 1]}; each joint's parent must be an "
            "earlier joint")
    if "tip_vertex_ids" in m and (m["tip_vertex_ids"].shape != (5,) or m["tip_vertex_ids"].max() >= n):
        bad("tip_vertex_ids must be 5 vertex indices")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "hands_components", "hands_mean"):
        if not np.all(np.isfinite(m[key].astype(np.float64))):
            bad(f"{key} holds non-finite values")


def write_mano_pickle_arrays(path: str | Path, model: dict) -> Path:
    """Write a MANO-format plain-numpy pickle (J_regressor as scipy CSC, as MANO stores it)."""
    import scipy.sparse as sp

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(model)
    data["J_regressor"] = sp.csc_matrix(np.asarray(model["J_regressor"], dtype=np.float64))
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    tmp.replace(path)
    return path
