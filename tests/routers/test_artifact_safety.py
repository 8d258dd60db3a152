"""Router artifacts cannot run code (format 2: router.json + state.safetensors, routers/artifact.py).

* Tampered artifacts: a pickle whose ``__reduce__`` creates a marker file (as ``state.joblib``, format 1 or
  mislabelled format 2), states naming classes off the allowlist (``os:system``, ``subprocess:Popen``,
  ``builtins:eval``, a module of ours that writes a marker when imported), unknown node kinds, a router name not in
  the registry, malformed safetensors files, object dtypes in raw arrays and a gradient-boosting tree whose child
  index points outside it: loading fails with a clear error and the marker never appears (and the pickle is shown
  to be live: unpickled, it does create the marker).
* Every registered router, trained on a small slice of real data (ZeroEval GSM8K; routecraft's own model × strategy
  × budget table for rtr/r2/joint), saved and loaded: the same decisions (candidate, predictions, table, plan) at
  several trade-offs and a cost cap, the same predicted arrays bit for bit, the same replays.
* ``routecraft artifact convert`` refuses without ``--trust`` and turns a format-1 artifact into a format-2 one that
  decides the same.

Query features are hashed character trigrams of the real question texts (cheap and deterministic; the decisions,
not the features, are under test).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
import zlib

import joblib
import numpy as np
import pytest
from typer.testing import CliRunner

from routecraft.cli import app
from routecraft.data.resolve import resolve_data
from routecraft.routers import REGISTRY, MultiStepRouter, ObservingRouter, TabularRouter, load_router, make_router
from routecraft.routers.artifact import ALLOWED, ARRAYS_FILE, LEGACY_FILE, META_FILE, ArtifactError


def text_features(texts, dim: int = 32) -> np.ndarray:
    X = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        t = t.lower()
        for j in range(len(t) - 2):
            X[i, zlib.crc32(t[j:j + 3].encode()) % dim] += 1.0
    return X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-9)


def _slice(rd, n_train: int, n_test: int, n_cand: int | None = None):
    rd = rd.complete()
    if n_cand is not None:  # candidates spread over the price range: cheap, middle and dear ones
        by_cost = rd.outcomes.groupby("model")["cost_usd"].mean().sort_values().index.tolist()
        keep = [by_cost[int(i)] for i in np.linspace(0, len(by_cost) - 1, n_cand)]
        rd = rd.filter_candidates(keep)
    q = rd.queries["query_id"].tolist()
    train, test = rd.subset(q[:n_train]), rd.subset(q[n_train:n_train + n_test])
    return (train, text_features(train.queries["text"].tolist()), test,
            text_features(test.queries["text"].tolist()))


@pytest.fixture(scope="module")
def zeroeval():
    return _slice(resolve_data("zeroeval-gsm8k")[1], 120, 40, n_cand=6)


@pytest.fixture(scope="module")
def own():
    return _slice(resolve_data("data/routecraft-gsm8k")[1], 60, 20)


#: (id, registry name, params, which data): every registered router, and the settings whose states hold the other
#: allowlisted classes (a kNN cost model, a ridge cost model, sequential's MLP and ridge policies)
TINY_NET = {"hidden": 16, "epochs": 3, "seed": 0}
CASES = [
    ("random", "random", {}, "zeroeval"),
    ("oracle", "oracle", {}, "zeroeval"),
    ("best-single", "best-single", {}, "zeroeval"),
    ("cheapest", "cheapest", {}, "zeroeval"),
    ("fixed", "fixed", {"candidate": "FIRST"}, "zeroeval"),
    ("knn", "knn", {"k": 7}, "zeroeval"),
    ("mlp+knn-cost", "mlp", {"hidden": "32", "epochs": 20, "cost_model": "knn"}, "zeroeval"),
    ("mf", "mf", {"dim": 16, "epochs": 20}, "zeroeval"),
    ("linear+ridge-cost", "linear", {"cost_model": "ridge"}, "zeroeval"),
    ("ensemble", "ensemble", {}, "zeroeval"),
    ("heuristic", "heuristic", {}, None),
    ("kind", "kind", {"prior": 2}, "zeroeval"),
    ("cascade", "cascade", {}, "zeroeval"),
    ("sequential", "sequential", {}, "zeroeval"),
    ("sequential-mlp", "sequential", {"model": "mlp", "upfront": "none"}, "zeroeval"),
    ("sequential-linear", "sequential", {"model": "linear", "upfront": "none"}, "zeroeval"),
    ("rtr", "rtr", TINY_NET, "own"),
    ("r2", "r2", {"hidden": [8], "epochs": 2}, "own"),
    ("joint", "joint", {**TINY_NET, "rtr": TINY_NET, "r2": {"head": "ridge"}}, "own"),
    ("router-r1", "router-r1", {"policy": "/somewhere/policy", "config": {"reward": {"alpha": 0.5}}}, None),
    ("r2-reasoner", "r2-reasoner", {"decomposer": "/p/dec", "allocator": "/p/alloc"}, None),
]


CASE = {c[0]: c for c in CASES}


def test_every_registered_router_has_a_round_trip_case():
    assert {c[1] for c in CASES} == set(REGISTRY)


@pytest.fixture(scope="module")
def fitted(zeroeval, own):
    """case id -> (router, held-out (queries, features) or None), each fitted once for the module."""
    memo: dict = {}

    def get(case):
        if case[0] not in memo:
            memo[case[0]] = _fit(case, {"zeroeval": zeroeval, "own": own})
        return memo[case[0]]

    return get


def _fit(case, data):
    _, name, params, which = case
    if name == "heuristic":
        from routecraft.pool.config import load_pool

        return make_router(name).fit_pool(load_pool("local").models), None
    if which is None:
        return make_router(name, **params), None
    train, Xtr, test, Xte = data[which]
    if params.get("candidate") == "FIRST":
        params = {"candidate": train.candidates[0].id}
    r = make_router(name, **params)
    if r.is_oracle:
        r.fit(test, None)
    else:
        r.fit(train, Xtr if r.uses_features else None)
    r.encoder = "hashed-trigrams" if r.uses_features else None
    return r, (test, Xte if r.uses_features else None)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_saved_and_loaded_router_decides_identically(case, fitted, tmp_path):
    r, held = fitted(case)
    out = r.save(tmp_path / case[0])
    assert sorted(p.name for p in out.iterdir()) == sorted([ARRAYS_FILE, META_FILE])  # no pickle anywhere
    meta = json.loads((out / META_FILE).read_text())
    assert meta["format_version"] == 2 and meta["router"] == case[1]
    assert {"routecraft", "numpy", "scikit-learn", "torch", "safetensors"} <= set(meta["versions"])
    back = load_router(out)
    assert type(back) is type(r) and back.params == r.params and back.candidates == r.candidates
    assert back.encoder == r.encoder
    if isinstance(r, MultiStepRouter):
        return  # deciding runs the pool; everything it has is in the params (compared above)
    if held is None:  # the heuristic router: decides without a table
        for lam in (0.0, 1e4):
            assert r.decide_one("What is 48 / 2 + 48?", lam=lam) == back.decide_one("What is 48 / 2 + 48?", lam=lam)
        return
    test, X = held
    cost = test.matrices().cost.mean(axis=0)
    trade_offs = ({"lam": 0.0}, {"lam": 1.0 / cost.max()}, {"lam": 1.0 / cost.min()},
                  {"max_cost": float(np.median(cost))})
    for kw in trade_offs:
        assert _same(r.decide(test.queries, X, **kw), back.decide(test.queries, X, **kw)), kw
        if isinstance(r, ObservingRouter):
            ra, rb = r.replay(test, X, **kw), back.replay(test, X, **kw)
            assert np.array_equal(ra.score, rb.score) and np.array_equal(ra.cost, rb.cost), kw
    if isinstance(r, TabularRouter):
        pa, pb = r.predict(test.queries, X), back.predict(test.queries, X)
        assert np.array_equal(pa.score, pb.score) and np.array_equal(pa.cost, pb.cost)
        assert (pa.tokens is None) == (pb.tokens is None) and (pa.tokens is None or np.array_equal(pa.tokens,
                                                                                                  pb.tokens))
    x0 = None if X is None else X[0]
    one = dict(lam=1.0 / cost.max(), task="gsm8k", query_id=test.queries["query_id"][0])
    assert r.decide_one(test.queries["text"][0], x0, **one) == back.decide_one(test.queries["text"][0], x0, **one)


def test_the_allowlist_is_what_the_routers_hold(fitted, tmp_path):
    """Every class on the allowlist is one some router's saved state holds (nothing is there just in case)."""
    # sequential's constant predictor, for a step whose training target is constant (test_unusual_values...)
    seen: set[str] = {"routecraft.routers.sequential:_Const"}

    def walk(n):
        if isinstance(n, dict):
            if n.get("__t") == "obj":
                seen.add(n["cls"])
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    for case in CASES:
        r, _ = fitted(case)
        walk(json.loads((r.save(tmp_path / case[0]) / META_FILE).read_text())["state"])
    assert seen == set(ALLOWED)


