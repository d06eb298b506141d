"""Bad cases: a filterable table of judged generations and a detail view of one."""

import json

import pandas as pd
import streamlit as st

import common
from pipeline import taxonomy

s = common.header("Bad cases")

rows = s.generations_view()
if not rows:
    st.info("No generations yet: run an extraction (Overview → quick start, or `sei extract`).")
    st.stop()

tax = taxonomy.current(s)
# Error types of each bad case, through its keyphrases in the current taxonomy.
case_types: dict[int, set[int]] = {}
for p in tax.points:
    if p["type"] is not None and not p["excluded"]:
        case_types.setdefault(p["case_id"], set()).add(p["type"])
kp_text: dict[int, list[str]] = {}
for p in tax.points:
    kp_text.setdefault(p["case_id"], []).append(p["text"])

df = pd.DataFrame(rows)
df["types"] = df["case_id"].map(
    lambda c: ", ".join(tax.types[t].title for t in sorted(case_types.get(c, ())) if t in tax.types)
    if pd.notna(c) else "")

f1, f2, f3, f4 = st.columns([1, 1, 2, 2])
datasets = f1.multiselect("dataset", sorted(df["dataset"].unique()))
verdict = f2.selectbox("answers", ["wrong only", "correct only", "all"])
type_names = {f"{t.type_id}: {t.title}": t.type_id for t in tax.visible_types()}
etype = f3.selectbox("error type", ["any"] + list(type_names))
text = f4.text_input("keyphrase or question contains")

view = df
if datasets:
    view = view[view["dataset"].isin(datasets)]
if verdict == "wrong only":
    view = view[view["case_id"].notna()]
elif verdict == "correct only":
    view = view[view["correct"] == True]  # noqa: E712 (pandas)
if etype != "any":
    tid = type_names[etype]
    view = view[view["case_id"].map(lambda c: tid in case_types.get(c, ()))]
if text:
    t = text.lower()
    view = view[view.apply(lambda r: t in r["question"].lower() or any(
        t in k.lower() for k in kp_text.get(r["case_id"], [])), axis=1)]

st.caption(f"{len(view)} of {len(df)} generations")
shown = view[["case_id", "run_id", "dataset", "pid", "correct", "answer", "pred", "types",
              "question"]].reset_index(drop=True)
event = st.dataframe(shown, hide_index=True, width="stretch", on_select="rerun",
                     selection_mode="single-row", key="cases")
sel = event.selection.rows if event and event.selection else []
if not sel:
    st.caption("Select a row for its details.")
    st.stop()

r = view.iloc[sel[0]]
st.divider()
st.subheader(f"{r['dataset']} / {r['pid']}" + (f" · bad case {int(r['case_id'])}"
                                               if pd.notna(r["case_id"]) else ""))
a, b = st.columns(2)
with a:
    st.markdown("**Question**")
    st.text(r["question"])
    st.markdown("**Reference solution**")
    st.code(r["solution"] or "", language=None, wrap_lines=True)
    st.markdown(f"**Reference answer:** `{r['answer']}`")
with b:
    st.markdown(f"**Model output** ({r['model_id']}, run `{r['run_id']}`)")
    st.code(r["output"] or "", language=None, wrap_lines=True)
    judge = json.loads(r["judge"]) if isinstance(r["judge"], str) else (r["judge"] or {})
    st.markdown("**Grading**")
    st.json({"extracted answer": r["pred"], "extraction": judge.get("method"),
             "correct": bool(r["correct"]), "detail": judge.get("detail"),
             "completion tokens": int(r["completion_tokens"] or 0), "error": r["error"]})
if pd.notna(r["case_id"]):
    cid = int(r["case_id"])
    kps = s.case_keyphrases(cid)
    st.markdown("**Error keyphrases**")
    if not kps:
        st.caption("Not analysed yet (`sei analyze`).")
    by_kp = {p["kp_id"]: p for p in tax.points}
    st.dataframe(pd.DataFrame([{
        "keyphrase": k["text"], "evidence": k["evidence"], "written by": k["analyzer"],
        "error type": (tax.types[by_kp[k["kp_id"]]["type"]].title
                       if k["kp_id"] in by_kp and by_kp[k["kp_id"]]["type"] in tax.types
                       else "unassigned"),
        "excluded": bool(by_kp.get(k["kp_id"], {}).get("excluded", False))} for k in kps]),
        hide_index=True, width="stretch")
