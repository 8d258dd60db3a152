"""The bench report as one self-contained HTML file (``routecraft bench --html`` writes ``report.html`` next to
``summary.json``): the metrics table and the accuracy–cost plot drawn as inline SVG — each router's mean curve over
the seeds, every single candidate as a point (the best one marked), the oracle — with a small inline script of ours
for the hover text (λ, cost, accuracy and the routed shares of a router's point; a candidate's numbers) and for
hiding a series from its legend entry. No CDN, no fonts, no request of any kind: the file opens offline.

``render_html(summary, table_head, table_rows, title)`` takes the ``summary.json`` dict and the table already
formatted (``routecraft.evaluate.bench.write_html_report`` passes the Markdown table's cells), so this module needs
nothing from the bench.

Series in the SVG (``<g class="series" data-kind=… data-name=…>``, one ``.pt`` element per point): ``router`` (one
per router but the oracle; points are the distinct (cost, score) points of its mean curve, consecutive repeats of
one point merged with their λ range), ``singles`` (one point per candidate), ``best`` (the best single candidate)
and ``oracle``. The legend (``#legend li``) has one entry per series.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["render_html", "mean_curves", "PALETTE"]

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
W, H = 920, 560
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 56
MAX_SHARES = 8


def e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def mean_curves(summary: dict) -> dict[str, dict]:
    """Per router, its curve averaged point-wise over seeds at the same λ index (as ``bench.mean_curve``), with the
    λ of each seed, the mean routed share per candidate (table routers) and the observing routers' consultations
    and escalation rate: ``{router: {"points": [{"cost", "score", "lambdas", "shares", "extra"}, …]}}``."""
    out = {}
    for label in summary.get("routers", []):
        recs = [r for r in summary.get("per_seed", []) if r.get("router") == label]
        if not recs:
            continue
        n = min(len(r["curve"]["cost"]) for r in recs)
        pts = []
        for i in range(n):
            shares: dict[str, float] = {}
            with_shares = [r for r in recs if r.get("shares") and len(r["shares"]) > i]
            for r in with_shares:
                for j, sh in r["shares"][i]:
                    cid = r["candidates"][j]
                    shares[cid] = shares.get(cid, 0.0) + float(sh) / len(with_shares)
            extra = {}
            for k in ("consultations", "escalation_rate"):
                vals = [_f(r["curve"][k][i]) for r in recs if k in r["curve"] and len(r["curve"][k]) > i]
                vals = [v for v in vals if math.isfinite(v)]
                if vals:
                    extra[k] = float(np.mean(vals))
            pts.append({"cost": float(np.mean([_f(r["curve"]["cost"][i]) for r in recs])),
                        "score": float(np.mean([_f(r["curve"]["score"][i]) for r in recs])),
                        "lambdas": [_f(r["curve"]["lambda"][i]) for r in recs if "lambda" in r["curve"]],
                        "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1])) if with_shares else None,
                        "extra": extra})
        out[label] = {"points": pts}
    return out


def merged_points(points: list[dict]) -> list[dict]:
    """Consecutive points of a curve at the same (cost, score) merged (a λ sweep repeats its operating points),
    keeping the first point's shares and every λ; non-finite points dropped."""
    out: list[dict] = []
    for p in points:
        if not (math.isfinite(p["cost"]) and math.isfinite(p["score"])):
            continue
        if out and out[-1]["cost"] == p["cost"] and out[-1]["score"] == p["score"]:
            out[-1]["lambdas_all"] += p["lambdas"]
            continue
        out.append({**p, "lambdas_all": list(p["lambdas"])})
    return out