# ---- tampered artifacts ----------------------------------------------------------------------------------------
class _Boom:
    """Unpickling this opens (creates) the marker file: code run by loading."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_artifact(d, marker, version=1, router="mlp"):
    d.mkdir(parents=True)
    meta = {"router": router, "params": {}, "candidates": ["a", "b"], "encoder": None}
    if version is not None:
        meta["format_version"] = version
    (d / META_FILE).write_text(json.dumps(meta))
    payload = pickle.dumps({"layers_": _Boom(marker)})
    (d / LEGACY_FILE).write_bytes(payload)
    return payload


@pytest.mark.parametrize("version", [1, None])
def test_a_pickled_artifact_is_refused_and_runs_nothing(tmp_path, version):
    marker = tmp_path / "PWNED"
    payload = _pickle_artifact(tmp_path / "old", marker, version)
    with pytest.raises(ArtifactError, match=r"format-1 router artifact \(state\.joblib, a pickle\).*no longer loads "
                                            r"pickles.*routecraft train --router mlp.*routecraft artifact convert .* "
                                            r"--trust"):
        load_router(tmp_path / "old")
    assert not marker.exists()
    # the CLI and the gateway load the same way: `route` says so in one line, exit code 2
    r = CliRunner().invoke(app, ["route", "--router", str(tmp_path / "old"), "What is 2 + 2?"])
    assert r.exit_code == 2 and "format-1" in r.output and "Traceback" not in r.output
    assert not marker.exists()
    # the payload is live: unpickled, it runs
    pickle.loads(payload)["layers_"].close()
    assert marker.exists()


def test_a_pickle_beside_a_format_2_router_json_is_never_read(tmp_path):
    marker = tmp_path / "PWNED"
    _pickle_artifact(tmp_path / "a", marker, version=2)
    with pytest.raises(ArtifactError, match="no state.safetensors"):
        load_router(tmp_path / "a")
    assert not marker.exists()


def test_convert_refuses_without_trust_and_touches_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    payload = _pickle_artifact(tmp_path / "old", marker)
    r = CliRunner().invoke(app, ["artifact", "convert", str(tmp_path / "old")])
    assert r.exit_code == 2 and "--trust" in r.output and "runs any code" in r.output
    assert not marker.exists() and (tmp_path / "old" / LEGACY_FILE).read_bytes() == payload
    assert not (tmp_path / "old" / ARRAYS_FILE).exists()


@pytest.fixture(scope="module")
def knn_artifact(zeroeval, tmp_path_factory):
    train, Xtr, test, Xte = zeroeval
    r = make_router("knn", k=5).fit(train, Xtr)
    return r.save(tmp_path_factory.mktemp("knn") / "knn"), (test, Xte)


def _tampered(src, dst, edit_state=None, edit_meta=None, arrays: bytes | None = None):
    """A copy of artifact ``src`` in ``dst`` with its state tree / router.json / safetensors bytes replaced; the
    checksum is made to match, so what is tested is the loader's handling of the content."""
    dst.mkdir(parents=True)
    meta = json.loads((src / META_FILE).read_text())
    if edit_state is not None:
        edit_state(meta["state"])
    if edit_meta is not None:
        edit_meta(meta)
    data = (src / ARRAYS_FILE).read_bytes() if arrays is None else arrays
    meta["arrays"]["sha256"] = hashlib.sha256(data).hexdigest()
    (dst / ARRAYS_FILE).write_bytes(data)
    (dst / META_FILE).write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("cls", ["os:system", "posix:system", "subprocess:Popen", "builtins:eval", "builtins:exec",
                                 "pickle:loads", "importlib:import_module", "sklearn.utils:Bunch"])
