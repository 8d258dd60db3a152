"""Router artifacts that cannot run code: ``router.json`` + ``state.safetensors`` (artifact format 2).

``Router.save(dir)`` writes

* ``state.safetensors``: every array of the router's state (``Router.state()``), in safetensors (a JSON header of
  names, dtypes, shapes and offsets, then the raw bytes). Arrays of at most ``PACK_BYTES`` bytes share one tensor per
  dtype (a gradient-boosting policy holds thousands of tiny node arrays); a larger array is a tensor of its own, named
  by where it sits in the state (``state.nn_._fit_X``);
* ``router.json``: the router's registered name, ``format_version`` 2, its params, candidates and query encoder, the
  versions of routecraft, numpy, scikit-learn, torch and safetensors that wrote it, the SHA-256 of
  ``state.safetensors``, and ``state``: the state as a JSON tree.

The tree is plain JSON (objects with string keys, lists, strings, numbers, booleans, null) except for nodes tagged
``{"__t": kind, ...}``:

======== ==========================================================================================================
kind      what it rebuilds
======== ==========================================================================================================
nd        a numpy array: ``dtype`` (a plain dtype) or ``raw`` (structured, string, complex, ... dtypes: raw bytes, and
          the index of numpy's description of the dtype in ``arrays.dtypes``; it may hold no Python objects),
          ``shape``, ``order`` "F" for a Fortran-ordered one, ``key`` (the tensor) and ``at`` (the first element, for
          packed arrays)
ndobj     an object array: its shape and its elements as nodes (strings, numbers, ...)
np        a numpy scalar (a 0-d ``nd``)
float     NaN and ±infinity (JSON has no literal for them)
tuple,    Python containers; ``dict`` is a dict whose keys are not all strings (as [key, value] pairs)
set,
dict
cand      a ``Candidate`` (model, strategy, budget)
dtype     a numpy dtype
bytes     base64
torch     a torch tensor (its array, dtype, ``param``: an ``nn.Parameter``)
rng       a numpy ``Generator`` (bit generator: PCG64, PCG64DXSM, MT19937, Philox or SFC64) or ``RandomState``, and its
          bit generator's state
router    a router inside the state (an ensemble's members, the joint router's RTR and R2-Router): rebuilt as the
          top-level one, through the registry (``routers/registry.py``) from its name, params and state
obj       an object of a class on ``ALLOWED``: rebuilt with ``cls.__new__(cls)`` and its state (``__setstate__`` where
          the class defines it, else ``__dict__.update``) — never by calling a function or constructor the file
          names
======== ==========================================================================================================

Why loading runs no code from the file: the JSON is parsed by ``json``, the arrays by safetensors (no pickle; a
malformed header is an error), and every node is rebuilt by code in this module. The only classes a file can make
are the registered routers (constructed from their params, as ``routecraft train`` does) and the classes named in
``ALLOWED``, each rebuilt from ``__new__`` and data: a class not on it (``os:system``, ``subprocess:Popen``,
``builtins:eval``, ...) is refused before anything is imported. ``ALLOWED`` holds the classes the registered routers'
states hold and nothing else (scikit-learn's nearest neighbours, ridge, MLP and histogram gradient boosting with
their parts; routecraft's cost, price, token and layout models); each has a round-trip test
(tests/routers/test_artifact_safety.py). The one estimator whose compiled prediction code follows indices stored in
its state, histogram gradient boosting, is checked on load (children after their parent and inside the tree, split
features inside the input, no categorical splits), so a crafted tree cannot send it outside its arrays. What this
does not protect against: a crafted artifact can hold any numbers, so it can route badly.

Saving refuses what it cannot write this way (a class not on ``ALLOWED``, a torch module: keep its
``state_dict()``, a dict of tensors, and rebuild the module in ``set_state``), naming where in the state it is.

Format 1 (``state.joblib``, a pickle) is never loaded: ``read_artifact`` refuses it with a message saying how to
re-train it or convert it (``routecraft artifact convert SRC --trust``, ``routers/convert.py``).
"""

from __future__ import annotations

import base64
import copyreg
import hashlib
import importlib
import json
import math
import platform
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from routecraft.data.schema import Candidate

FORMAT_VERSION = 2
META_FILE = "router.json"
ARRAYS_FILE = "state.safetensors"
LEGACY_FILE = "state.joblib"
TAG = "__t"
#: arrays of at most this many bytes share one tensor per dtype in state.safetensors
PACK_BYTES = 4096
#: dtypes safetensors stores as themselves (others are stored as raw bytes with their descr)
NATIVE_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
                 "float32", "float64")


