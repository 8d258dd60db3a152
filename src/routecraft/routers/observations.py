"""What a router can observe after a call, as arrays: the answers-and-signals table of sequential routing.

Observe-then-decide routers (``cascade``, ``sequential``) consult candidates, look at the answers, then accept one or
consult more. Offline, every candidate's answer to every query is in the logs, so any such policy can be replayed:
``Observations.from_data`` turns the outcomes table into (n_queries × n_candidates) arrays —

* ``keys``: the extracted answer of each cell as a small integer per query (equal answers, by the task's vote key,
  share a code; ``-1`` = no answer), so agreement is an integer comparison;
* ``score``, ``cost``, ``latency`` (NaN where unknown), ``out_tokens`` (NaN where unknown), ``truncated`` (the
  output hit its length cap), ``answered`` (an answer was extracted);
* ``logprob_mean``, ``logprob_min``: the mean and the minimum of the output's token log-probabilities, where the
  backend returned them (columns of the same names in the outcomes table; None when the table has neither).

``replay_plan`` replays a cascade plan over them (vectorised), ``votes`` counts agreement. A router asked to fit on
data without extracted answers fails with ``MissingAnswers`` naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from routecraft.data.schema import Candidate, RoutingData, candidate_ids
from routecraft.strategies.answers import vote_key


class MissingAnswers(ValueError):
    """The outcomes table has no extracted answers (``prediction``) for a router that observes answers."""


@dataclass
class Observations:
    query_ids: list[str]
    candidates: list[Candidate]
    keys: np.ndarray        # (n, C) int, -1 = no answer
    score: np.ndarray       # (n, C)
    cost: np.ndarray        # (n, C) USD
    latency: np.ndarray     # (n, C) seconds, NaN where unknown
    out_tokens: np.ndarray  # (n, C), NaN where unknown
    truncated: np.ndarray   # (n, C) bool
    answer_text: list[list[str | None]] = field(default_factory=list, repr=False)
    logprob_mean: np.ndarray | None = None  # (n, C), NaN where unknown; None: no log-probabilities at all
    logprob_min: np.ndarray | None = None

    @property
    def has_logprobs(self) -> bool:
        return self.logprob_mean is not None and bool(np.isfinite(self.logprob_mean).any())

    def _lp(self, pick) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (None if self.logprob_mean is None else pick(self.logprob_mean),
                None if self.logprob_min is None else pick(self.logprob_min))

    @property
    def answered(self) -> np.ndarray:
        return self.keys >= 0

    @property
    def n(self) -> int:
        return len(self.query_ids)

    def columns(self, cols: list[int]) -> "Observations":
        """The same queries, only the candidates at ``cols`` (in that order)."""
        lm, ln = self._lp(lambda a: a[:, cols])
        return Observations(self.query_ids, [self.candidates[j] for j in cols], self.keys[:, cols],
                            self.score[:, cols], self.cost[:, cols], self.latency[:, cols], self.out_tokens[:, cols],
                            self.truncated[:, cols], logprob_mean=lm, logprob_min=ln)

    def rows(self, rows: np.ndarray) -> "Observations":
        """Only the queries at ``rows``, every candidate."""
        lm, ln = self._lp(lambda a: a[rows])
        return Observations([self.query_ids[i] for i in rows], self.candidates, self.keys[rows], self.score[rows],
                            self.cost[rows], self.latency[rows], self.out_tokens[rows], self.truncated[rows],
                            logprob_mean=lm, logprob_min=ln)

    @classmethod
    def from_data(cls, data: RoutingData, candidates: list[Candidate] | None = None,
                  router: str = "this router") -> "Observations":
        o = data.outcomes
        if "prediction" not in o.columns:
            raise MissingAnswers(
                f"{router} observes the candidates' answers, but the outcomes table has no 'prediction' column "
                f"(the extracted answer of each call). Import the data with answers (e.g. `routecraft data import "
                f"--prediction-col COL`, or `--response-col COL` with a task whose extractor derives them), or use "
                f"a dataset that has them (zeroeval-gsm8k, routellm-gsm8k, routecraft-gsm8k)")
        cands = candidates or data.candidates
        qids = data.queries["query_id"].tolist()
        cols = [c.id for c in cands]
        o = o.assign(_cid=candidate_ids(o))
        o = o[o["_cid"].isin(cols) & o["query_id"].isin(qids)]
        if o["prediction"].notna().sum() == 0:
            raise MissingAnswers(f"{router} observes the candidates' answers, but every 'prediction' in the "
                                 f"outcomes table is empty")
        tasks = dict(zip(data.queries["query_id"], data.queries["task"]))

        def wide(col: str, dtype="float64") -> np.ndarray:
            if col not in o.columns:
                return np.full((len(qids), len(cols)), np.nan)
            w = o.pivot(index="query_id", columns="_cid", values=col).reindex(index=qids, columns=cols)
            return w.to_numpy(dtype=dtype, na_value=np.nan)

        score, cost = wide("score"), wide("cost_usd")
        if np.isnan(score).any() or np.isnan(cost).any():
            i, j = np.argwhere(np.isnan(score) | np.isnan(cost))[0]
            raise ValueError(f"no outcome for query {qids[i]!r} × candidate {cols[j]!r} (use RoutingData.complete())")
        pred = o.pivot(index="query_id", columns="_cid", values="prediction").reindex(index=qids, columns=cols)
        keys, texts = encode_answers(pred.to_numpy(dtype=object), [tasks.get(q, "qa") for q in qids])
        if "finish_reason" in o.columns:
            fin = o.pivot(index="query_id", columns="_cid", values="finish_reason").reindex(index=qids, columns=cols)
            truncated = (fin.to_numpy(dtype=object) == "length")
        else:
            truncated = np.zeros_like(keys, dtype=bool)
        has_lp = "logprob_mean" in o.columns or "logprob_min" in o.columns
        return cls(qids, list(cands), keys, score, cost, wide("latency_s"), wide("output_tokens"),
                   truncated.astype(bool), texts, logprob_mean=wide("logprob_mean") if has_lp else None,
                   logprob_min=wide("logprob_min") if has_lp else None)


def encode_answers(pred: np.ndarray, tasks: list[str]) -> tuple[np.ndarray, list[list[str | None]]]:
    """Per query, equal answers (by the task's vote key) get the same code 0, 1, ...; no answer is -1."""
    n, c = pred.shape
    keys = np.full((n, c), -1, dtype=np.int64)
    texts: list[list[str | None]] = []
    for i in range(n):
        seen: dict[str, int] = {}
        row: list[str | None] = []
        for j in range(c):
            v = pred[i, j]
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or str(v).strip() == "":
                row.append(None)
                continue
            s = str(v)
            row.append(s)
            try:
                k = vote_key(s, tasks[i])
            except ValueError:  # an unknown task: plain text
                k = vote_key(s, "qa")
            if k is None:
                continue
            keys[i, j] = seen.setdefault(k, len(seen))
        texts.append(row)
    return keys, texts


def votes(keys: np.ndarray, consulted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query: (top answer code, its count, number of distinct answers) among the consulted cells.
    Ties go to the answer of the highest-index consulted cell among the tied (candidates are ordered by cost, so:
    the dearest model's answer). Top code -1 and count 0 when nothing consulted answered."""
    n, c = keys.shape
    k = np.where(consulted, keys, -1)
    onehot = (k[:, :, None] == np.arange(c)[None, None, :])  # (n, C cells, C codes)
    counts = onehot.sum(axis=1)                               # (n, codes)
    # tie-break: the latest cell holding each code
    last = np.where(onehot, np.arange(c)[None, :, None], -1).max(axis=1)  # (n, codes)
    rank = counts * (c + 1) + (last + 1)
    top = np.argmax(rank, axis=1)
    top_count = counts[np.arange(n), top]
    top = np.where(top_count > 0, top, -1)
    distinct = (counts > 0).sum(axis=1)
    return top, top_count, distinct


def score_of(obs: Observations, code: np.ndarray, consulted: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The score of returning answer ``code`` (per query): the best score among consulted cells with that answer
    (cells with equal answers score alike on exact-match tasks); where ``code`` is -1, the score of ``fallback``'s
    cell (the answer of that candidate, extracted or not)."""
    n = obs.n
    match = consulted & (obs.keys == code[:, None]) & (code[:, None] >= 0)
    s = np.where(match, obs.score, -np.inf).max(axis=1)
    fb = obs.score[np.arange(n), fallback]
    return np.where(np.isfinite(s), s, fb)


@dataclass(frozen=True)
class Stage:
    """Consult ``members`` (concurrently); accept the majority answer (over everything consulted so far) when it has
    at least ``min_agree`` votes, else go on to the next stage."""

    members: tuple[int, ...]
    min_agree: int


@dataclass(frozen=True)
class CascadePlan:
    """Stages of consultations, then ``final``: one candidate whose answer is returned as it is."""

    stages: tuple[Stage, ...]
    final: int

    def describe(self, cands: list[Candidate]) -> str:
        parts = [f"{'+'.join(cands[m].id for m in st.members)} (accept ≥{st.min_agree} agree)" for st in self.stages]
        return " → ".join(parts + [cands[self.final].id])

    def to_dict(self, cands: list[Candidate]) -> dict:
        return {"stages": [{"consult": [cands[m].id for m in st.members], "min_agree": st.min_agree}
                           for st in self.stages], "final": cands[self.final].id}


@dataclass
class Replay:
    """Per query: the returned answer's score, the cost of every call made, calls made, whether the last stage was
    reached, and the latency (sum over stages of each stage's slowest call; NaN where unknown)."""

    score: np.ndarray
    cost: np.ndarray
    calls: np.ndarray
    escalated: np.ndarray
    latency: np.ndarray

    def summary(self) -> dict:
        return {"score": float(self.score.mean()), "cost": float(self.cost.mean()),
                "consultations": float(self.calls.mean()), "escalation_rate": float(self.escalated.mean()),
                "latency_s": float(np.nanmean(self.latency)) if np.isfinite(self.latency).any() else float("nan")}


def replay_plan(plan: CascadePlan, obs: Observations, rows: np.ndarray | None = None) -> Replay:
    """Replay ``plan`` on the logged answers (``rows``: a subset of queries)."""
    keys = obs.keys if rows is None else obs.keys[rows]
    sub = obs if rows is None else obs.rows(rows)
    n, c = keys.shape
    consulted = np.zeros((n, c), dtype=bool)
    open_ = np.ones(n, dtype=bool)
    score = np.zeros(n)
    cost = np.zeros(n)
    calls = np.zeros(n)
    latency = np.zeros(n)
    for st in plan.stages:
        m = list(st.members)
        new = np.zeros(c, dtype=bool)
        new[m] = True
        add = new[None, :] & ~consulted & open_[:, None]
        cost += np.where(add, sub.cost, 0).sum(1)
        calls += add.sum(1)
        latency += np.where(add, sub.latency, 0).max(1, initial=0) if add.any() else 0
        consulted |= add
        top, cnt, _ = votes(keys, consulted)
        accept = open_ & (cnt >= st.min_agree) & (top >= 0)
        if accept.any():
            s = score_of(sub, top, consulted, np.full(n, plan.final))
            score[accept] = s[accept]
        open_ &= ~accept
    f = plan.final
    fresh = open_ & ~consulted[:, f]
    cost += np.where(fresh, sub.cost[:, f], 0)
    calls += fresh
    latency += np.where(fresh, sub.latency[:, f], 0)
    score[open_] = sub.score[open_, f]
    return Replay(score, cost, calls, open_ & bool(plan.stages), latency)

