"""Shared by the pages: the store in use, the map figure, small formatting helpers.

All logic lives in `pipeline`; this module only draws. Text that a user or a model wrote
is shown through st.text/st.code/dataframes or escaped in hovers, never as raw HTML.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pipeline import config
from pipeline.store import Store

NOISE = "#b8b8b8"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
           "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#9c9ede"]


def db_path() -> Path:
    return Path(os.environ.get("SEI_DB") or config.db_path())


def store() -> Store:
    # A Store holds no connection between calls, so a fresh one per rerun is cheap and
    # always sees what background jobs committed.
    return Store(db_path())


def header(title: str) -> Store:
    st.set_page_config(page_title=f"SEI Studio · {title}", layout="wide")
    st.title(title)
    s = store()
    st.caption(f"Store: `{s.path}`")
    return s


def colour(type_id: int | None) -> str:
    return NOISE if type_id is None else PALETTE[type_id % len(PALETTE)]


def _snip(text: str | None, n: int) -> str:
    text = " ".join((text or "").split())
    return html.escape(text[:n] + ("…" if len(text) > n else ""))


LEGEND_TYPES = 24  # the largest types get a trace (and legend entry) each; the rest share one


# Hover texts per clustering (its points never change; only edits do): escaping 10k
# snippets costs more than the rest of a redraw.
_HOVERS: dict[tuple, dict[int, str]] = {}


def _hovers(tax) -> dict[int, str]:
    cl = tax.clustering or {}
    key = (cl.get("clustering_id"), str(cl.get("created_at")), len(tax.points),
           max((p["kp_id"] for p in tax.points), default=None))
    if key not in _HOVERS:
        if len(_HOVERS) > 4:
            _HOVERS.clear()
        _HOVERS[key] = {p["kp_id"]: f"<b>{_snip(p['text'], 90)}</b><br>{_snip(p['question'], 110)}"
                        f"<br>case {p['case_id']} · {html.escape(str(p['dataset']))}"
                        for p in tax.points}
    return _HOVERS[key]


# The long tail's colours as numbers on a stepped scale: plotly checks colour strings
# one by one with a regex, numbers as one array.
_STEPPED = [[(i + j) / len(PALETTE), c] for i, c in enumerate(PALETTE) for j in (0, 1)]


def build_map_figure(tax, show_excluded: bool = False, highlight: int | None = None) -> go.Figure:
    """The 2-D UMAP of keyphrases in WebGL, coloured by error type, noise in grey.
    customdata carries the keyphrase id, which is what a selection hands back.

    Built for 10k points and hundreds of types: plotly validates every trace and every
    list element, so the largest types get a trace each, the long tail shares one trace
    with per-point colours, and columns go in as numpy arrays (validated whole)."""
    groups: dict[int | None, list[dict]] = {}
    for p in tax.points:
        if p["excluded"] and not show_excluded:
            continue
        groups.setdefault(p["type"], []).append(p)
    typed = sorted((t for t in groups if t is not None), key=lambda t: -len(groups[t]))
    head, tail = typed[:LEGEND_TYPES], typed[LEGEND_TYPES:]
    parts = ([(None, groups[None])] if None in groups else []) + [(t, groups[t]) for t in head]
    if tail:
        parts.append(("tail", [p for t in tail for p in groups[t]]))

    def name(t) -> str:
        if t is None:
            return "unassigned (noise)"
        if t == "tail":
            return f"{len(tail)} smaller types"
        tv = tax.types.get(t)
        return _snip(f"{t}: {tv.title if tv else t}", 48)

    def alpha(t) -> float:
        if t is None:
            return 0.35
        return 0.95 if highlight is None or highlight == t else 0.2

    hovers = _hovers(tax)
    data = []
    for t, pts in parts:
        excl = [p["excluded"] for p in pts]
        marker = {"size": 5 if t is None else 7, "color": colour(t) if t != "tail" else
                  np.fromiter((p["type"] % len(PALETTE) for p in pts), float, len(pts)),
                  "opacity": alpha(t)}
        if t == "tail":
            marker.update(colorscale=_STEPPED, cmin=-0.5, cmax=len(PALETTE) - 0.5,
                          showscale=False)
            if highlight is not None:
                marker["opacity"] = np.fromiter((alpha(p["type"]) for p in pts), float, len(pts))
        if any(excl):
            marker["symbol"] = np.array(["x" if e else "circle" for e in excl], dtype=object)
        data.append({
            "type": "scattergl", "mode": "markers", "name": name(t),
            "x": np.fromiter((p["x"] for p in pts), float, len(pts)),
            "y": np.fromiter((p["y"] for p in pts), float, len(pts)),
            "customdata": np.fromiter((p["kp_id"] for p in pts), np.int64, len(pts)),
            "hovertext": np.array([hovers[p["kp_id"]] for p in pts], dtype=object),
            "hoverinfo": "text", "marker": marker})
    layout = {"height": 620, "margin": {"l": 0, "r": 0, "t": 10, "b": 0},
              "dragmode": "lasso",
              "legend": {"itemsizing": "constant", "font": {"size": 11},
                         "orientation": "h", "yanchor": "top", "y": -0.02},
              "xaxis": {"showticklabels": False, "title": None, "zeroline": False},
              "yaxis": {"showticklabels": False, "title": None, "zeroline": False},
              "uirevision": "map"}  # keep zoom across redraws
    return go.Figure(data=data, layout=layout)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def job_line(j: dict) -> str:
    eta = f", ETA {j['eta_s']:.0f}s" if j.get("eta_s") else ""
    return f"#{j['job_id']} {j['kind']} · {j['status']} · {j['done'] or 0}/{j['total'] or '?'}{eta}"


def result_line(result: dict) -> str:
    """A job's result in one line; a clustering diff as counts (the full diff is on the
    Error map page and in `sei jobs show`)."""
    parts = []
    for k, v in result.items():
        if k == "diff" and isinstance(v, dict):
            parts.append("diff: " + ", ".join(f"{len(v.get(n) or [])} {n}" for n in
                                              ("kept", "new", "gone", "split", "merged")))
        else:
            parts.append(f"{k} {v}")
    return " · ".join(parts)

# -- the loop pages (Synthesis, Selection, Iterations) ---------------------------------------


def duration(seconds: float | None) -> str:
    """A rough duration: '40 s', '12 min', '2.5 h'."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def launch(s: Store, kind: str, params: dict, key: str) -> int | None:
    """Submit a job of `kind`; remember it under `key` for follow_jobs. Errors shown."""
    from pipeline import jobs

    try:
        jid = jobs.submit(s, kind, params)
    except ValueError as e:
        st.error(str(e))
        return None
    st.session_state[f"job-{key}"] = jid
    st.success(f"Job #{jid} ({kind}) started; its progress is below and on the Jobs page.")
    return jid


def follow_jobs(s: Store, kinds: tuple[str, ...], key: str, latest: int = 3) -> None:
    """Progress of this page's jobs: the one just launched and the latest of these kinds,
    refreshed every 2 s (as on the Jobs page)."""
    from pipeline import jobs

    @st.fragment(run_every=2)
    def _follow():
        jobs.reap(s)
        mine = st.session_state.get(f"job-{key}")
        rows = [j for j in s.jobs(limit=100) if j["kind"] in kinds][:latest]
        if mine and all(j["job_id"] != mine for j in rows):
            j = s.job(mine)
            rows = ([j] if j else []) + rows
        if not rows:
            st.caption(f"No {' / '.join(kinds)} jobs yet.")
            return
        for j in rows:
            frac = min(1.0, (j["done"] or 0) / j["total"]) if j["total"] else 0.0
            st.progress(frac, text=job_line(j))
            line = f"{j['step'] or ''} {j['message'] or ''}".strip()
            if j["result"]:
                line += f" · {result_line(j['result'])}"
            if line:
                st.caption(line)
            if j["error"]:
                st.error(j["error"])

    _follow()