class ArtifactError(ValueError):
    """An artifact that cannot be saved or loaded safely; the message says why and what to do."""


def _check_nearest_neighbors(nn: Any) -> None:
    X = getattr(nn, "_fit_X", None)
    if not (isinstance(X, np.ndarray) and X.ndim == 2 and getattr(nn, "_fit_method", None) == "brute"
            and getattr(nn, "_tree", None) is None and getattr(nn, "n_samples_fit_", None) == len(X)
            and isinstance(getattr(nn, "n_neighbors", None), int) and 1 <= nn.n_neighbors <= len(X)):
        raise ArtifactError("a NearestNeighbors model is inconsistent (routecraft saves brute-force ones: 2-D "
                            "_fit_X, n_samples_fit_ its rows, 1 <= n_neighbors <= them)")


def _check_tree_predictor(p: Any, n_features: int | None = None) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = getattr(p, "nodes", None)
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or not len(nodes):
        raise ArtifactError("a gradient-boosting tree has no valid node array")
    n = len(nodes)
    inner = np.flatnonzero(nodes["is_leaf"] == 0)
    left, right = nodes["left"][inner].astype(np.int64), nodes["right"][inner].astype(np.int64)
    if not ((left > inner) & (left < n) & (right > inner) & (right < n)).all():
        raise ArtifactError("a gradient-boosting tree has a child index outside the tree or before its parent")
    if (nodes["is_categorical"] != 0).any():
        raise ArtifactError("a gradient-boosting tree has categorical splits (routecraft's routers make none)")
    feat = nodes["feature_idx"][inner]
    if (feat < 0).any() or (n_features is not None and (feat >= n_features).any()):
        raise ArtifactError("a gradient-boosting tree splits on a feature outside its input")


def _check_hist_gradient_boosting(m: Any) -> None:
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    n_features = getattr(m, "_n_features", None)
    if not isinstance(n_features, int) or getattr(m, "n_features_in_", None) != n_features:
        raise ArtifactError("a gradient-boosting model has no consistent feature count")
    mapper = getattr(m, "_bin_mapper", None)
    if (getattr(m, "is_categorical_", None) is not None or getattr(mapper, "is_categorical_", None) is None
            or np.asarray(mapper.is_categorical_).any() or getattr(m, "_preprocessor", None) is not None):
        raise ArtifactError("a gradient-boosting model has categorical features (routecraft's routers use none)")
    preds = getattr(m, "_predictors", None)
    if not isinstance(preds, list) or not all(isinstance(step, list) for step in preds):
        raise ArtifactError("a gradient-boosting model has no list of trees")
    for step in preds:  # each tree's structure was checked when it was rebuilt; here its features
        for p in step:
            if type(p) is not TreePredictor:
                raise ArtifactError("a gradient-boosting model holds something other than trees")
            feat = p.nodes["feature_idx"][p.nodes["is_leaf"] == 0]
            if (feat < 0).any() or (feat >= n_features).any():
                raise ArtifactError("a gradient-boosting tree splits on a feature outside its input")


#: the classes an artifact may hold, as "module:qualname" where the class is defined -> a check run on the rebuilt
#: object (None: none). Nothing else is ever imported or rebuilt from a file.
ALLOWED: dict[str, Callable[[Any], None] | None] = {
    # kNN router, the knn cost model
    "sklearn.neighbors._unsupervised:NearestNeighbors": _check_nearest_neighbors,
    # the ridge cost model; sequential's "linear" policy
    "sklearn.linear_model._ridge:Ridge": None,
    # sequential's "mlp" policy
    "sklearn.neural_network._multilayer_perceptron:MLPRegressor": None,
    "sklearn.neural_network._stochastic_optimizers:AdamOptimizer": None,
    # sequential's "gbm" policy (the default) and its parts
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting:HistGradientBoostingRegressor":
        _check_hist_gradient_boosting,
    "sklearn.ensemble._hist_gradient_boosting.binning:_BinMapper": None,
    "sklearn.ensemble._hist_gradient_boosting.predictor:TreePredictor": _check_tree_predictor,
    "sklearn._loss.loss:HalfSquaredError": None,
    "sklearn._loss.link:IdentityLink": None,
    "sklearn._loss.link:Interval": None,
    "sklearn._loss._loss:CyHalfSquaredError": None,
    # routecraft's own: plain attribute holders
    "routecraft.routers.cost_model:CostModel": None,
    "routecraft.routers.networks:Layout": None,
    "routecraft.routers.token_budget:PriceModel": None,
    "routecraft.routers.token_budget:InputTokenModel": None,
    "routecraft.routers.observations:Observations": None,
    "routecraft.routers.sequential:_Const": None,
}

BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed_class(name: Any, where: str) -> type:
    """The class ``name`` names, if it is on ``ALLOWED``; nothing is imported for a name that is not."""
    if not isinstance(name, str) or name not in ALLOWED:
        raise ArtifactError(f"{where} names class {name!r}, which is not on routecraft's allowlist of artifact "
                            f"classes; refusing to load it (an artifact cannot name code to run)")
    module, qual = name.split(":")
    try:
        cls = getattr(importlib.import_module(module), qual)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"{where} names class {name!r}, which this installation does not have ({exc}); the "
                            "artifact was saved with other library versions: train it again") from None
    if not isinstance(cls, type) or class_name(cls) != name:
        raise ArtifactError(f"{where}: {name!r} is not a class defined there in this installation; train it again")
    return cls


def legacy_message(path: Path, router: Any) -> str:
    # only a plain router name goes into the command shown (the file's text could carry shell syntax)
    name = router if isinstance(router, str) and re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,40}", router) else "NAME"
    return (f"{path} is a format-1 router artifact (state.joblib, a pickle): routecraft no longer loads pickles, "
            f"which can run any code they carry. Train it again (`routecraft train --router {name} --data DATA "
            f"--out {path}`) or, if you made it or trust whoever did, convert it: `routecraft artifact convert "
            f"{path} --trust`")


def versions() -> dict[str, str | None]:
    """The versions of what wrote an artifact (read from package metadata: torch is not imported)."""
    from importlib import metadata

    def v(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"routecraft": v("routecraft"), "python": platform.python_version(), "numpy": np.__version__,
            "scikit-learn": v("scikit-learn"), "torch": v("torch"), "safetensors": v("safetensors")}


def _descr(dtype: np.dtype) -> Any:
    """numpy's descr of ``dtype`` as JSON (tuples as lists)."""
    def lists(d: Any) -> Any:
        return [lists(x) for x in d] if isinstance(d, (list, tuple)) else d

    return lists(np.lib.format.dtype_to_descr(dtype))


def _dtype_from_descr(d: Any, where: str, allow_object: bool = False) -> np.dtype:
    def tuples(x: Any) -> Any:
        if isinstance(x, str):
            return x
        if isinstance(x, list) and all(isinstance(f, list) and 2 <= len(f) <= 3 for f in x):
            return [(f[0], tuples(f[1]), *([tuple(f[2])] if len(f) == 3 else [])) for f in x]
        raise ArtifactError(f"{where}: malformed dtype description {x!r}")

    try:
        dt = np.lib.format.descr_to_dtype(tuples(d))
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed description is one clear error
        raise ArtifactError(f"{where}: malformed dtype description {d!r} ({exc})") from None
    if dt.hasobject and not allow_object:
        raise ArtifactError(f"{where}: dtype {d!r} holds Python objects, which an array of raw bytes cannot")
    return dt