def test_a_state_naming_a_class_off_the_allowlist_is_refused(knn_artifact, tmp_path, cls):
    src, _ = knn_artifact
    marker = tmp_path / "PWNED"

    def evil(state):
        assert state["nn_"]["__t"] == "obj"
        state["nn_"] = {"__t": "obj", "cls": cls, "state": {"args": f"touch {marker}", "cmd": ["touch", str(marker)]}}

    d = _tampered(src, tmp_path / "evil", edit_state=evil)
    with pytest.raises(ArtifactError, match=rf"state\.nn_ names class '{cls}', which is not on routecraft's "
                                            r"allowlist of artifact classes; refusing to load it"):
        load_router(d)
    assert not marker.exists()


def test_a_class_off_the_allowlist_is_not_even_imported(knn_artifact, tmp_path, monkeypatch):
    """A module that writes a marker when imported, named in the file: refused before any import."""
    src, _ = knn_artifact
    marker = tmp_path / "IMPORTED"
    (tmp_path / "rc_evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    d = _tampered(src, tmp_path / "evil", edit_state=lambda s: s.update(
        nn_={"__t": "obj", "cls": "rc_evil_module:Thing", "state": {}}))
    with pytest.raises(ArtifactError, match="not on routecraft's allowlist"):
        load_router(d)
    assert not marker.exists() and "rc_evil_module" not in sys.modules
    __import__("rc_evil_module")  # the module is live: imported, it writes the marker
    assert marker.exists()
    sys.modules.pop("rc_evil_module", None)


