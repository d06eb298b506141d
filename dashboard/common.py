"""Shared by the pages: the store in use, the map figure, small formatting helpers.

All logic lives in `pipeline`; this module only draws. Text that a user or a model wrote
is shown through st.text/st.code/dataframes or escaped in hovers, never as raw HTML.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pipeline.core import config
from pipeline.core.redact import scrub
from pipeline.loop import jobs, views
from pipeline.storage.store import Store, StoreUnusable

NOISE = "#b8b8b8"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
           "#3182bd", "#e6550d", "#31a354", "#756bb1", "#e7ba52", "#9c9ede"]


def _extend(n: int) -> list[str]:
    """More distinct colours after the hand-picked ones: golden-angle hues at alternating
    saturation and value (none grey, which is noise)."""
    import colorsys

    out = []
    for i in range(n):
        h = (0.13 + i * 0.381966) % 1.0
        s_, v = (0.75, 0.85) if i % 3 == 0 else (0.5, 0.7) if i % 3 == 1 else (0.9, 0.55)
        r, g, b = colorsys.hsv_to_rgb(h, s_, v)
        out.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return out


COLOURS = PALETTE + _extend(60)


def db_path() -> Path:
    return Path(os.environ.get("SEI_DB") or config.db_path())


def store() -> Store:
    # A Store holds no connection between calls, so a fresh one per rerun is cheap and
    # always sees what background jobs committed.
    return Store(db_path())


def header(title: str) -> Store:
    """Every page's top: the page config, its title and the store in use."""
    st.set_page_config(page_title=f"SEI Studio · {title}", layout="wide")
    st.title(title)
    s = store()
    st.caption(f"Store: `{s.path}`")
    if s.path.exists():
        try:  # a damaged or foreign file: one line on every page, before any read of it
            s.scalar("SELECT 1")
        except StoreUnusable as e:
            st.error(scrub(str(e)))
            st.stop()
    return s


def iteration_header(title: str, key: str) -> tuple[Store, list[int], int]:
    """The top of a loop page (Synthesis, Selection): the header and the iteration it
    shows, the latest by default. Returns the store, the iterations and the one chosen."""
    s = header(title)
    its = views.iteration_choices(s)
    return s, its, st.selectbox("iteration", its, index=len(its) - 1, key=key)


def colour(type_id: int | None) -> str:
    return NOISE if type_id is None else PALETTE[type_id % len(PALETTE)]


def type_colours(tax) -> dict[int, int]:
    """A colour index per visible type, never shared between visible types (up to
    len(COLOURS) of them): each type asks for its id's colour and takes the next free one
    if it is taken, so a type keeps its colour when others are merged away."""
    out: dict[int, int] = {}
    taken: set[int] = set()
    for t in sorted(t.type_id for t in tax.visible_types()):
        i = t % len(COLOURS)
        for _ in range(len(COLOURS)):
            if i not in taken:
                break
            i = (i + 1) % len(COLOURS)
        out[t] = i
        taken.add(i)
        if len(taken) == len(COLOURS):
            taken.clear()
    return out


def md_text(text: str) -> str:
    """Model or user text made inert for st.markdown: every markdown character escaped
    (no links, images, LaTeX or HTML), line breaks kept."""
    out = re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])", r"\\\1", text or "")
    return out.replace("\n", "  \n")


def highlighted(text: str, spans: list[tuple[int, int]]) -> str:
    """Markdown for `text` with the given character spans highlighted (all else inert)."""
    out, pos = [], 0
    for a, b in sorted(set(spans)):
        if a < pos:
            continue
        out.append(md_text(text[pos:a]))
        out.append(f":orange-background[{md_text(text[a:b])}]")
        pos = b
    out.append(md_text(text[pos:]))
    return "".join(out)


def clip(text: str | None, n: int) -> str:
    """`text` on one line, cut to n characters with an ellipsis."""
    text = " ".join((text or "").split())
    return text[:n] + ("…" if len(text) > n else "")


def _snip(text: str | None, n: int) -> str:
    # Plotly draws a subset of HTML: escape <, > and &, but not quotes (it would show
    # &quot; literally).
    return html.escape(clip(text, n), quote=False)


LEGEND_TYPES = 24  # the largest types get a trace each; the rest share one
MAP_TITLES = 16    # titles drawn on the map: the largest types


