"""Pick the gateway's learned default router (``routers: {auto: builtin}``) by replay on held-out questions.

    python benchmarks/select_default_router.py --train data/routecraft-multitask \
        --heldout data/routecraft-multitask-gate [--routers kind,mf,sequential] [--models a,b] \
        [--encoder static] [--out runs/default-router] [--ship]

**Models**: those a plain ``routecraft serve`` serves (``--models`` to choose): the local pool's instruct models —
gemma3-270m, a base model, is served only when a config lists it, and the gateway falls back to the heuristic when a
shipped router names a model it does not serve, so a router over it could never be the default.

**Candidates**: every model × strategy collected (direct, the plain call ``default``, CoT, CoD, PAL). A strategy
not planned for a task was never collected on it (PAL on a multiple-choice question, the plain call on a question
with a fixed answer form); those cells are filled conservatively
(``RoutingData.fill_inapplicable``: score 0 at the question's dearest cost), so that every router sees every
candidate and a pick of one can only be scored as the worst call.

**Replay as the gateway serves** (``routecraft serve`` with no task named): the task of a held-out question is what
the gateway detects from its text (``query_kind``; a multiple-choice question is routed with its options), a
candidate whose strategy does not apply to that task is dropped before the router's choice is taken
(``Decision.restricted``, as the gateway does) — and so is one never collected on the question's task (PAL applies
to a multiple-choice question but was not collected there: the router's next choice is taken, which can only
flatter a router that would have sent it; the served heuristic does at the cheap trade-off). An observing router
(``cascade``, ``sequential``) runs its plan of consultations only where the gateway would (a detected numeric, math
or multiple-choice question: answers that can be compared), elsewhere its up-front decision. A pick is scored by
the collected cell of the chosen candidate on that question (greedy cells: the call the pool would make; collected
under the question's own task, while the gateway prompts for the detected one — ``detected_task`` in
selection.json says how often they differ); a plan is replayed on the logged answers. Each learned router is fit on
the training collection (features: ``--encoder``). The heuristic router is built from the same models as
``routecraft serve`` builds it (its strategies ``default``, ``cot``, ``pal``; its plain ``default`` call is scored
on the collected plain-call cell of an open question, elsewhere — not collected — on the model's ``direct`` cell),
and once more over the collected strategies; a learned router's plain call where none was collected is dropped like
any uncollected strategy (its next choice: its training saw that cell filled as the worst call, so the direct-cell
proxy could only flatter it; ``substituted`` in selection.json: the share of picks not scored as made). A learned
router without a ``default`` candidate leaves the open questions (detected ``qa``) to the served heuristic, as the
gateway does for the shipped default; one with it routes them itself. Also shown: the best single candidate
(chosen on the training questions at each trade-off) and the oracle (each held-out question's best collected cell).

**The rule** (stated in selection.json): among the learned routers whose artifact fits in the package (at most
``MAX_SHIP_BYTES``), the one with the highest mean utility (accuracy − λ·cost, averaged over the gateway's
trade-offs ``quality``, ``balanced``, ``cheap``: the serve config's default λs) by 5-fold cross-validation on the
training questions — the held-out ones are not used to choose — is selected over the heuristic when its held-out
utility is higher than both heuristics' at every trade-off; with ``--ship`` and a selection,
its artifact and ``selection.json`` are written into ``src/routecraft/configs/default_router``. Without a held-out
collection (``--heldout`` omitted), a seeded 30% of the training questions is held out instead, and the result is
a dry run: ``selected`` stays false.

Writes ``OUT/selection.json`` and ``OUT/heldout.md`` (with a per-task table at the balanced trade-off).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from routecraft.data.features import EmbeddingCache, features_for
from routecraft.data.query_text import query_texts
from routecraft.data.schema import Candidate, RoutingData, candidate_ids
from routecraft.evaluate.bench import parse_router_spec
from routecraft.pool.config import load_pool
from routecraft.routers import make_router
from routecraft.routers.base import ObservingRouter
from routecraft.routers.heuristic import query_kind
from routecraft.serve.config import ServeConfig
from routecraft.serve.gateway import default_served_models
from routecraft.strategies import COMPARABLE_KINDS, strategy_applies, task_kind

STRATEGIES = ("direct", "default", "cot", "cod", "pal")
SHIP = Path(__file__).resolve().parents[1] / "src" / "routecraft" / "configs" / "default_router"
#: the largest artifact shipped inside the package (router.json + state.safetensors)
MAX_SHIP_BYTES = 4_000_000


def load(folder: str | Path) -> RoutingData:
    from routecraft.data.collect.store import CollectionStore

    store = CollectionStore(folder)
    q = store.queries()
    o = store.rows()
    if not len(o):
        raise SystemExit(f"{folder}: no collected rows")
    return RoutingData.from_frames(q, o)


def prepared(rd: RoutingData, models: list[str], cands: list[Candidate] | None = None
             ) -> tuple[RoutingData, list[Candidate], int]:
    """The questions with every candidate's cell (inapplicable ones filled), the candidates, the cells filled."""
    rd, filled = rd.fill_inapplicable()
    have = set(rd.candidate_ids)
    if cands is None:
        cands = [Candidate(m, s) for m in models for s in STRATEGIES if Candidate(m, s).id in have]
    sub = rd.filter_candidates(cands).complete(cands)
    if not len(sub.queries):
        raise SystemExit("no question has every (model, strategy) cell collected yet")
    return sub, cands, filled