@pytest.mark.parametrize("node, match", [
    ({"__t": "call", "fn": "os:system", "args": ["touch PWNED"]}, "unknown node kind 'call'"),
    ({"__t": "reduce", "callable": "builtins:eval", "args": ["1"]}, "unknown node kind 'reduce'"),
    ({"__t": "router", "router": "os.system", "params": {}, "candidates": [], "state": {}}, "unknown router"),
    ({"__t": "nd", "shape": [3], "dtype": "float64", "key": "nope"}, "array 'nope' is not in state.safetensors"),
    ({"__t": "nd", "shape": [10 ** 9], "dtype": "float64", "key": "pack.float64", "at": 0}, "runs outside"),
    ({"__t": "nd", "shape": [2], "raw": 0, "key": "pack.float64", "at": 0}, "not in arrays.dtypes"),
    ({"__t": "ndobj", "shape": [2], "v": [{"__t": "obj", "cls": "builtins:eval", "state": "1"}, 1]},
     "not on routecraft's allowlist"),
    # found by a review with crafted files: each was a raw traceback (TypeError, OverflowError, numpy's ValueError)
    ({"__t": "nd", "shape": [3], "dtype": "float64", "key": "pack.float64", "at": [0]}, "malformed state"),
    ({"__t": "nd", "shape": [3], "dtype": "float64", "key": "pack.float64", "at": 0, "order": {}}, "malformed"),
    ({"__t": "nd", "shape": [0, 2 ** 70], "dtype": "float64", "key": "pack.float64", "at": 0}, "malformed state"),
    ({"__t": "rng", "kind": "Generator", "bit_generator": "PCG64", "state": {
        "bit_generator": "PCG64", "state": {"state": 2 ** 200, "inc": 1}, "has_uint32": 0, "uinteger": 0}},
     "malformed state|bad random generator state"),
])
def test_malformed_or_unknown_nodes_are_refused(knn_artifact, tmp_path, node, match):
    src, _ = knn_artifact
    d = _tampered(src, tmp_path / "t", edit_state=lambda s: s.update(nn_=node))
    with pytest.raises(ArtifactError, match=match):
        load_router(d)


def test_a_raw_dtype_with_python_objects_is_refused(knn_artifact, tmp_path):
    src, _ = knn_artifact

    def meta(m):
        m["arrays"]["dtypes"] = [[["a", "|O"]]]
        m["state"]["nn_"] = {"__t": "nd", "shape": [1], "raw": 0, "key": "pack.float64", "at": 0}

    d = _tampered(src, tmp_path / "t", edit_meta=meta)
    with pytest.raises(ArtifactError, match="holds Python objects"):
        load_router(d)


def test_a_router_name_off_the_registry_is_refused(knn_artifact, tmp_path):
    src, _ = knn_artifact
    d = _tampered(src, tmp_path / "t", edit_meta=lambda m: m.update(router="os.system"))
    with pytest.raises(ArtifactError, match="unknown router 'os.system'"):
        load_router(d)


@pytest.mark.parametrize("blob, match", [
    (b"\xff" * 8 + b"{}", "not a valid safetensors file"),                                  # header length: huge
    ((20).to_bytes(8, "little") + b"this is not json!!!!", "not a valid safetensors file"),  # header: not JSON
    ((60).to_bytes(8, "little") + b'{"x":{"dtype":"F64","shape":[4],"data_offsets":[0,32]}}    ' + b"\0" * 8,
     "not a valid safetensors file"),                                                      # data shorter than said
    (b"", "not a valid safetensors file"),
])
def test_a_malformed_safetensors_file_is_refused(knn_artifact, tmp_path, blob, match):
    src, _ = knn_artifact
    d = _tampered(src, tmp_path / "t", arrays=blob)
    with pytest.raises(ArtifactError, match=match):
        load_router(d)