# Hover texts per clustering and dot (its points never change; only edits do): escaping
# 10k snippets costs more than the rest of a redraw.
_HOVERS: dict[tuple, str] = {}


def _hover(cl_key, d: dict) -> str:
    key = (cl_key, d["kp_id"], len(d["kp_ids"]), len(d["cases"]))
    h = _HOVERS.get(key)
    if h is None:
        if len(_HOVERS) > 50_000:
            _HOVERS.clear()
        n, nc = len(d["kp_ids"]), len(d["cases"])
        many = f" ×{n} ({nc} case{'s' if nc != 1 else ''})" if n > 1 else ""
        h = _HOVERS[key] = (f"<b>{_snip(d['text'], 90)}</b>{many}<br>{_snip(d['question'], 110)}"
                            f"<br>case {d['case_id']} · {_snip(str(d['dataset']), 40)}")
    return h


def build_map_figure(tax, **kw) -> go.Figure:
    """The map (map_spec) as a validated plotly Figure (for st.plotly_chart). The map
    component takes the spec itself: validating 10,000 points cost ~0.2 s per edit."""
    return go.Figure(**map_spec(tax, **kw))


def map_spec(tax, show_excluded: bool = False, highlight: int | None = None,
             mark: set[int] | None = None,
             view: tuple[float, float, float, float] | None = None,
             hits: set[int] | None = None, colour_by: str = "type",
             attr: dict[int, str] | None = None) -> dict:
    """The 2-D UMAP of keyphrases in WebGL, coloured by error type (no two visible types
    share a colour), noise in grey, with the largest types' titles drawn on the map.
    Identical keyphrases of one type are one dot sized by their count; customdata carries
    the dot's first keyphrase id, which is what a selection hands back (expand it with
    taxonomy.expand). `highlight` dims every type but one; `mark` rings the dots of
    these keyphrase ids (a case shown on the map); `hits` outlines the dots of search hits
    (a trace named "search hits"); `view` sets the axis ranges. `colour_by` another
    attribute than "type" (dataset, analyzer, verdict) colours each dot by `attr`
    (keyphrase id -> value; a dot takes its first keyphrase's) with a legend, one trace
    per value, the type titles still drawn.

    Built for 10k points and hundreds of types: plotly validates every trace and every
    list element, so the largest types get a trace each, the long tail shares one trace
    with per-point colours, and columns go in as numpy arrays (validated whole)."""
    from pipeline.analysis import taxonomy

    cols = type_colours(tax)
    groups: dict[int | None, list[dict]] = {}
    for d in taxonomy.dots(tax, show_excluded):
        groups.setdefault(d["type"], []).append(d)
    size = {t: sum(len(d["kp_ids"]) for d in ds) for t, ds in groups.items()}
    typed = sorted((t for t in groups if t is not None), key=lambda t: -size[t])

    def alpha(t) -> float:
        if t is None:
            return 0.35
        return 0.9 if highlight is None or highlight == t else 0.2

    cl = tax.clustering or {}
    cl_key = (cl.get("clustering_id"), str(cl.get("created_at")))
    data = (_attr_traces(groups, attr or {}, colour_by, cl_key, alpha) if colour_by != "type"
            else _type_traces(tax, groups, typed, cols, alpha, highlight, cl_key))
    data += _overlay_traces(groups, mark, hits, cl_key)
    notes = _titles(tax, groups, [t for t in typed if not tax.types[t].excluded][:MAP_TITLES],
                    cols)
    return {"data": data, "layout": _map_layout(tax, view, colour_by, notes)}