def heldout_prepared(rd: RoutingData, models: list[str], cands: list[Candidate], where: str
                     ) -> tuple[RoutingData, int]:
    """``prepared`` for the held-out collection, refusing one where a question lacks a cell of the candidates: a
    gate is replayed complete or not at all (a question silently left out would change what the gate is)."""
    sub, _, filled = prepared(rd, models, cands)
    if missing := sorted(set(rd.queries["query_id"]) - set(sub.queries["query_id"])):
        raise SystemExit(f"{where}: {len(missing)} of {len(rd.queries)} held-out questions lack a collected cell of "
                         f"the candidates (models {', '.join(models)}), e.g. {', '.join(missing[:3])}: finish "
                         "collecting it first")
    return sub, filled


def leaked(train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """The held-out questions that are also training questions — the same ``query_id`` or the same text once case
    and whitespace are normalised (published query files repeat questions across splits): a held-out gate that
    leaks training questions flatters every learned router, so the script refuses it."""
    def norm(texts) -> list[str]:
        return [" ".join(str(t).lower().split()) for t in texts]

    ids, seen = set(train["query_id"].astype(str)), set(norm(query_texts(train)))
    return [str(q) for q, t in zip(test["query_id"], norm(query_texts(test))) if str(q) in ids or t in seen]


def gateway_pick(decision, task: str, lam: float, collected: set[str] | None = None,
                 proxy_plain: bool = True) -> Candidate:
    """The gateway's choice from a router's decision: inapplicable strategies dropped, then the same rule.
    ``collected``: the candidates with a collected cell on this question (a served router may pick a strategy
    that applies but was never collected on the task, say PAL on a multiple-choice question: it takes its next
    choice instead, as if the gateway offered the collection's strategies only). ``proxy_plain``: a plain call
    (``default``) not collected on the question is kept and scored on the model's ``direct`` cell (the heuristic's
    plain call, what it serves); False: it is dropped like any other uncollected strategy (a learned router's,
    whose training saw that cell filled as the worst call: the proxy could only flatter it)."""
    pred = decision.as_prediction()
    keep = [j for j, c in enumerate(pred.candidates) if strategy_applies(c.strategy, task)
            and (collected is None or c.id in collected or (proxy_plain and scored_as(c).id in collected))]
    return decision.restricted(keep, lam).candidate if keep else decision.candidate


def scored_as(cand: Candidate) -> Candidate:
    """The candidate whose collected cell scores a pick when its own was not collected: for a plain ``default``
    call, the model's ``direct``; else itself."""
    return Candidate(cand.model, "direct", cand.budget) if cand.strategy == "default" else cand


def cell_of(idx: dict[str, int], cand: Candidate, collected: set[str] | None = None, proxy_plain: bool = True) -> int:
    """The cell a pick is scored on: its own where it was collected on the question (``collected``; all of them
    when None). A plain call (strategy ``default``: the conversation as it is) is collected on the open questions
    only (``strategies_for``); elsewhere it is scored on the model's ``direct`` cell, the nearest (a short answer,
    with the task's answer format asked for). ``proxy_plain`` False: its own cell whatever it holds — reached only
    when ``gateway_pick`` had no collected candidate left to take instead, then a filled cell (the worst call)."""
    own = collected is None or cand.id in collected or not proxy_plain
    j = idx.get(cand.id) if own else None
    if j is None:
        j = idx.get(scored_as(cand).id)
    if j is None:
        raise KeyError(f"no collected cell for the pick {cand.id}")
    return j


def summarise(s: np.ndarray, c: np.ndarray, lam: float, picked: list[str], tasks: pd.Series,
              calls: np.ndarray | None = None, substituted: np.ndarray | None = None) -> dict:
    shares = pd.Series(picked).value_counts(normalize=True).round(3)
    per_task = {}
    for t in sorted(set(tasks)):
        m = (tasks == t).to_numpy()
        top = pd.Series(np.asarray(picked, dtype=object)[m]).value_counts()
        per_task[t] = {"accuracy": float(s[m].mean()), "cost_usd": float(c[m].mean()),
                       "top_pick": str(top.index[0]), "top_share": float(top.iloc[0] / m.sum())}
    out = {"lam": lam, "accuracy": float(s.mean()), "cost_usd": float(c.mean()),
           "utility": float(s.mean() - lam * c.mean()), "shares": shares.head(5).to_dict(), "per_task": per_task}
    if calls is not None:
        out["calls"] = float(calls.mean())
    if substituted is not None:  # the share of picks the replay could not score as made (see replay)
        out["substituted"] = float(substituted.mean())
    return out


def replay(router, test: RoutingData, Xte: np.ndarray | None, cands: list[Candidate], lams: dict[str, float],
           texts: list[str], tasks_seen: list[str], per_question: dict | None = None, open_router=None,
           proxy_plain: bool = False) -> dict:
    """Each trade-off's accuracy, cost and utility of ``router`` on ``test`` as the gateway would serve it
    (``per_question``, when given, receives each trade-off's per-question utility array). ``open_router``: the
    router that takes an open question instead (detected kind ``qa``): the served heuristic, as the gateway does
    for a shipped learned default without a plain-call (``default``) candidate; one with it routes them itself.
    ``proxy_plain``: ``router`` is a heuristic whose uncollected plain call is scored on the direct cell
    (``gateway_pick``); the open router's decisions always are. Each trade-off's ``substituted``: the share of
    picks not scored as made — an uncollected choice replaced by the next one, or a plain call by its proxy."""
    truth = test.matrices(candidates=cands)
    idx = {c.id: j for j, c in enumerate(truth.candidates)}
    n = len(texts)
    o = test.outcomes
    real = o[~o["filled"].astype(bool)] if "filled" in o else o
    collected: dict[str, set[str]] = {}
    for qid, cid in zip(real["query_id"], candidate_ids(real)):
        collected.setdefault(qid, set()).add(cid)
    qids = test.queries["query_id"].tolist()
    served = {c.id for c in cands}
    if any(c.strategy == "default" and c.id in served for c in getattr(router, "candidates", None) or []):
        open_router = None  # it can make a served plain call itself: the gateway leaves open requests to it
    feat = (lambda i: None) if Xte is None else (lambda i: Xte[i])
    out = {}
    for name, lam in lams.items():
        s, c, calls, swapped = np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n, dtype=bool)
        picked = [""] * n
        upfront = list(range(n))
        if isinstance(router, ObservingRouter):
            cons = np.array([task_kind(t) in COMPARABLE_KINDS for t in tasks_seen])
            upfront = [i for i in range(n) if not cons[i]]
            if cons.any():
                rows = np.flatnonzero(cons)
                sub = test.subset(set(test.queries["query_id"].iloc[rows]))
                r = router.replay(sub, None if Xte is None else Xte[rows], lam)
                s[rows], c[rows], calls[rows] = r.score, r.cost, r.calls
                for i in rows:
                    picked[i] = f"plan ({router.name})"
        for i in upfront:
            ctx = dict(lam=lam, task=tasks_seen[i], input_chars=len(texts[i]))
            if open_router is not None and tasks_seen[i] == "qa":
                d = open_router.decide_one(texts[i], None, **ctx)
            elif isinstance(router, ObservingRouter):
                d = router.upfront_decision(texts[i], feat(i), **ctx)
            else:
                d = router.decide_one(texts[i], feat(i), **ctx)
            have = collected.get(qids[i], set())
            proxy = proxy_plain or (open_router is not None and tasks_seen[i] == "qa")
            pick = gateway_pick(d, tasks_seen[i], lam, have, proxy)
            swapped[i] = pick.id not in have or pick != gateway_pick(d, tasks_seen[i], lam)
            j = cell_of(idx, pick, have, proxy)
            s[i], c[i], picked[i] = truth.score[i, j], truth.cost[i, j], truth.candidates[j].id
        out[name] = summarise(s, c, lam, picked, test.queries["task"], calls, swapped)
        if per_question is not None:
            per_question[name] = s - lam * c
    return out