def test_arrays_that_do_not_match_router_json_are_refused(knn_artifact, tmp_path, zeroeval):
    src, _ = knn_artifact
    train, X = zeroeval[0], zeroeval[1]
    q = train.queries["query_id"].tolist()[:100]  # another training set: other arrays
    other = make_router("knn", k=5).fit(train.subset(q), X[:100]).save(tmp_path / "other")
    d = tmp_path / "mixed"
    d.mkdir()
    (d / META_FILE).write_bytes((src / META_FILE).read_bytes())
    (d / ARRAYS_FILE).write_bytes((other / ARRAYS_FILE).read_bytes())
    with pytest.raises(ArtifactError, match="does not match router.json"):
        load_router(d)
    load_router(src)


def test_a_gradient_boosting_tree_pointing_outside_itself_is_refused(fitted, tmp_path):
    """The compiled predictor follows child indices without bounds checks: a crafted tree is refused on load."""
    from safetensors.numpy import load, save
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    src = fitted(CASE["sequential"])[0].save(tmp_path / "seq")
    meta = json.loads((src / META_FILE).read_text())
    found = []

    def walk(n):
        if isinstance(n, dict):
            if n.get("cls", "").endswith(":TreePredictor"):
                found.append(n["state"]["nodes"])
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(meta["state"])
    node = next(nd for nd in found if nd["shape"][0] > 1)
    tensors = load((src / ARRAYS_FILE).read_bytes())
    blob = tensors[node["key"]].copy()
    size = node["shape"][0] * PREDICTOR_RECORD_DTYPE.itemsize
    start = node.get("at", 0)
    nodes = np.frombuffer(blob[start:start + size].tobytes(), dtype=PREDICTOR_RECORD_DTYPE).copy()
    assert nodes["is_leaf"][0] == 0
    nodes["left"][0] = 10 ** 6
    blob[start:start + size] = np.frombuffer(nodes.tobytes(), dtype=np.uint8)
    tensors[node["key"]] = blob
    d = _tampered(src, tmp_path / "t", arrays=save(tensors))
    with pytest.raises(ArtifactError, match="child index outside the tree"):
        load_router(d)
    load_router(src)  # the untouched one loads


def test_saving_refuses_what_it_cannot_rebuild(zeroeval, tmp_path):
    import torch

    r = make_router("linear").fit(zeroeval[0], zeroeval[1])
    r.extra_ = lambda x: x
    with pytest.raises(ArtifactError, match="cannot save state.extra_: class builtins:function is not on"):
        r.save(tmp_path / "a")
    r.extra_ = torch.nn.Linear(2, 2)
    with pytest.raises(ArtifactError, match="a torch module .* state_dict"):
        r.save(tmp_path / "b")
    r.extra_ = [1]
    r.extra_.append(r.extra_)
    with pytest.raises(ArtifactError, match=r"cannot save state.extra_\[1\]: the state refers to itself"):
        r.save(tmp_path / "b")
    # tensors (a state_dict) are data: saved and rebuilt as tensors
    r.extra_ = {"w": torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3)),
                "h": torch.ones(2, dtype=torch.bfloat16), "i": torch.arange(3)}
    back = load_router(r.save(tmp_path / "c"))
    assert isinstance(back.extra_["w"], torch.nn.Parameter) and torch.equal(back.extra_["w"], r.extra_["w"])
    assert back.extra_["h"].dtype == torch.bfloat16 and torch.equal(back.extra_["h"], r.extra_["h"])
    assert torch.equal(back.extra_["i"], r.extra_["i"])
    assert not (tmp_path / "a").exists()  # a refused save writes nothing