def _type_traces(tax, groups: dict, typed: list, cols: dict, alpha, highlight,
                 cl_key) -> list[dict]:
    """One trace per large type (and noise), the long tail of types in one trace with
    per-point colours."""
    head, tail = typed[:LEGEND_TYPES], typed[LEGEND_TYPES:]
    parts = ([(None, groups[None])] if None in groups else []) + [(t, groups[t]) for t in head]
    if tail:
        parts.append(("tail", [d for t in tail for d in groups[t]]))

    def name(t) -> str:
        if t is None:
            return "unassigned (noise)"
        if t == "tail":
            return f"{len(tail)} smaller types"
        tv = tax.types.get(t)
        return _snip(f"{t}: {tv.title if tv else t}", 48)

    data = []
    for t, ds in parts:
        n = np.fromiter((len(d["kp_ids"]) for d in ds), float, len(ds))
        marker = {"size": (5.0 if t is None else 7.0) + 4.0 * (np.sqrt(n) - 1.0),
                  "color": NOISE if t is None else COLOURS[cols[t]] if t != "tail" else
                  np.fromiter((cols.get(d["type"], 0) for d in ds), float, len(ds)),
                  "opacity": alpha(t), "line": {"width": 0}}
        if t == "tail":
            steps = [[(i + j) / len(COLOURS), c] for i, c in enumerate(COLOURS) for j in (0, 1)]
            marker.update(colorscale=steps, cmin=-0.5, cmax=len(COLOURS) - 0.5, showscale=False)
            if highlight is not None:
                marker["opacity"] = np.fromiter((alpha(d["type"]) for d in ds), float, len(ds))
        if any(d["excluded"] for d in ds):
            marker["symbol"] = np.array(["x" if d["excluded"] else "circle" for d in ds],
                                        dtype=object)
        data.append({
            "type": "scattergl", "mode": "markers", "name": name(t),
            "x": np.fromiter((d["x"] for d in ds), float, len(ds)),
            "y": np.fromiter((d["y"] for d in ds), float, len(ds)),
            "customdata": np.fromiter((d["kp_id"] for d in ds), np.int64, len(ds)),
            "hovertext": np.array([_hover(cl_key, d) for d in ds], dtype=object),
            "hoverinfo": "text", "marker": marker})
    return data


def _overlay_traces(groups: dict, mark: set[int] | None, hits: set[int] | None,
                    cl_key) -> list[dict]:
    """The rings of a case shown on the map and the outlines of search hits."""
    data = []
    if mark:
        ring = [d for ds in groups.values() for d in ds if mark & set(d["kp_ids"])]
        data.append({"type": "scattergl", "mode": "markers", "name": "shown case",
                     "x": np.array([d["x"] for d in ring], float),
                     "y": np.array([d["y"] for d in ring], float), "hoverinfo": "skip",
                     "marker": {"size": 20, "symbol": "circle-open", "color": "#000000",
                                "line": {"width": 3}}})
    if hits:
        found = [d for ds in groups.values() for d in ds if hits & set(d["kp_ids"])]
        data.append({"type": "scattergl", "mode": "markers", "name": "search hits",
                     "x": np.array([d["x"] for d in found], float),
                     "y": np.array([d["y"] for d in found], float),
                     "customdata": np.array([d["kp_id"] for d in found], np.int64),
                     "hovertext": np.array([_hover(cl_key, d) for d in found], dtype=object),
                     "hoverinfo": "text",
                     "marker": {"size": 15, "symbol": "diamond-open", "color": "#d62728",
                                "line": {"width": 2.5}}})
    return data


def _map_layout(tax, view, colour_by: str, notes: list) -> dict:
    """The view is the whole clustering, excluded points included, so it does not jump when
    an edit hides or merges points; or `view` (x0, x1, y0, y1), the page's zoom, which
    outlives edits. Plotly's own zoom outlives them too where the figure is updated in
    place (dashboard/map_view.py: uirevision holds while the view stays)."""
    def extent(k):
        if view is not None:
            return list(view[:2]) if k == "x" else list(view[2:])
        v = [q[k] for q in tax.points] or [0.0]
        lo, hi = min(v), max(v)
        pad = 0.04 * ((hi - lo) or 1.0)
        return [lo - pad, hi + pad]

    cl = tax.clustering or {}
    return {"height": 620, "margin": {"l": 0, "r": 0, "t": 10, "b": 0},
            "dragmode": "lasso", "showlegend": colour_by != "type",
            "legend": {"title": {"text": colour_by}, "orientation": "h", "y": -0.02,
                       "yanchor": "top"},
            "annotations": notes,
            "xaxis": {"showticklabels": False, "zeroline": False, "range": extent("x")},
            "yaxis": {"showticklabels": False, "zeroline": False, "range": extent("y")},
            "uirevision": f"map-{cl.get('clustering_id')}"}