def paired_ci(a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0, strata=None) -> dict:
    """Mean of ``a − b`` (per-question utilities of two routers on the same questions) and its 95% paired
    bootstrap interval (questions resampled with replacement; with ``strata``, one label per question — the task —
    within each stratum, as the held-out questions were drawn: a fixed number per task)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if strata is None:
        idx = rng.integers(0, len(d), size=(reps, len(d)))
    else:
        strata = np.asarray(strata)
        if strata.shape != d.shape:
            raise ValueError(f"strata: {strata.shape[0]} labels for {len(d)} questions")
        groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
        idx = np.concatenate([g[rng.integers(0, len(g), size=(reps, len(g)))] for g in groups], axis=1)
    boot = d[idx].mean(axis=1)
    return {"diff": float(d.mean()), "lo": float(np.quantile(boot, 0.025)), "hi": float(np.quantile(boot, 0.975))}


def build(spec: str):
    """A router from a spec as the bench takes it (``knn:k=10``)."""
    _, name, params = parse_router_spec(spec)
    return make_router(name, **params)


def cv_utility(spec: str, train: RoutingData, feats, cands: list[Candidate], lams: dict[str, float],
               folds: int = 5, seed: int = 0, open_router=None) -> float:
    """Mean utility over the trade-offs of router ``spec`` by ``folds``-fold cross-validation on the training
    questions, replayed as on the held-out ones: how the router to ship is chosen without looking at them."""
    ids = train.queries["query_id"].to_numpy()
    fold = np.random.default_rng(seed).permutation(len(ids)) % folds
    utils = []
    for f in range(folds):
        tr, te = train.subset(ids[fold != f]), train.subset(ids[fold == f])
        if not len(te.queries):
            continue
        r = build(spec)
        r.fit(tr, feats(tr.queries))
        texts = query_texts(te.queries)
        res = replay(r, te, feats(te.queries), cands, lams, texts, [query_kind(t) for t in texts],
                     open_router=open_router)
        utils.append(np.mean([v["utility"] for v in res.values()]) * len(te.queries))
    return float(np.sum(utils) / len(ids))


def reference(train: RoutingData, test: RoutingData, cands: list[Candidate], lams: dict[str, float]) -> dict:
    """The best single candidate (picked on the training questions at each λ) and the per-question oracle."""
    tr, te = train.matrices(candidates=cands), test.matrices(candidates=cands)
    tasks = test.queries["task"]
    best, oracle = {}, {}
    for name, lam in lams.items():
        j = int(np.argmax(tr.score.mean(0) - lam * tr.cost.mean(0)))
        best[name] = summarise(te.score[:, j], te.cost[:, j], lam, [cands[j].id] * len(tasks), tasks)
        k = np.argmax(te.score - lam * te.cost, axis=1)
        rows = np.arange(len(k))
        oracle[name] = summarise(te.score[rows, k], te.cost[rows, k], lam, [cands[x].id for x in k], tasks)
    return {"best single": best, "oracle": oracle}


def routed_models(arg: str | None, pool) -> list[str]:
    """``--models`` (comma-separated pool names), else the models a plain ``routecraft serve`` serves from ``pool``."""
    if not arg:
        return [m.name for m in default_served_models(pool)]
    names = [m.strip() for m in arg.split(",") if m.strip()]
    if unknown := [n for n in names if n not in pool]:
        raise SystemExit(f"--models: {', '.join(unknown)} not in pool {pool.name!r} ({', '.join(pool.names)})")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", default=None)
    ap.add_argument("--routers", default="kind,mlp,mf,linear,knn,knn:k=10,knn:k=5,ensemble,rtr,cascade,sequential",
                    help="router specs as the bench takes them (knn:k=10); the one to ship is chosen by train CV")
    ap.add_argument("--encoder", default="static")
    ap.add_argument("--models", default=None, help="pool models to route between (default: those a plain "
                    "`routecraft serve` serves, the local pool's instruct models: the shipped router must be servable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/default-router"))
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args(argv)
    pool = load_pool("local")
    models = routed_models(args.models, pool)
    pool = pool.subset(models)
    train_all, cands, filled = prepared(load(args.train), models)
    dry = args.heldout is None
    if dry:
        ids = train_all.queries["query_id"].to_numpy()
        rng = np.random.default_rng(args.seed)
        test_ids = set(rng.choice(ids, size=max(1, int(0.3 * len(ids))), replace=False))
        train = train_all.subset([q for q in ids if q not in test_ids])
        test = train_all.subset([q for q in ids if q in test_ids])
        filled_test = 0
    else:
        train = train_all
        test, filled_test = heldout_prepared(load(args.heldout), models, cands, args.heldout)
        if bad := leaked(train.queries, test.queries):
            raise SystemExit(f"{args.heldout}: {len(bad)} held-out question(s) are also in {args.train} (same id or "
                             f"text), e.g. {', '.join(bad[:3])}: a gate must not contain training questions")
    lams = {k: t.lam for k, t in ServeConfig().tradeoffs.items()}
    enc = EmbeddingCache(args.encoder)
    both = pd.concat([train.queries, test.queries], ignore_index=True)
    X = enc.embed(query_texts(both))
    feats = features_for(RoutingData.from_frames(both, pd.concat([train.outcomes, test.outcomes])), X)
    Xte = feats(test.queries)
    texts = query_texts(test.queries)
    seen = [query_kind(t) for t in texts]  # the task the gateway detects (no task named)
    detected = pd.crosstab(test.queries["task"], pd.Series(seen, name="detected")).to_dict(orient="index")

    results: dict[str, dict] = {}
    served = list(ServeConfig().heuristic.strategies)  # routecraft/heuristic as `routecraft serve` builds it
    fitted, sizes, cv, per_q = {}, {}, {}, {}
    tr_texts = query_texts(train.queries)
    tr_seen = [query_kind(t) for t in tr_texts]
    heuristic_served = make_router("heuristic", strategies=served).fit_pool(pool.models)
    for label, strategies in (("heuristic", served), ("heuristic (collected strategies)", list(STRATEGIES))):
        heur = make_router("heuristic", strategies=strategies).fit_pool(pool.models)
        per_q[label] = {}
        results[label] = replay(heur, test, None, cands, lams, texts, seen, per_q[label], proxy_plain=True)
        on_train = replay(heur, train, None, cands, lams, tr_texts, tr_seen, proxy_plain=True)  # nothing learnt
        cv[label] = float(np.mean([v["utility"] for v in on_train.values()]))
    heuristics = [k for k in results]
    for name in [r.strip() for r in args.routers.split(",") if r.strip()]:
        r = build(name)
        r.encoder = enc.encoder if r.uses_features else None  # a router without features names no encoder
        r.fit(train, feats(train.queries))
        fitted[name] = r
        art = r.save(args.out / "artifacts" / re.sub(r"[^A-Za-z0-9_.-]+", "_", name))
        sizes[name] = sum(f.stat().st_size for f in Path(art).iterdir() if f.is_file())
        per_q[name] = {}
        # open questions (detected qa) go to the served heuristic's plain call, as routecraft/auto does
        results[name] = replay(r, test, Xte, cands, lams, texts, seen, per_q[name], open_router=heuristic_served)
        cv[name] = cv_utility(name, train, feats, cands, lams, seed=args.seed, open_router=heuristic_served)
        held = ", ".join(f"{t} {v['accuracy']:.3f}/${v['cost_usd']:.2g}" for t, v in results[name].items())
        print(f"{name}: cv utility {cv[name]:.3f}; held-out {held}", file=sys.stderr)
    refs = reference(train, test, cands, lams)
    mean_u = {k: float(np.mean([v["utility"] for v in res.values()])) for k, res in results.items()}
    shippable = [k for k in results if k not in heuristics and sizes[k] <= MAX_SHIP_BYTES]
    if not shippable:
        raise SystemExit(f"no learned router's artifact is within {MAX_SHIP_BYTES:,} bytes: {sizes}")
    best = max(shippable, key=lambda k: cv[k])  # chosen on the training questions, then tested held out
    beats = all(results[best][t]["utility"] > results[h][t]["utility"] for t in lams for h in heuristics)
    # how sure: the chosen router's per-question utility minus each heuristic's, paired bootstrap 95% interval
    tasks = test.queries["task"].astype(str).to_numpy()  # per_q follows test.queries: resample within each task
    margins = {h: {t: paired_ci(per_q[best][t], per_q[h][t], strata=tasks) for t in lams} for h in heuristics}
    rule = (f"among the learned routers whose artifact is at most {MAX_SHIP_BYTES / 1e6:g} MB, the one with the "
            "highest mean utility by 5-fold cross-validation on the training questions (accuracy − λ·cost over "
            "the trade-offs "
            f"{', '.join(f'{k} λ={v:g}' for k, v in lams.items())}) is selected when its held-out utility beats "
            f"the heuristic's at every trade-off (the heuristic as served, strategies {', '.join(served)}, its plain "
            "'default' call scored on the collected plain-call cell of an open question, elsewhere on the direct "
            "cell; and the heuristic over the collected strategies); replayed "
            "as the gateway serves (task detected from the text, inapplicable strategies dropped, consultations "
            "only where answers compare)")
    selection = {"selected": bool(beats and not dry), "router": best, "rule": rule, "dry_run": dry,
                 "models": models, "candidates": [c.id for c in cands], "n_train": int(len(train.queries)),
                 "n_heldout": int(len(test.queries)), "filled_inapplicable": {"train": filled, "heldout": filled_test},
                 "encoder": args.encoder, "mean_utility": mean_u, "cv_utility": cv, "artifact_bytes": sizes,
                 "heldout": results, "margin_vs_heuristics": margins, "reference": refs,
                 "detected_task": detected, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "selection.json").write_text(json.dumps(selection, indent=1))
    where = "dry run: 30% of the training collection" if dry else args.heldout
    lines = [f"{len(test.queries)} held-out questions ({where}), {len(train.queries)} training questions; "
             f"{len(cands)} candidates (model × {'|'.join(STRATEGIES)})", "",
             "| router | " + " | ".join(f"{t} (λ={lams[t]:g}) acc / $ / utility" for t in lams)
             + " | train utility (CV) | artifact |",
             "|---|" + "---|" * len(lams) + "---|---|"]
    for k, res in {**results, **refs}.items():
        size = f"{sizes[k] / 1e3:,.0f} kB" if k in sizes else "—"
        cvu = f"{cv[k]:.3f}" if k in cv else "—"
        lines.append(f"| {k} | " + " | ".join(f"{res[t]['accuracy']:.3f} / {res[t]['cost_usd']:.2g} / "
                                               f"{res[t]['utility']:.3f}" for t in lams) + f" | {cvu} | {size} |")
    lines += ["", f"chosen by train CV: {best}; beats both heuristics held out at every trade-off: {beats}; selected: "
              f"{selection['selected']}", "",
              f"Held-out utility of {best} minus each heuristic's, with a 95% paired bootstrap interval over the "
              "questions:", "", "| vs | " + " | ".join(lams) + " |", "|---|" + "---|" * len(lams)]
    for h in heuristics:
        lines.append(f"| {h} | " + " | ".join(f"{m['diff']:+.3f} [{m['lo']:+.3f}, {m['hi']:+.3f}]"
                                              for m in margins[h].values()) + " |")
    lines += ["", "Per task at `balanced` (accuracy, the most frequent pick):", "",
              "| task | " + " | ".join(["heuristic", best, "best single", "oracle"]) + " |", "|---|---|---|---|---|"]
    cols = [results["heuristic"], results[best], refs["best single"], refs["oracle"]]
    for t in sorted(set(test.queries["task"])):
        cells = []
        for res in cols:
            pt = res["balanced"]["per_task"][t]
            pick = pt["top_pick"].removesuffix("|default").replace("qwen2.5-coder-", "qwen-")
            cells.append(f"{pt['accuracy']:.2f} {pick} ({pt['top_share']:.0%})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    (args.out / "heldout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.ship and selection["selected"]:
        SHIP.mkdir(parents=True, exist_ok=True)
        tmp = args.out / "artifacts" / re.sub(r"[^A-Za-z0-9_.-]+", "_", best)
        for f in ("router.json", "state.safetensors"):
            shutil.copy2(tmp / f, SHIP / f)
        (SHIP / "selection.json").write_text(json.dumps(selection, indent=1))
        print(f"shipped {best} into {SHIP}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
