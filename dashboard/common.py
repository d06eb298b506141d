"""Shared by the pages: the store in use, the map figure, small formatting helpers.

All logic lives in `pipeline`; this module only draws. Text that a user or a model wrote
is shown through st.text/st.code/dataframes or escaped in hovers, never as raw HTML.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

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


def build_map_figure(tax, show_excluded: bool = False, highlight: int | None = None) -> go.Figure:
    """The 2-D UMAP of keyphrases, one WebGL trace per error type, noise in grey.
    customdata carries the keyphrase id, which is what a selection hands back."""
    groups: dict[int | None, list[dict]] = {}
    for p in tax.points:
        if p["excluded"] and not show_excluded:
            continue
        groups.setdefault(p["type"], []).append(p)
    fig = go.Figure()
    order = sorted(groups, key=lambda t: (t is not None, -len(groups[t])))
    for t in order:
        pts = groups[t]
        tv = tax.types.get(t) if t is not None else None
        name = "unassigned (noise)" if t is None else f"{t}: {tv.title if tv else t}"
        hover = [f"<b>{_snip(p['text'], 90)}</b><br>{_snip(p['question'], 110)}"
                 f"<br>case {p['case_id']} · {html.escape(str(p['dataset']))}" for p in pts]
        fig.add_trace(go.Scattergl(
            x=[p["x"] for p in pts], y=[p["y"] for p in pts], mode="markers",
            name=_snip(name, 48), customdata=[p["kp_id"] for p in pts],
            hovertext=hover, hoverinfo="text",
            marker={"size": 7 if t is not None else 5, "color": colour(t),
                    "opacity": 0.35 if t is None else (0.95 if highlight in (None, t) else 0.2),
                    "symbol": ["x" if p["excluded"] else "circle" for p in pts]}))
    fig.update_layout(height=620, margin={"l": 0, "r": 0, "t": 10, "b": 0},
                      dragmode="lasso",
                      legend={"itemsizing": "constant", "font": {"size": 11},
                              "orientation": "h", "yanchor": "top", "y": -0.02},
                      xaxis={"showticklabels": False, "title": None, "zeroline": False},
                      yaxis={"showticklabels": False, "title": None, "zeroline": False},
                      uirevision="map")  # keep zoom across redraws
    return fig


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def job_line(j: dict) -> str:
    eta = f", ETA {j['eta_s']:.0f}s" if j.get("eta_s") else ""
    return f"#{j['job_id']} {j['kind']} · {j['status']} · {j['done'] or 0}/{j['total'] or '?'}{eta}"