def _attr_traces(groups: dict, attr: dict[int, str], by: str, cl_key, alpha) -> list[dict]:
    """One trace per value of a dot's attribute (the largest first, the colours in order;
    values past the palette share the last trace, named so)."""
    vals: dict[str, list[dict]] = {}
    for ds in groups.values():
        for d in ds:
            vals.setdefault(str(attr.get(d["kp_id"], "?")), []).append(d)
    order = sorted(vals, key=lambda v: (-sum(len(d["kp_ids"]) for d in vals[v]), v))
    if len(order) > len(COLOURS):
        rest = order[len(COLOURS) - 1:]
        vals["other"] = [d for v in rest for d in vals[v]]
        order = order[:len(COLOURS) - 1] + ["other"]
    out = []
    for i, v in enumerate(order):
        ds = vals[v]
        n = np.fromiter((len(d["kp_ids"]) for d in ds), float, len(ds))
        out.append({
            "type": "scattergl", "mode": "markers", "name": _snip(f"{by}: {v}", 48),
            "x": np.fromiter((d["x"] for d in ds), float, len(ds)),
            "y": np.fromiter((d["y"] for d in ds), float, len(ds)),
            "customdata": np.fromiter((d["kp_id"] for d in ds), np.int64, len(ds)),
            "hovertext": np.array([_hover(cl_key, d) for d in ds], dtype=object),
            "hoverinfo": "text",
            "marker": {"size": 7.0 + 4.0 * (np.sqrt(n) - 1.0), "color": COLOURS[i],
                       "opacity": np.fromiter((alpha(d["type"]) for d in ds), float, len(ds)),
                       "line": {"width": 0}}})
    return out


def dense_spot(tx: np.ndarray, ty: np.ndarray, bw: float, limit: int = 400) -> int:
    """Index of the point in the densest part of a type (a Gaussian kernel of width bw
    over at most `limit` of its points): where its title goes. A type in two islands gets
    its title on the larger one, not on the empty middle that its median would be."""
    idx = np.arange(len(tx))
    if len(idx) > limit:
        idx = np.random.default_rng(0).choice(idx, limit, replace=False)
    d2 = (tx[idx, None] - tx[None, idx]) ** 2 + (ty[idx, None] - ty[None, idx]) ** 2
    return int(idx[np.argmax(np.exp(-d2 / (2 * bw * bw)).sum(1))])


def _titles(tax, groups: dict, types: list[int], cols: dict[int, int],
            w: float = 700.0, h: float = 620.0) -> list[dict]:
    """Type titles for the map, each just above its cluster (off the densest points), moved
    further up, or below the cluster, when it would cover a title already placed. Overlap
    is judged in approximate pixels of a w x h plot."""
    xs = np.array([d["x"] for ds in groups.values() for d in ds] or [0.0])
    ys = np.array([d["y"] for ds in groups.values() for d in ds] or [0.0])
    sx = w / ((xs.max() - xs.min()) or 1.0)
    sy = h / ((ys.max() - ys.min()) or 1.0)
    placed: list[tuple[float, float, float, float]] = []
    notes = []
    for t in types:
        text = _snip(tax.types[t].title, 32)
        tx = np.array([d["x"] for d in groups[t]])
        ty = np.array([d["y"] for d in groups[t]])
        # the title sits over the densest island of the type: its spot and the points
        # near it (a tenth of the map's width)
        bw = 0.05 * max(xs.max() - xs.min(), ys.max() - ys.min(), 1e-9)
        i0 = dense_spot(tx, ty, bw)
        near = (tx - tx[i0]) ** 2 + (ty - ty[i0]) ** 2 <= (2 * bw) ** 2
        x, tx, ty = float(tx[i0]), tx[near], ty[near]
        half = 3.3 * len(text) + 4
        px = (x - xs.min()) * sx
        # Near an edge a centred title would be cut off: anchor it on the inner side.
        anchor = "left" if px < half else "right" if px > w - half else "center"
        px += half if anchor == "left" else -half if anchor == "right" else 0.0
        spots = [((ty.max() - ys.min()) * sy + 4 + 18 * i, 1, i) for i in range(4)] + \
            [((ty.min() - ys.min()) * sy - 22 - 18 * i, -1, i) for i in range(3)]
        for py, side, i in spots:  # noqa: B007 (side and i are read after the loop)
            box = (px - half, px + half, py, py + 18)
            if not any(b[0] < box[1] and box[0] < b[1] and b[2] < box[3] and box[2] < b[3]
                       for b in placed):
                break
        placed.append(box)
        top = side > 0
        notes.append({"x": x, "y": float(ty.max() if top else ty.min()), "showarrow": False,
                      "xanchor": anchor, "yanchor": "bottom" if top else "top",
                      "yshift": (4 + 18 * i) if top else -(4 + 18 * i),
                      "text": text, "font": {"size": 11},
                      "bgcolor": "rgba(255,255,255,0.6)", "bordercolor": COLOURS[cols[t]],
                      "borderwidth": 1.5, "borderpad": 2})
    return notes