# ---- writing --------------------------------------------------------------------------------------------------
class _Writer:
    """Encodes a state into a JSON tree and the arrays it refers to (see the module docstring)."""

    def __init__(self, router_type: type | None) -> None:
        self.router_type = router_type
        self.tensors: dict[str, np.ndarray] = {}
        self.packs: dict[str, list[np.ndarray]] = {}
        self.pack_len: dict[str, int] = {}
        self.arrays: dict[int, tuple[np.ndarray, dict]] = {}  # id -> (the array, kept alive; its node): shared once
        self.open: set[int] = set()
        self.dtypes: list[Any] = []  # descrs of the raw arrays' dtypes (arrays.dtypes in router.json)
        self.dtype_index: dict[str, int] = {}

    def finish(self) -> dict[str, np.ndarray]:
        out = dict(self.tensors)
        for name, chunks in self.packs.items():
            out[name] = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        return out

    def _name(self, path: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.\[\]-]", "_", path)[:200]  # paths start with "state": never "pack."
        name, i = base, 1
        while name in self.tensors:
            i += 1
            name = f"{base}#{i}"
        return name

    def encode(self, x: Any, path: str) -> Any:
        if isinstance(x, np.ndarray):
            return self.array(x, path)
        if isinstance(x, np.generic):
            return {TAG: "np", "a": self.array(np.asarray(x), path)}
        if x is None or type(x) in (bool, str, int):
            return x
        if type(x) is float:
            return x if math.isfinite(x) else {TAG: "float", "v": repr(x)}
        if isinstance(x, Candidate):
            return {TAG: "cand", "model": x.model, "strategy": x.strategy,
                    "budget": None if x.budget is None else int(x.budget)}
        if type(x) in (list, tuple, set, frozenset, dict, OrderedDict):
            return self.inside(x, path, self.container)
        if self.router_type is not None and isinstance(x, self.router_type):
            return self.inside(x, path, self.router)
        if type(x) is bytes:
            return {TAG: "bytes", "v": base64.b64encode(x).decode("ascii")}
        if isinstance(x, np.dtype):
            return {TAG: "dtype", "descr": _descr(x)}
        if isinstance(x, np.random.Generator):
            bg = x.bit_generator
            if type(bg).__name__ not in BIT_GENERATORS:
                raise ArtifactError(f"cannot save {path}: bit generator {type(bg).__name__}")
            return {TAG: "rng", "kind": "Generator", "bit_generator": type(bg).__name__,
                    "state": self.encode(bg.state, path + ".state")}
        if type(x) is np.random.RandomState:
            return {TAG: "rng", "kind": "RandomState", "state": self.encode(x.get_state(legacy=False),
                                                                            path + ".state")}
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(x, torch.Tensor):
            return self.tensor(torch, x, path)
        if torch is not None and isinstance(x, torch.nn.Module):
            raise ArtifactError(f"cannot save {path}: a torch module ({type(x).__name__}) is code, not data; keep its "
                                "state_dict() (a dict of tensors) in the state and rebuild the module in set_state")
        return self.inside(x, path, self.obj)

    def inside(self, x: Any, path: str, encode: Callable[[Any, str], Any]) -> Any:
        """``encode(x, path)`` for a value that holds others, refusing a state that holds itself."""
        if id(x) in self.open:
            raise ArtifactError(f"cannot save {path}: the state refers to itself")
        self.open.add(id(x))
        try:
            return encode(x, path)
        finally:
            self.open.discard(id(x))

    def container(self, x: Any, path: str) -> Any:
        if isinstance(x, dict):
            if all(type(k) is str for k in x) and TAG not in x:
                return {k: self.encode(v, f"{path}.{k}") for k, v in x.items()}
            return {TAG: "dict", "v": [[self.encode(k, f"{path}.<key>"), self.encode(v, f"{path}.{k}")]
                                       for k, v in x.items()]}
        items = [self.encode(v, f"{path}[{i}]") for i, v in enumerate(x)]
        if type(x) is list:
            return items
        return {TAG: {tuple: "tuple", set: "set", frozenset: "frozenset"}[type(x)], "v": items}

    def array(self, a: np.ndarray, path: str) -> dict:
        if id(a) in self.arrays:  # the same array held twice (an optimiser's view of a network's weights): once
            return self.arrays[id(a)][1]
        if type(a) is not np.ndarray:
            raise ArtifactError(f"cannot save {path}: {type(a).__name__} (an ndarray subclass)")
        if a.dtype.hasobject:
            if a.dtype != np.dtype(object):
                raise ArtifactError(f"cannot save {path}: a structured array with Python objects in it")
            node = {TAG: "ndobj", "shape": list(a.shape),
                    "v": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(a.ravel(order="C"))]}
        else:
            fortran = a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous
            data = np.ascontiguousarray(a.T if fortran else a)
            node = {TAG: "nd", "shape": list(a.shape)}
            if data.dtype.name in NATIVE_DTYPES and data.dtype.isnative:
                node["dtype"] = data.dtype.name
                flat = data.reshape(-1)
                kind = data.dtype.name
            else:
                d = _descr(data.dtype)
                node["raw"] = self.dtype_index.setdefault(json.dumps(d), len(self.dtypes))
                if node["raw"] == len(self.dtypes):
                    self.dtypes.append(d)
                flat = np.frombuffer(data.tobytes(), dtype=np.uint8)
                kind = "raw"
            if fortran:
                node["order"] = "F"
            if flat.nbytes <= PACK_BYTES:
                name = f"pack.{kind}"
                node["key"], node["at"] = name, self.pack_len.get(name, 0)
                self.packs.setdefault(name, []).append(flat)
                self.pack_len[name] = node["at"] + len(flat)
            else:
                name = self._name(path)
                node["key"] = name
                self.tensors[name] = flat if kind == "raw" else data
        self.arrays[id(a)] = (a, node)
        return node

    def tensor(self, torch: Any, t: Any, path: str) -> dict:
        param = isinstance(t, torch.nn.Parameter)
        t = t.detach().cpu()
        dtype = str(t.dtype).replace("torch.", "")
        try:
            a = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        except TypeError as exc:
            raise ArtifactError(f"cannot save {path}: a {dtype} tensor ({exc})") from None
        return {TAG: "torch", "dtype": dtype, "param": param, "a": self.array(np.array(a), path)}

    def router(self, r: Any, path: str) -> dict:
        return {TAG: "router", "router": r.name, "params": self.encode(r.params, path + ".params"),
                "candidates": [c.id for c in r.candidates], "encoder": r.encoder,
                "state": self.encode(r.state(), path + ".state")}

    def obj(self, x: Any, path: str) -> dict:
        cls = type(x)
        name = class_name(cls)
        if name not in ALLOWED:
            raise ArtifactError(f"cannot save {path}: class {name} is not on routecraft's allowlist of artifact "
                                "classes (routers/artifact.py ALLOWED); keep arrays and settings in the state, or "
                                "add the class there with a round-trip test")
        rv = x.__reduce_ex__(4)
        if isinstance(rv, tuple) and len(rv) == 2 and rv[0] is cls and rv[1] == ():
            state = None  # a compiled class without state: __new__ alone rebuilds it
        elif (isinstance(rv, tuple) and len(rv) >= 2 and rv[0] is copyreg.__newobj__ and rv[1] == (cls,)
              and all(r is None for r in rv[3:])):
            state = rv[2] if len(rv) > 2 else None
        else:
            raise ArtifactError(f"cannot save {path}: {name} is not rebuilt from __new__ and its state")
        return {TAG: "obj", "cls": name, "state": self.encode(state, path)}