def test_unusual_values_round_trip_exactly(zeroeval, tmp_path):
    """The state encoding itself: non-finite floats, numpy scalars, tuples, sets, non-string keys, object and
    structured arrays, Fortran order, shared arrays, a random generator, sequential's constant predictor."""
    from routecraft.routers.sequential import _Const

    r = make_router("linear").fit(zeroeval[0], zeroeval[1])
    shared = np.arange(12.0).reshape(3, 4)
    rec = np.zeros(3, dtype=[("v", "<f8"), ("n", "<u4"), ("s", "U3")])
    rec["s"] = ["a", "bc", "def"]
    rng = np.random.default_rng(7)
    r.extra_ = {"nan": float("nan"), "inf": float("-inf"), "f32": np.float32(1.5), "i": np.int16(-3),
                "t": (1, "a", None), "s": {1, 2}, "k": {(1, "x"): 2, 3: [4]}, "__t": "not a tag",
                "obj": np.array(["a", None, 3], dtype=object), "rec": rec, "F": np.asfortranarray(shared),
                "a": shared, "b": shared, "big": np.arange(5000, dtype=np.int32), "rng": rng, "bytes": b"\x00\xff",
                "dt": np.dtype("<f4"), "be": np.arange(3, dtype=">i4"), "const": _Const(0.25)}
    back = load_router(r.save(tmp_path / "x")).extra_
    e = r.extra_
    assert np.isnan(back["nan"]) and back["inf"] == float("-inf")
    assert type(back["f32"]) is np.float32 and back["f32"] == 1.5 and type(back["i"]) is np.int16
    assert back["t"] == (1, "a", None) and back["s"] == {1, 2} and back["k"] == {(1, "x"): 2, 3: [4]}
    assert back["__t"] == "not a tag" and back["bytes"] == b"\x00\xff" and back["dt"] == np.dtype("<f4")
    assert back["obj"].dtype == object and back["obj"].tolist() == ["a", None, 3]
    assert back["rec"].dtype == rec.dtype and back["rec"].tolist() == rec.tolist()
    assert back["F"].flags.f_contiguous and not back["F"].flags.c_contiguous and np.array_equal(back["F"], shared)
    assert back["a"] is back["b"] and np.array_equal(back["a"], shared) and back["a"].flags.writeable
    assert np.array_equal(back["big"], e["big"]) and back["be"].tolist() == [0, 1, 2]
    assert back["rng"].random() == rng.random()
    assert back["const"].predict(np.zeros((2, 3))).tolist() == [0.25, 0.25]


# ---- converting format 1 ---------------------------------------------------------------------------------------
def _format1(r, d):
    """A format-1 artifact as routecraft wrote it before format 2: router.json + joblib.dump(state())."""
    d.mkdir(parents=True)
    (d / META_FILE).write_text(json.dumps({"router": r.name, "format_version": 1, "params": r.params,
                                           "candidates": [c.id for c in r.candidates], "encoder": r.encoder},
                                          default=str))
    joblib.dump(r.state(), d / LEGACY_FILE)
    return d


@pytest.mark.parametrize("name", ["ensemble", "sequential"])
def test_convert_with_trust_gives_the_same_decisions(fitted, tmp_path, name):
    r, (test, Xte) = fitted(CASE[name])
    old = _format1(r, tmp_path / "old")
    with pytest.raises(ArtifactError, match="format-1"):
        load_router(old)
    runner = CliRunner()
    res = runner.invoke(app, ["artifact", "convert", str(old), "--out", str(tmp_path / "new"), "--trust"])
    assert res.exit_code == 0, res.output
    assert (old / LEGACY_FILE).exists()  # --out: the original is left as it was
    res = runner.invoke(app, ["artifact", "convert", str(old), "--trust"])  # in place
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in old.iterdir()) == sorted([ARRAYS_FILE, META_FILE])
    for d in (old, tmp_path / "new"):
        back = load_router(d)
        for lam in (0.0, 100.0, 1e4):
            assert _same(r.decide(test.queries, Xte, lam=lam), back.decide(test.queries, Xte, lam=lam))
    res = runner.invoke(app, ["artifact", "convert", str(old), "--trust"])
    assert res.exit_code == 2 and "already a format-2 artifact" in res.output


def test_convert_names_a_pickle_of_code_that_is_gone(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / META_FILE).write_text(json.dumps({"router": "mlp", "format_version": 1, "params": {},
                                           "candidates": ["a"], "encoder": None}))
    # the pickle of an object of a class from a module that no longer exists (the old routers/_reasoning.py)
    (d / LEGACY_FILE).write_bytes(b"\x80\x04\x95+\x00\x00\x00\x00\x00\x00\x00\x8c\x1droutecraft.routers._reasoning"
                                  b"\x94\x8c\x06Layout\x94\x93\x94.")
    res = CliRunner().invoke(app, ["artifact", "convert", str(d), "--trust"])
    assert res.exit_code == 2 and "refers to code this routecraft no longer has" in res.output
    assert "train it again" in res.output and (d / LEGACY_FILE).exists()