def swatch(colour: str) -> str:
    """A square of this colour as an image URL (the types table's colour column)."""
    return ("data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' width='14' "
            f"height='14'><rect width='14' height='14' rx='3' fill='{colour.replace('#', '%23')}'/>"
            "</svg>")


def legend_table(tax):
    """The compact title/share/cases table beside the map; its colour column is an image
    per row (a pandas Styler painting the cells cost ~0.1 s per edit at 200 types)."""
    import pandas as pd

    from pipeline.analysis.taxonomy import noise

    cols = type_colours(tax)
    rows = [{"colour": swatch(COLOURS[cols[t.type_id]]), "id": str(t.type_id),
             "title": t.title, "share": pct(t.share), "cases": t.n_cases,
             "keyphrases": len(t.members), "excluded": t.excluded} for t in tax.visible_types()]
    nz = noise(tax)
    if nz["kp_ids"]:  # noise is a row too: its keyphrases reach no type
        rows.append({"colour": swatch(NOISE), "id": "–", "title": "unassigned (noise)",
                     "share": f"{len(nz['only_noise'])} cases only here",
                     "cases": len(nz["case_ids"]), "keyphrases": len(nz["kp_ids"]),
                     "excluded": False})
    return pd.DataFrame(rows)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


# page name -> its script, for st.page_link (the sidebar's order is the loop's)
PAGES = {"Overview": "Overview.py", "Bad cases": "pages/1_Bad_cases.py",
         "Error map": "pages/2_Error_map.py", "Review": "pages/3_Review.py",
         "Synthesis": "pages/5_Synthesis.py",
         "Selection": "pages/6_Selection.py", "Iterations": "pages/7_Iterations.py",
         "Jobs": "pages/8_Jobs.py", "Settings": "pages/9_Settings.py"}


def page_link(page: str, label: str, icon: str, **query) -> None:
    """A link to another page with query parameters (e.g. case=12). st.page_link only knows
    pages of the running app: a page run alone (AppTest) gets a plain link instead."""
    from streamlit.errors import StreamlitPageNotFoundError

    params = {k: str(v) for k, v in query.items()}
    path = PAGES.get(page, f"pages/{page}.py")  # a page's name, or its file's stem
    try:
        st.page_link(path, label=label, icon=icon, query_params=params)
    except StreamlitPageNotFoundError:
        url = ("" if path == "Overview.py" else Path(path).stem.split("_", 1)[1]) + \
            ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
        st.markdown(f"[{label}](/{url})")


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


def attempt(what: str, fn, *args, show=None):
    """fn(*args), or None after saying in the page, in words, why `what` could not be done:
    an expected failure (a store this user cannot write, a busy, damaged or full one,
    parameters refused, a job that is gone) is a message (`show`: st.error by default),
    never a traceback; anything else is a bug and is raised."""
    try:
        return fn(*args)
    except Exception as e:
        if not (jobs.expected_failure(e) or isinstance(e, KeyError)):
            raise
        why = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        (show or st.error)(f"{what}: {scrub(str(why))}")
        return None


def running_job(s: Store, kind: str, params: dict | None = None) -> dict | None:
    """The queued or running job of `kind` (with exactly these parameters, if given): a
    launch button is disabled while there is one (its line and Cancel show beside it)."""
    if not s.path.exists():
        return None
    want = None if params is None else json.loads(json.dumps(params, default=str))
    return next((j for j in s.jobs(jobs.ACTIVE) if j["kind"] == kind
                 and (want is None or j["params"] == want)), None)