def encode_state(state: dict, router_type: type | None = None) -> tuple[Any, dict[str, np.ndarray], list]:
    """(the JSON tree, the tensors of state.safetensors, the descrs of raw arrays' dtypes) of a router's
    ``state()``."""
    if not isinstance(state, dict):
        raise ArtifactError(f"a router's state() must be a dict, got {type(state).__name__}")
    w = _Writer(router_type)
    tree = w.encode(state, "state")
    return tree, w.finish(), w.dtypes


def write_artifact(router: Any, path: str | Path, router_type: type | None = None) -> Path:
    """Save ``router`` (format 2) in folder ``path``; a stale format-1 ``state.joblib`` there is removed."""
    from safetensors.numpy import save

    path = Path(path)
    tree, tensors, dtypes = encode_state(router.state(), router_type)
    blob = save(tensors, metadata={"format": "routecraft router state", "format_version": str(FORMAT_VERSION)})
    meta = {"router": router.name, "format_version": FORMAT_VERSION, "params": router.params,
            "candidates": [c.id for c in router.candidates], "encoder": router.encoder, "versions": versions(),
            "arrays": {"file": ARRAYS_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "tensors": len(tensors),
                       "bytes": len(blob), "dtypes": dtypes}}
    head = json.dumps(meta, indent=2, default=str)
    # the settings indented for a reader; the state tree (large for some routers) compact, last
    text = head[:-2] + ',\n  "state": ' + json.dumps(tree, separators=(",", ":"), allow_nan=False) + "\n}\n"
    path.mkdir(parents=True, exist_ok=True)
    (path / ARRAYS_FILE).write_bytes(blob)
    (path / META_FILE).write_text(text)
    if (path / LEGACY_FILE).exists():
        (path / LEGACY_FILE).unlink()
    return path


