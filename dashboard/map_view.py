"""The Error map's figure as a Streamlit component that is updated in place.

st.plotly_chart in Streamlit 1.67 makes a changed figure a new element (its spec is part
of the element's id): every edit sends the whole figure and the browser builds a new
chart, blanking the map and losing its zoom. This component's frame lives as long as the
page. Each rerun sends the figure's skeleton (layout, trace styles, names) with its large
arrays (x, y, ids, hover texts, per-dot sizes and colours) replaced by content hashes, and
only the arrays this session has not sent yet; the frame keeps what it received and
redraws with Plotly.react. A rename sends no array, a merge sends the merged type's, an
undo usually none. A frame made again (the page left and reopened) that lacks an array
asks for all of them, once.

The selection comes back as the component's value: {"points": [{customdata, curve_number,
point_index}], "n": a number rising with every value}. An edit consumes it (`consume`): the frame is
sent `clear`, the n consumed, and drops the drawn selection, as a new chart would."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import plotly
import plotly.io
import streamlit as st
import streamlit.components.v1 as components

from pipeline.core.config import ROOT

SOURCE = Path(__file__).parent / "components" / "sei_map.html"
BUILD = ROOT / ".cache" / "components" / "sei_map"
MIN_BLOB = 4  # lists shorter than this go inline (a blob reference is ~40 bytes)


def _built() -> Path:
    """The component's folder: its page and the plotly.js of the installed plotly (served
    by Streamlit from this folder, so no network and one plotly version for both charts)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    for src, dst in ((SOURCE, BUILD / "index.html"), (js, BUILD / "plotly.min.js")):
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst.with_suffix(".tmp"))
            dst.with_suffix(".tmp").replace(dst)  # atomic: another app process may serve it
    return BUILD


_component = None
TEMPLATE = json.loads(plotly.io.json.to_json_plotly(
    plotly.io.templates["plotly_white"].to_plotly_json()))


def _declared():
    global _component
    if _component is None:
        _component = components.declare_component("sei_map", path=str(_built()))
    return _component


def _is_blob(v) -> bool:
    """A typed array, or a list of values (not of traces or annotations: those are walked
    into, so a rename changes a name, not a blob of every trace)."""
    return (isinstance(v, dict) and "bdata" in v) or (
        isinstance(v, list) and len(v) >= MIN_BLOB and not isinstance(v[0], dict))


def blob(o, blobs: dict[str, object]) -> dict:
    """{"$blob": hash of o}; o goes into `blobs`."""
    text = json.dumps(o, separators=(",", ":"), sort_keys=True)
    h = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
    blobs[h] = o
    return {"$blob": h}


def split(o, blobs: dict[str, object]):
    """`o` with every array replaced by {"$blob": hash}; the arrays go into `blobs`."""
    if _is_blob(o):
        return blob(o, blobs)
    if isinstance(o, dict):
        return {k: split(v, blobs) for k, v in o.items()}
    if isinstance(o, list):
        return [split(v, blobs) for v in o]
    return o


def join(o, blobs: dict[str, object]):
    """The inverse of split (what the frame does before Plotly.react)."""
    if isinstance(o, dict) and set(o) == {"$blob"}:
        return blobs[o["$blob"]]
    if isinstance(o, dict):
        return {k: join(v, blobs) for k, v in o.items()}
    if isinstance(o, list):
        return [join(v, blobs) for v in o]
    return o


SHORT = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4",
         "uint32": "u4", "float32": "f4", "float64": "f8"}  # plotly.js typed arrays
NARROW = ("int8", "int16", "int32")  # int64 goes as the narrowest that holds it, as in plotly


def typed(v: np.ndarray):
    """A numpy column as plotly's JSON sends it (_plotly_utils.utils.to_typed_array_spec):
    a typed array {dtype, bdata}, or a plain list where plotly.js has no such type."""
    if v.size and str(v.dtype) == "int64":
        lo, hi = v.min(), v.max()
        v = next((v.astype(t) for t in NARROW
                  if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max), v)
    if not v.size or str(v.dtype) not in SHORT or v.ndim > 1:
        return v.tolist()
    return {"dtype": SHORT[str(v.dtype)],
            "bdata": base64.b64encode(np.ascontiguousarray(v).data).decode("ascii")}


def plain(o, key: str | None = None):
    """common.map_spec's dict as JSON values, numpy columns as typed arrays: what
    plotly.io.to_json makes of it (tests/test_dashboard.py compares the two), without its
    generic walk and a JSON round trip (~90 ms an edit at 10,000 keyphrases: the edit's
    path to a redrawn map)."""
    if isinstance(o, np.ndarray):
        return o.tolist() if key in ("geojson", "layer", "layers", "range") else typed(o)
    if isinstance(o, dict):
        return {k: plain(v, k) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [plain(v) for v in o]
    return o.item() if isinstance(o, np.generic) else o


def args_of(fig, sent: set[str]) -> dict:
    """The component's arguments for `fig` (a Figure, or a dict of data and layout): the
    skeleton and the arrays not in `sent` (which is updated). Numpy columns go as typed
    arrays, as st.plotly_chart sends them."""
    spec = plain(fig) if isinstance(fig, dict) else json.loads(
        plotly.io.to_json(fig, validate=False))
    blobs: dict[str, object] = {}
    layout = dict(spec.get("layout", {}))
    # Streamlit's chart theme does not reach a component: a plain white one instead. It is
    # ~8 kB and the same for every figure, so it goes once too.
    layout["template"] = blob(TEMPLATE, blobs)
    figure = {"data": split(spec.get("data", []), blobs), "layout": layout}
    new = {h: v for h, v in blobs.items() if h not in sent}
    sent.update(new)
    return {"figure": figure, "blobs": new}


def plotly_map(fig, key: str) -> dict | None:
    """Draw `fig` in the component; returns its value (the selection, see above)."""
    ss = st.session_state
    sent = ss.setdefault(f"_{key}_sent", set())
    value = ss.get(key) or {}
    if value.get("missing") and value.get("n", 0) > ss.get(f"_{key}_resent", 0):
        sent.clear()  # a new frame lacks arrays sent to an earlier one: send all again
        ss[f"_{key}_resent"] = value["n"]
    return _declared()(**args_of(fig, sent), clear=ss.get(f"_{key}_clear", 0), key=key,
                       default=None)


def consume(key: str) -> None:
    """An edit used the selection: it no longer counts here, and the frame drops it."""
    value = st.session_state.get(key)
    if isinstance(value, dict):
        st.session_state[f"_{key}_clear"] = value.get("n", 0)


def selected_points(key: str) -> list[dict]:
    """The points of the component's selection not yet consumed by an edit."""
    value = st.session_state.get(key)
    if not isinstance(value, dict) or value.get("n", 0) <= st.session_state.get(
            f"_{key}_clear", 0):
        return []
    return list(value.get("points") or [])