def submit(s: Store, kind: str, params: dict, show=None) -> int | None:
    """Submit a job of `kind` (every button of the app that starts a job comes here): its
    id, or None after saying in the page why it was not started (see attempt); a store
    this user cannot write is refused before anything is written. One launch per intent:
    while a job of this kind with these parameters is queued or running (an Enter in a
    form's field, then its button), it is that job's id, and nothing new starts."""
    def go() -> int:
        s.check_writable()  # the store, its folder and its jobs folder (logs, locks)
        if same := running_job(s, kind, params):
            st.info(f"Job #{same['job_id']} ({kind}) with these parameters is already "
                    f"{same['status']}: nothing new was started.")
            return same["job_id"]
        return jobs.submit(s, kind, params)

    return attempt(f"The {kind} job was not started", go, show=show)


def launch(s: Store, kind: str, params: dict, key: str) -> int | None:
    """Submit a job of `kind`; remember it under `key` for job_panel. Errors shown."""
    before = st.session_state.get(f"job-{key}")
    jid = submit(s, kind, params)
    if jid is None:
        return None
    st.session_state[f"job-{key}"] = jid
    if jid != before:
        st.success(f"Job #{jid} ({kind}) started; its progress is below and on the Jobs "
                   "page.")
    return jid


def flash(msg: str, error: bool = False) -> None:
    """A message for the next run of the page (it survives st.rerun)."""
    st.session_state["flash_error" if error else "flash"] = msg


def job_row(s: Store, j: dict, container=None, controls: bool = False) -> None:
    """One job as every page shows it: its bar (stage units, ETA), step and message, the
    result in words, the error; with controls, Cancel/Resume and the log tail."""
    c = container or st
    top, btn = c.columns([5, 1]) if controls else (c, None)
    top.progress(jobs.fraction_done(j), text=jobs.job_line(j))
    line = f"{j['step'] or ''} {j['message'] or ''}".strip()
    if j["result"]:
        line += f" · {jobs.result_line(j['result'])}"
    if line:
        top.caption(line)
    if j["error"]:
        top.error(j["error"])
    if not controls:
        return
    if j["status"] in jobs.ACTIVE:
        if btn.button("Cancel", key=f"cancel-{j['job_id']}"):
            if attempt(f"Job #{j['job_id']} was not cancelled", jobs.cancel, s, j["job_id"],
                       show=top.error) is not None:
                st.rerun()
    elif j["status"] in ("failed", "cancelled"):
        if btn.button("Resume", key=f"resume-{j['job_id']}"):
            def resume() -> int:
                s.check_writable()  # as a new job: refused before anything is written
                return jobs.resume(s, j["job_id"])

            if attempt(f"Job #{j['job_id']} was not resumed", resume,
                       show=top.error) is not None:
                st.rerun()
    log = jobs.log_tail(j["log_file"], 15, max_bytes=8000)
    if log:
        with top.expander("log tail"):
            st.code(log, language=None)


def job_panel(s: Store, kinds: tuple[str, ...], key: str, latest: int = 3,
              redraw_when_done: bool = False, idle_poll: float | None = 10) -> bool:
    """The one job widget of the app's pages: the job this page launched and the latest
    of these kinds, refreshed every 2 s while one of them runs (every `idle_poll` s
    otherwise, or never when None); when the job this page launched ends, the whole page
    reruns once (its results drawn). With redraw_when_done it shows only running jobs and
    reruns the whole page when one of them ends (what it made is then drawn). Returns
    whether it polls every 2 s."""
    def running(js: list[dict]) -> bool:
        return any(j["status"] in jobs.ACTIVE and j["kind"] in kinds for j in js)

    first = [s.jobs(limit=100)]  # read once for this run's pace and the panel's first draw
    active = running(first[0])

    # Every 2 s while a job of these kinds runs, slower or never otherwise: each poll is a
    # run that an edit on the page beside it may have to wait for (and on the Error map,
    # one that leaves an edit's stale elements on screen: see its page). A job starting or
    # ending (seen by a poll) reruns the page, which sets the pace anew.
    @st.fragment(run_every=2 if active else idle_poll)
    def _panel():
        latest_jobs = first.pop() if first else s.jobs(limit=100)
        # with a job running, a dead one is marked failed, so the panel stops waiting on it
        if running(latest_jobs) and jobs.reap(s):
            latest_jobs = s.jobs(limit=100)
        mine = st.session_state.get(f"job-{key}")
        rows = [j for j in latest_jobs if j["kind"] in kinds]
        if redraw_when_done:
            watched = st.session_state.setdefault(f"watch-{key}", set())
            ended = [j for j in rows if j["job_id"] in watched and j["status"] not in jobs.ACTIVE]
            rows = [j for j in rows if j["status"] in jobs.ACTIVE]
            watched.clear()
            watched.update(j["job_id"] for j in rows)
            if ended:
                flash(" · ".join(f"job #{j['job_id']} {j['kind']} {j['status']}"
                                 for j in ended))
                st.rerun()
        else:
            rows = rows[:latest]
            done = s.job(mine) if mine else None
            if done and done["status"] not in jobs.ACTIVE and \
                    st.session_state.get(f"redrawn-{key}") != mine:
                # the job this page launched has ended: the whole page runs once more, so
                # what the job made is drawn without a reload
                st.session_state[f"redrawn-{key}"] = mine
                st.rerun()
            if mine and all(j["job_id"] != mine for j in rows):
                j = s.job(mine)
                rows = ([j] if j else []) + rows
            if not rows:
                st.caption(f"No {' / '.join(kinds)} jobs yet.")
        for j in rows:  # a running job's line with its Cancel, wherever it shows
            job_row(s, j, controls=j["status"] in jobs.ACTIVE)
        if running(latest_jobs) != active:
            st.rerun()  # the whole page, at the new pace

    _panel()
    return active