# ---- reading --------------------------------------------------------------------------------------------------
class _Reader:
    """Rebuilds a state from its JSON tree and the arrays of state.safetensors."""

    def __init__(self, tensors: dict[str, np.ndarray], resolve: Callable[[str], type], where: str,
                 dtypes: Any = ()) -> None:
        self.tensors = tensors
        self.resolve = resolve
        self.where = where
        self.dtypes = dtypes if isinstance(dtypes, list) else []
        self.raw_dtypes: dict[int, np.dtype] = {}
        self.arrays: dict[tuple, np.ndarray] = {}  # node -> its array: an array held twice is one array again

    def fail(self, path: str, msg: str) -> ArtifactError:
        return ArtifactError(f"{self.where}: {path}: {msg}")

    def decode(self, n: Any, path: str) -> Any:
        if n is None or isinstance(n, (bool, int, float, str)):
            return n
        if isinstance(n, list):
            return [self.decode(v, f"{path}[{i}]") for i, v in enumerate(n)]
        if not isinstance(n, dict):
            raise self.fail(path, f"unexpected JSON value {type(n).__name__}")
        tag = n.get(TAG)
        if tag is None:
            return {k: self.decode(v, f"{path}.{k}") for k, v in n.items()}
        fn = getattr(self, "_" + tag, None) if isinstance(tag, str) and tag in _TAGS else None
        if fn is None:
            raise self.fail(path, f"unknown node kind {tag!r} (an artifact holds only the kinds routers/artifact.py "
                                  f"rebuilds: {', '.join(_TAGS)})")
        return fn(n, path)

    def field(self, n: dict, key: str, types: type | tuple, path: str) -> Any:
        v = n.get(key)
        if not isinstance(v, types):
            raise self.fail(path, f"node field {key!r} is missing or malformed")
        return v

    def _float(self, n: dict, path: str) -> float:
        v = n.get("v")
        if v not in ("nan", "inf", "-inf"):
            raise self.fail(path, f"float node {v!r} is not nan, inf or -inf")
        return float(v)

    def _tuple(self, n: dict, path: str) -> tuple:
        return tuple(self.decode(self.field(n, "v", list, path), path))

    def _set(self, n: dict, path: str) -> set:
        try:
            return set(self.decode(self.field(n, "v", list, path), path))
        except TypeError as exc:
            raise self.fail(path, f"unhashable set member ({exc})") from None

    def _frozenset(self, n: dict, path: str) -> frozenset:
        return frozenset(self._set(n, path))

    def _dict(self, n: dict, path: str) -> dict:
        out = {}
        for i, kv in enumerate(self.field(n, "v", list, path)):
            if not (isinstance(kv, list) and len(kv) == 2):
                raise self.fail(path, "dict node items must be [key, value] pairs")
            k = self.decode(kv[0], f"{path}.<key {i}>")
            try:
                out[k] = self.decode(kv[1], f"{path}.{k}")
            except TypeError as exc:
                raise self.fail(path, f"unhashable dict key ({exc})") from None
        return out

    def _bytes(self, n: dict, path: str) -> bytes:
        try:
            return base64.b64decode(self.field(n, "v", str, path), validate=True)
        except ValueError as exc:
            raise self.fail(path, f"bad base64 ({exc})") from None

    def _dtype(self, n: dict, path: str) -> np.dtype:
        return _dtype_from_descr(n.get("descr"), f"{self.where}: {path}", allow_object=True)

    def _cand(self, n: dict, path: str) -> Candidate:
        m, s, b = n.get("model"), n.get("strategy"), n.get("budget")
        if not (isinstance(m, str) and isinstance(s, str) and (b is None or type(b) is int)):
            raise self.fail(path, "malformed candidate")
        return Candidate(m, s, b)

    def _np(self, n: dict, path: str) -> np.generic:
        a = self._nd(self.field(n, "a", dict, path), path)
        if a.ndim != 0:
            raise self.fail(path, "a numpy scalar must be a 0-d array")
        return a[()]

    def _shape(self, n: dict, path: str) -> tuple[int, ...]:
        shape = self.field(n, "shape", list, path)
        if not all(type(s) is int and s >= 0 for s in shape):
            raise self.fail(path, f"malformed shape {shape!r}")
        return tuple(shape)

    def _ndobj(self, n: dict, path: str) -> np.ndarray:
        shape = self._shape(n, path)
        items = self.decode(self.field(n, "v", list, path), path)
        if len(items) != math.prod(shape):
            raise self.fail(path, f"{len(items)} elements for shape {shape}")
        a = np.empty(len(items), dtype=object)
        a[:] = items
        return a.reshape(shape)

    def _nd(self, n: dict, path: str) -> np.ndarray:
        shape = self._shape(n, path)
        key = self.field(n, "key", str, path)
        memo = (key, n.get("at"), n.get("order"), shape, str(n.get("dtype")), str(n.get("raw")))
        if memo in self.arrays:
            return self.arrays[memo]
        if key not in self.tensors:
            raise self.fail(path, f"array {key!r} is not in {ARRAYS_FILE}")
        t = self.tensors[key]
        fortran = n.get("order") == "F"
        stored = shape[::-1] if fortran else shape
        count = math.prod(shape)
        if "raw" in n:
            dt = self.raw_dtype(n["raw"], path)
            if t.dtype != np.uint8 or t.ndim != 1:
                raise self.fail(path, f"raw array {key!r} must be 1-D bytes")
            start = n.get("at", 0)
            if type(start) is not int or start < 0 or start + count * dt.itemsize > len(t):
                raise self.fail(path, f"array runs outside {key!r}")
            a = np.frombuffer(t[start:start + count * dt.itemsize].tobytes(), dtype=dt).reshape(stored).copy()
        else:
            dtype = self.field(n, "dtype", str, path)
            if dtype not in NATIVE_DTYPES or t.dtype != np.dtype(dtype):
                raise self.fail(path, f"dtype {dtype!r} does not match {key!r} ({t.dtype})")
            if "at" in n:
                start = n["at"]
                if type(start) is not int or t.ndim != 1 or start < 0 or start + count > len(t):
                    raise self.fail(path, f"array runs outside {key!r}")
                a = t[start:start + count].reshape(stored).copy()
            else:
                if tuple(t.shape) != stored:
                    raise self.fail(path, f"shape {shape} does not match {key!r} {t.shape}")
                a = t if t.flags.writeable else t.copy()
        a = a.T if fortran else a
        self.arrays[memo] = a
        return a

    def raw_dtype(self, i: Any, path: str) -> np.dtype:
        if i not in self.raw_dtypes:
            if type(i) is not int or not 0 <= i < len(self.dtypes):
                raise self.fail(path, f"raw array dtype {i!r} is not in arrays.dtypes")
            self.raw_dtypes[i] = _dtype_from_descr(self.dtypes[i], f"{self.where}: {path}")
        return self.raw_dtypes[i]

    def _torch(self, n: dict, path: str) -> Any:
        import torch

        a = self._nd(self.field(n, "a", dict, path), path)
        dtype = self.field(n, "dtype", str, path)
        t = torch.from_numpy(np.array(a))
        if dtype == "bfloat16":
            t = t.view(torch.bfloat16)
        elif str(t.dtype) != f"torch.{dtype}":
            raise self.fail(path, f"tensor dtype {dtype!r} does not match its array ({a.dtype})")
        return torch.nn.Parameter(t) if n.get("param") is True else t

    def _rng(self, n: dict, path: str) -> Any:
        state = self.decode(n.get("state"), path + ".state")
        try:
            if n.get("kind") == "RandomState":
                rs = np.random.RandomState()
                rs.set_state(state)
                return rs
            name = n.get("bit_generator")
            if n.get("kind") != "Generator" or name not in BIT_GENERATORS:
                raise self.fail(path, f"unknown random generator {n.get('kind')!r}/{name!r}")
            bg = getattr(np.random, name)()
            bg.state = state
            return np.random.Generator(bg)
        except (TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise self.fail(path, f"bad random generator state ({exc})") from None

    def _router(self, n: dict, path: str) -> Any:
        return build_router(self.resolve, n.get("router"), self.decode(n.get("params"), path + ".params"),
                            n.get("candidates"), n.get("encoder"),
                            lambda: self.decode(n.get("state"), path + ".state"), f"{self.where}: {path}")

    def _obj(self, n: dict, path: str) -> Any:
        name = n.get("cls")
        cls = _allowed_class(name, f"{self.where}: {path}")
        state = self.decode(n.get("state"), path)
        obj = cls.__new__(cls)
        try:
            if state is not None:
                setstate = getattr(obj, "__setstate__", None)
                if setstate is not None:
                    setstate(state)
                elif isinstance(state, dict) and all(isinstance(k, str) for k in state):
                    obj.__dict__.update(state)
                else:
                    raise self.fail(path, f"{name} state must be a dict of attributes")
        except ArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - a state the class refuses is one clear error
            raise self.fail(path, f"cannot restore {name} ({type(exc).__name__}: {exc})") from None
        check = ALLOWED[name]
        if check is not None:
            try:
                check(obj)
            except ArtifactError as exc:
                raise self.fail(path, str(exc)) from None
        return obj


_TAGS = ("nd", "ndobj", "np", "float", "tuple", "set", "frozenset", "dict", "cand", "dtype", "bytes", "torch", "rng",
         "router", "obj")


def build_router(resolve: Callable[[str], type], name: Any, params: Any, candidates: Any, encoder: Any,
                 state: Callable[[], Any], where: str) -> Any:
    """A registered router rebuilt as ``load_router`` does: its class by name (``resolve``), constructed from its
    params, then its candidates, encoder and state (``state()``, decoded after the class is known)."""
    if not isinstance(name, str):
        raise ArtifactError(f"{where}: no router name")
    try:
        cls = resolve(name)
    except KeyError as exc:
        raise ArtifactError(f"{where}: {exc.args[0] if exc.args else exc}") from None
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ArtifactError(f"{where}: params must be an object of settings")
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
        raise ArtifactError(f"{where}: candidates must be a list of candidate ids")
    if encoder is not None and not isinstance(encoder, str):
        raise ArtifactError(f"{where}: encoder must be a name")
    try:
        router = cls(**params)
        router.candidates = [Candidate.parse(c) for c in candidates]
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: {name!r} refuses these params or candidates ({exc})") from None
    router.encoder = encoder
    st = state()
    if not isinstance(st, dict):
        raise ArtifactError(f"{where}: the state must be an object")
    try:
        router.set_state(st)
    except Exception as exc:  # noqa: BLE001 - a state that does not fit the router is one clear error
        raise ArtifactError(f"{where}: the state does not fit a {name!r} router ({type(exc).__name__}: {exc}); "
                            "save or train the artifact again") from None
    return router


def read_arrays(path: Path, meta: dict) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    f = path / ARRAYS_FILE
    if not f.is_file():
        raise ArtifactError(f"{path}: no {ARRAYS_FILE} (a format-2 artifact is router.json + {ARRAYS_FILE})")
    data = f.read_bytes()
    want = meta["arrays"].get("sha256") if isinstance(meta.get("arrays"), dict) else None
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise ArtifactError(f"{f} does not match router.json (SHA-256 differs): the two files were not saved "
                            "together; save or train the artifact again")
    try:
        return load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a malformed file
        raise ArtifactError(f"{f} is not a valid safetensors file ({type(exc).__name__}: {exc})") from None


def read_meta(path: str | Path) -> dict:
    """``router.json`` of artifact folder ``path``, parsed (no state is rebuilt)."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a router artifact (no router.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{meta_file} is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_file} must hold a JSON object")
    return meta


def read_artifact(path: str | Path, resolve: Callable[[str], type]) -> Any:
    """The router saved in artifact folder ``path`` (format 2), its class found by name with ``resolve`` (the
    registry). Never unpickles: a format-1 artifact (``state.joblib``) is refused with a message saying how to
    re-train or convert it."""
    path = Path(path)
    meta = read_meta(path)
    version = meta.get("format_version")
    if version == 1 or (version is None and (path / LEGACY_FILE).exists()):
        raise ArtifactError(legacy_message(path, meta.get("router")))
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path / META_FILE}: artifact format {version!r} is not supported (this routecraft "
                            f"reads format {FORMAT_VERSION}; save or train the artifact again)")
    where = str(path / META_FILE)
    arrays = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
    # the router's class first (an unknown name fails before anything else is read), then the arrays and the state
    try:
        return build_router(resolve, meta.get("router"), meta.get("params", {}), meta.get("candidates"),
                            meta.get("encoder"),
                            lambda: _Reader(read_arrays(path, meta), resolve, where, arrays.get("dtypes")).decode(
                                meta.get("state", {}), "state"), where)
    except RecursionError:
        raise ArtifactError(f"{where}: the state is nested too deeply") from None
    except ArtifactError:
        raise
    except (TypeError, ValueError, OverflowError, KeyError, IndexError, AttributeError, MemoryError) as exc:
        # whatever a crafted tree provokes in the decoder or in the rebuilt objects' own state setters: one clear
        # error, never a traceback (and never code: nothing named in the file is called)
        raise ArtifactError(f"{where}: malformed state ({type(exc).__name__}: {str(exc)[:200]})") from None


def same_state(a: tuple, b: tuple) -> bool:
    """Whether two encoded states (``encode_state``) are the same tree with the same dtypes and array bytes."""
    (ta, xa, da), (tb, xb, db) = a, b
    if json.dumps([ta, da], sort_keys=True) != json.dumps([tb, db], sort_keys=True) or set(xa) != set(xb):
        return False
    return all(xa[k].dtype == xb[k].dtype and xa[k].shape == xb[k].shape and xa[k].tobytes() == xb[k].tobytes()
               for k in xa)