class _Axes:
    """Data → SVG coordinates: log10 cost where the costs span more than a decade (costs of 0 drawn at the axis'
    lower end), else linear; linear accuracy."""

    def __init__(self, costs: list[float], scores: list[float]) -> None:
        pos = [c for c in costs if c > 0]
        self.log = bool(pos) and max(pos) / min(pos) > 10
        if self.log:
            lo, hi = math.log10(min(pos)), math.log10(max(pos))
            pad = max(0.05 * (hi - lo), 0.05)
            self.x0, self.x1 = lo - pad, hi + pad
        else:
            lo, hi = (min(costs), max(costs)) if costs else (0.0, 1.0)
            pad = (hi - lo) * 0.05 or max(abs(hi) * 0.05, 1e-9)
            self.x0, self.x1 = lo - pad, hi + pad
        lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
        pad = (hi - lo) * 0.06 or 0.05
        self.y0, self.y1 = lo - pad, hi + pad
        self.zero_costs = any(c <= 0 for c in costs) and self.log

    def x(self, c: float) -> float:
        v = (math.log10(c) if c > 0 else self.x0) if self.log else c
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def y(self, s: float) -> float:
        return H - BOTTOM - (s - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def xticks(self) -> list[tuple[float, str]]:
        if self.log:
            ticks = []
            for d in range(math.floor(self.x0), math.ceil(self.x1) + 1):
                for m in ((1, 2, 5) if self.x1 - self.x0 < 4 else (1,)):
                    v = m * 10.0 ** d
                    if self.x0 <= math.log10(v) <= self.x1:
                        ticks.append((v, f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")))
            return ticks
        return [(v, f"{v:.3g}") for v in _nice(self.x0, self.x1)]

    def yticks(self) -> list[tuple[float, str]]:
        return [(v, f"{v:.2f}") for v in _nice(self.y0, self.y1)]


def _nice(lo: float, hi: float, n: int = 6) -> list[float]:
    span = hi - lo
    if not span > 0:
        return [lo]
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [round(start + k * step, 12) for k in range(int((hi - start) / step) + 1)]


def _lam_text(lams: list[float]) -> str:
    fin = sorted({x for x in lams if math.isfinite(x)})
    if not fin:
        return "—"
    if len(fin) == 1 or fin[-1] - fin[0] <= 1e-9 * max(1.0, abs(fin[-1])):
        return f"{fin[0]:.3g}"
    return f"{fin[0]:.3g} … {fin[-1]:.3g}"


def _star(cx: float, cy: float, r: float) -> str:
    pts = []
    for k in range(10):
        a = math.pi / 2 + k * math.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        pts.append(f"{cx + rr * math.cos(a):.1f},{cy - rr * math.sin(a):.1f}")
    return " ".join(pts)


def render_svg(summary: dict) -> tuple[str, str]:
    """The plot's ``<svg>`` and its legend (``<ul id="legend">``)."""
    curves = mean_curves(summary)
    routers = {k: merged_points(v["points"]) for k, v in curves.items() if k != "oracle"}
    oracle = merged_points(curves["oracle"]["points"]) if "oracle" in curves else []
    singles = [s for s in summary.get("singles", []) if math.isfinite(_f(s.get("cost"))) and
               math.isfinite(_f(s.get("score")))]
    best_id = summary.get("reference", {}).get("best")
    costs = [p["cost"] for pts in list(routers.values()) + [oracle] for p in pts] + [_f(s["cost"]) for s in singles]
    scores = [p["score"] for pts in list(routers.values()) + [oracle] for p in pts] + [_f(s["score"]) for s in singles]
    ax = _Axes(costs, scores)
    g: list[str] = []
    for v, t in ax.xticks():
        x = ax.x(v)
        g.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{H - BOTTOM}"/>'
                 f'<text class="tick" x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{e(t)}</text>')
    for v, t in ax.yticks():
        y = ax.y(v)
        g.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                 f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{e(t)}</text>')
    xlabel = "mean cost per query (USD" + (", log scale" if ax.log else "") + (
        "; a cost of 0 is drawn at the left edge" if ax.zero_costs else "") + ")"
    g.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}"/>'
             f'<text class="label" x="{(LEFT + W - RIGHT) / 2:.0f}" y="{H - 14}" text-anchor="middle">'
             f'{e(xlabel)}</text><text class="label" transform="translate(16 {(TOP + H - BOTTOM) / 2:.0f}) '
             f'rotate(-90)" text-anchor="middle">accuracy (mean score)</text>')
    legend: list[str] = []
    best = next((s for s in singles if s["candidate"] == best_id), None)
    if best is not None:
        y = ax.y(_f(best["score"]))
        g.append(f'<line class="best-line" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
    # singles under the curves
    pts = []
    for s in singles:
        c, sc = _f(s["cost"]), _f(s["score"])
        std = _f(s.get("score_std"))
        tip = {"title": s["candidate"], "cost": c, "score": sc, **({"score_std": std} if math.isfinite(std) else {})}
        pts.append(f'<circle class="pt single" cx="{ax.x(c):.1f}" cy="{ax.y(sc):.1f}" r="4" '
                   f'data-name="{e(s["candidate"])}" data-tip="{e(json.dumps(tip))}"/>')
    g.append(f'<g class="series" data-kind="singles" data-name="single candidates" data-points="{len(singles)}">'
             + "".join(pts) + "</g>")
    legend.append(f'<li data-kind="singles" data-name="single candidates"><span class="sw single"></span>single '
                  f'candidates ({len(singles)})</li>')
    for k, (name, rp) in enumerate(routers.items()):
        color = PALETTE[k % len(PALETTE)]
        d = " ".join(f"{'M' if i == 0 else 'L'}{ax.x(p['cost']):.1f},{ax.y(p['score']):.1f}" for i, p in
                     enumerate(rp))
        circles = []
        for p in rp:
            tip: dict[str, Any] = {"title": name, "lambda": _lam_text(p["lambdas_all"]), "cost": p["cost"],
                                   "score": p["score"]}
            if p["shares"]:
                items = list(p["shares"].items())
                tip["shares"] = [[c, round(v, 4)] for c, v in items[:MAX_SHARES]]
                if len(items) > MAX_SHARES:
                    tip["more"] = len(items) - MAX_SHARES
            tip.update({k2: round(v, 4) for k2, v in p["extra"].items()})
            big = len(rp) <= 2  # a router that always picks one candidate: a point, not a curve — make it show
            circles.append(f'<circle class="pt{" lone" if big else ""}" cx="{ax.x(p["cost"]):.1f}" '
                           f'cy="{ax.y(p["score"]):.1f}" r="{6 if big else 3.5}" fill="{color}" '
                           f'data-tip="{e(json.dumps(tip))}"/>')
        g.append(f'<g class="series" data-kind="router" data-name="{e(name)}" data-points="{len(rp)}">'
                 f'<path class="curve" d="{d}" stroke="{color}"/>{"".join(circles)}</g>')
        legend.append(f'<li data-kind="router" data-name="{e(name)}"><span class="sw" style="background:{color}">'
                      f'</span>{e(name)}</li>')
    if best is not None:
        bx, by = ax.x(_f(best["cost"])), ax.y(_f(best["score"]))
        tip = {"title": f"best single: {best['candidate']}", "cost": _f(best["cost"]), "score": _f(best["score"])}
        g.append(f'<g class="series" data-kind="best" data-name="{e(best["candidate"])}" data-points="1">'
                 f'<rect class="pt best" x="{bx - 6:.1f}" y="{by - 6:.1f}" width="12" height="12" '
                 f'data-tip="{e(json.dumps(tip))}"/></g>')
        legend.append(f'<li data-kind="best" data-name="{e(best["candidate"])}"><span class="sw best"></span>best '
                      f'single: {e(best["candidate"])}</li>')
    if oracle:
        top = max(oracle, key=lambda p: (p["score"], -p["cost"]))
        d = " ".join(f"{'M' if i == 0 else 'L'}{ax.x(p['cost']):.1f},{ax.y(p['score']):.1f}"
                     for i, p in enumerate(oracle))
        tips = []
        for p in oracle:
            tip = {"title": "oracle", "lambda": _lam_text(p["lambdas_all"]), "cost": p["cost"], "score": p["score"]}
            if p["shares"]:
                tip["shares"] = [[c, round(v, 4)] for c, v in list(p["shares"].items())[:MAX_SHARES]]
            tips.append(f'<circle class="pt oracle-pt" cx="{ax.x(p["cost"]):.1f}" cy="{ax.y(p["score"]):.1f}" '
                        f'r="3" data-tip="{e(json.dumps(tip))}"/>')
        g.append(f'<g class="series" data-kind="oracle" data-name="oracle" data-points="{len(oracle)}">'
                 f'<path class="curve oracle" d="{d}"/>{"".join(tips)}<polygon class="star" '
                 f'points="{_star(ax.x(top["cost"]), ax.y(top["score"]), 11)}"/></g>')
        legend.append(f'<li data-kind="oracle" data-name="oracle"><span class="sw oracle"></span>oracle '
                      f'({top["score"]:.3f})</li>')
    svg = (f'<svg id="tradeoff" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="accuracy '
           f'against mean cost per query" xmlns="http://www.w3.org/2000/svg">{"".join(g)}</svg>')
    return svg, '<ul id="legend">' + "".join(legend) + "</ul>"


_CSS = """
body{margin:0;padding:18px 24px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1d232b;background:#fff}
h1{font-size:19px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 6px}.meta{color:#5d6673;font-size:12px}
.plot{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start;position:relative}
svg{background:#fff;max-width:100%;height:auto}
svg .grid{stroke:#e6e9ee;stroke-width:1}svg .frame{fill:none;stroke:#9aa3ad}
svg .tick{font-size:11px;fill:#5d6673}svg .label{font-size:12px;fill:#1d232b}
svg .curve{fill:none;stroke-width:1.8;opacity:.9}svg .curve.oracle{stroke:#d4a400;stroke-dasharray:5 4}
svg .pt{cursor:pointer}svg .single{fill:#a9afb6;stroke:#555b61;stroke-width:.6}
svg .best{fill:none;stroke:#000;stroke-width:1.5}svg .best-line{stroke:#8a9199;stroke-dasharray:2 3}
svg .oracle-pt{fill:#d4a400}svg .star{fill:gold;stroke:#000;stroke-width:.8}
svg .pt.lone{stroke:#fff;stroke-width:1.5}svg .pt:hover{stroke:#000;stroke-width:2}svg g.hidden{display:none}
#legend{list-style:none;margin:0;padding:8px 10px;border:1px solid #dde2e8;border-radius:6px;font-size:13px}
#legend li{cursor:pointer;padding:2px 0;user-select:none}#legend li.off{opacity:.35}
.sw{display:inline-block;width:14px;height:4px;margin-right:7px;vertical-align:middle}
.sw.single{width:9px;height:9px;border-radius:50%;background:#a9afb6;border:1px solid #555b61}
.sw.best{width:9px;height:9px;border:1.5px solid #000}.sw.oracle{background:gold;height:9px;width:9px;
border:1px solid #000}
#tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #9aa3ad;border-radius:5px;
padding:6px 9px;font-size:12px;box-shadow:0 2px 8px rgba(0,0,0,.15);max-width:360px;z-index:3}
#tip b{display:block;margin-bottom:2px}#tip table{border-collapse:collapse}#tip td{padding:0 6px 0 0}
table.metrics{border-collapse:collapse;font-size:13px}
table.metrics th,table.metrics td{border-bottom:1px solid #dde2e8;padding:4px 8px;text-align:right;white-space:nowrap}
table.metrics th:first-child,table.metrics td:first-child{text-align:left}
table.metrics th{color:#5d6673;font-size:12px;background:#fafbfc}
"""

_JS = """
(function () {
  "use strict";
  var tip = document.getElementById("tip"), box = document.querySelector(".plot");
  function fmt(x) { return typeof x === "number" ? (Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(4) :
                    x.toPrecision(3)) : String(x); }
  function esc(s) { var d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }
  function show(ev) {
    var t = JSON.parse(ev.target.getAttribute("data-tip"));
    var h = "<b>" + esc(t.title) + "</b><table>";
    if (t.lambda !== undefined) { h += "<tr><td>\\u03bb</td><td>" + esc(t.lambda) + "</td></tr>"; }
    h += "<tr><td>cost</td><td>$" + esc(fmt(t.cost)) + " per query</td></tr>";
    h += "<tr><td>accuracy</td><td>" + esc(t.score.toFixed(4)) +
         (t.score_std !== undefined ? " \\u00b1 " + esc(t.score_std.toFixed(4)) : "") + "</td></tr>";
    if (t.consultations !== undefined) { h += "<tr><td>calls/q</td><td>" + esc(t.consultations.toFixed(2)) +
         "</td></tr>"; }
    if (t.escalation_rate !== undefined) { h += "<tr><td>escalated</td><td>" +
         esc((100 * t.escalation_rate).toFixed(1)) + "%</td></tr>"; }
    h += "</table>";
    if (t.shares) {
      h += "<div class=shares><i>routed shares</i><table>";
      t.shares.forEach(function (s) { h += "<tr><td>" + esc(s[0]) + "</td><td>" + esc((100 * s[1]).toFixed(1)) +
                                           "%</td></tr>"; });
      if (t.more) { h += "<tr><td colspan=2>+ " + esc(t.more) + " more</td></tr>"; }
      h += "</table></div>";
    }
    tip.innerHTML = h;
    tip.hidden = false;
    var r = box.getBoundingClientRect();
    tip.style.left = (ev.clientX - r.left + 14) + "px";
    tip.style.top = (ev.clientY - r.top + 14) + "px";
  }
  document.querySelectorAll("svg .pt").forEach(function (p) {
    p.addEventListener("mouseenter", show);
    p.addEventListener("mousemove", show);
    p.addEventListener("mouseleave", function () { tip.hidden = true; });
  });
  document.querySelectorAll("#legend li").forEach(function (li) {
    li.addEventListener("click", function () {
      var sel = 'svg g.series[data-kind="' + li.dataset.kind + '"][data-name="' + CSS.escape(li.dataset.name) + '"]';
      var g = document.querySelector(sel);
      if (g) { g.classList.toggle("hidden"); li.classList.toggle("off"); }
    });
  });
}());
"""


def render_html(summary: dict, table_head: list[str], table_rows: list[list[str]], title: Optional[str] = None,
                notes: tuple[str, ...] = ()) -> str:
    """The whole report page: title, the plot (SVG and legend) with its hover script, the metrics table
    (``table_head``: column names; ``table_rows``: the cells, router first), the reference line and ``notes``."""
    svg, legend = render_svg(summary)
    ref = summary.get("reference", {})
    title = title or f"routecraft bench — {summary.get('data', '')}"
    head = "".join(f"<th>{e(h)}</th>" for h in table_head)
    rows = "".join(f'<tr data-router="{e(r[0])}">' + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                   for r in table_rows)
    refs = []
    if "best" in ref:
        refs.append(f"best single <b>{e(ref['best'])}</b> score {_f(ref.get('best_score')):.3f} at "
                    f"${_f(ref.get('best_cost')):.3g}/query")
    if "cheapest" in ref:
        refs.append(f"cheapest <b>{e(ref['cheapest'])}</b> score {_f(ref.get('cheapest_score')):.3f} at "
                    f"${_f(ref.get('cheapest_cost')):.3g}/query")
    if "oracle_score" in ref:
        refs.append(f"oracle score {_f(ref['oracle_score']):.3f}")
    if "train_best" in ref:
        refs.append(f"train-best single <b>{e(ref['train_best'])}</b> (chosen on the training split) test score "
                    f"{_f(ref.get('train_best_score')):.3f} at ${_f(ref.get('train_best_cost')):.3g}/query")
    seeds = ", ".join(str(s) for s in summary.get("seeds", []))
    notes_html = "".join(f'<p class="meta">{e(n)}</p>' for n in notes)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{e(title)}</title><style>{_CSS}</style></head>'
            f'<body><h1>{e(title)}</h1><p class="meta">data <b>{e(summary.get("data", ""))}</b> · seeds {e(seeds)} '
            f'· {len(summary.get("singles", []))} candidates · routers {e(", ".join(summary.get("routers", [])))}'
            f'</p><h2>Accuracy against cost</h2><p class="meta">Each router\'s curve is its λ sweep on the test '
            f'split, averaged over the seeds point by point; hover a point for its λ, its cost and accuracy, and '
            f'where the router sent the queries (the routed shares, averaged over the seeds); click a legend entry '
            f'to hide its series.</p><div class="plot">{svg}{legend}<div id="tip" hidden></div></div>'
            f'<h2>Metrics</h2><table class="metrics" id="metrics"><thead><tr>{head}</tr></thead><tbody>{rows}'
            f'</tbody></table><p class="meta">Reference (test split, mean over seeds {e(seeds)}): '
            f'{"; ".join(refs)}.</p>{notes_html}<script>{_JS}</script></body></html>')


def write_html(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p