def open_on_newest(key: str, newest: str, scope="") -> None:
    """Open a picker on `newest` when it is new since the page last ran in the same
    `scope` (e.g. the iteration shown: a job ended and made it); otherwise the picker keeps
    what the person chose, or its own default when the scope is new."""
    seen = st.session_state.get(f"{key}-newest-{scope}")
    if seen is not None and seen != newest:
        st.session_state[key] = newest
    st.session_state[f"{key}-newest-{scope}"] = newest


def param_input(container, cls, name: str, label: str, key: str, lo=None, hi=None,
                step=None):
    """A form widget for one stage parameter: its default, help and choices come from
    the stage's Params (pipeline/core/params.py), never typed into a page."""
    default, text, choices = cls.default(name), cls.help(name), cls.choices(name)
    if choices:
        opts = list(choices)
        return container.selectbox(label, opts, index=opts.index(default), key=key,
                                   help=text)
    if isinstance(default, bool):
        return container.checkbox(label, value=default, key=key, help=text)
    if isinstance(default, float):
        return container.number_input(label, None if lo is None else float(lo),
                                      None if hi is None else float(hi), float(default), step=step,
                                      key=key, help=text)
    return container.number_input(label, lo, hi, default, step=step, key=key, help=text)


def _typed(raw: str, tp, is_list: bool):
    """A text box's value as the field's type: blank is None, a list is comma-separated,
    a dict is JSON; what does not parse is kept as text (the stage's check says why)."""
    raw = raw.strip()
    if not raw:
        return None
    if is_list:
        return [tp(x.strip()) if tp in (int, float) else x.strip()
                for x in raw.split(",") if x.strip()]
    for cast in ((tp,) if tp in (int, float) else ()) + (json.loads,):
        try:
            return cast(raw)
        except (TypeError, ValueError):
            pass
    return raw


def params_form(cls, key: str) -> dict:
    """Every field of a stage's Params as a widget, its default, help and choices from the
    class (the Jobs page's form for any registered stage); returns the values a person
    changed, so a job's parameters say only what differs from the stage's defaults."""
    from pipeline.core.options import field_type

    cols, out = st.columns(3), {}
    for i, f in enumerate(cls.fields()):
        c, default = cols[i % 3], cls.default(f.name)
        tp, is_list = field_type(cls.hints()[f.name])
        if cls.choices(f.name) or (not is_list and default is not None
                                   and tp in (bool, int, float)):
            out[f.name] = param_input(c, cls, f.name, f.name, f"{key}-{f.name}")
            continue
        shown = ("" if default is None else ",".join(map(str, default)) if is_list
                 else json.dumps(default) if isinstance(default, dict) else str(default))
        out[f.name] = _typed(c.text_input(f.name, shown, key=f"{key}-{f.name}",
                                          help=cls.help(f.name)), tp, is_list)
    return {k: v for k, v in out.items() if v != cls.default(k)}
