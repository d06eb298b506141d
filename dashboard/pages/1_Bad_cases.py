"""Bad cases: a filterable table of judged generations and a detail view of one.

A case is chosen by its id, never by its row number: a row selection belongs to the
table it was made in, so changing a filter draws a new table and clears it. `?case=ID`
(from the Error map) opens that case."""

import json
import zlib

import common
import pandas as pd
import streamlit as st

from pipeline.analysis import review, search, taxonomy

s = common.header("Bad cases")
ss = st.session_state

rows = review.with_verdicts(s, s.generations_view())  # a person's verdict wins the judge's
if not rows:
    st.info("No generations yet: run an extraction (the quick start on the Overview page).")
    common.page_link("Overview", "Open the quick start", ":material/play_arrow:")
    st.stop()

tax = taxonomy.current(s)

f0, f1, f2, f3, f4 = st.columns([1.4, 1, 1, 2, 2])
# by default the cases analysis reads: extraction runs, never an evaluation's test answers
scope = f0.selectbox("runs", ["extractions (what analysis reads)",
                              "all, evaluations included"], key="f_runs")
datasets = f1.multiselect("dataset", sorted({r["dataset"] for r in rows}), key="f_dataset")
verdict = f2.selectbox("answers", ["wrong only", "correct only", "all"], key="f_verdict")
type_names = {f"{t.type_id}: {t.title}": t.type_id for t in tax.visible_types()}
# Keyed by the types on offer: when they change (an edit), the filter starts afresh.
etype = f3.selectbox("error type", ["any"] + list(type_names),
                     key=f"f_type~{zlib.crc32(json.dumps(list(type_names)).encode())}")
text = f4.text_input("keyphrase or question contains", key="f_text")

query = st.text_input("search by words and meaning (keyphrases, questions, outputs)",
                      key="f_search", placeholder="e.g. forgot to convert units")
view = taxonomy.find_generations(rows, tax, datasets, verdict,
                                 None if etype == "any" else type_names[etype], text,
                                 analysed_only=scope.startswith("extractions"))
if query.strip():  # the hit cases, best first (words, then nearest in meaning)
    hits = search.search(s, query, tax)
    rank = {c: i for i, c in enumerate(hits.case_ids())}
    view = sorted((v for v in view if v["case_id"] in rank), key=lambda v: rank[v["case_id"]])
    st.caption(f"Search “{query}”: {len(hits.cases)} cases contain it, "
               f"{len(hits.similar)} keyphrases nearest in meaning")
sig = json.dumps([scope, datasets, verdict, etype, text, query, len(view)])
url_case = st.query_params.get("case")
if ss.get("cases_sig") not in (None, sig):  # filters changed: drop the chosen case
    ss["chosen"] = None
    if url_case:
        del st.query_params["case"]
        url_case = None
ss["cases_sig"] = sig
if url_case != ss.get("url_case"):  # a case sent here by link
    ss["url_case"] = url_case
    if url_case and url_case.isdigit():
        ss["chosen"] = next((x["key"] for x in view if x["case_id"] == int(url_case)), None)

st.caption(f"{len(view)} of {len(rows)} generations")
cols = ["case_id", "dataset", "split", "pid", "run_kind", "model", "correct", "reviewed",
        "answer", "pred", "types", "question", "run_id"]
shown = pd.DataFrame(view, columns=cols + ["key"])
event = st.dataframe(shown[cols], hide_index=True, width="stretch", on_select="rerun",
                     selection_mode="single-row", key=f"cases-{zlib.crc32(sig.encode())}")
sel = event.selection.rows if event and event.selection else []
if sel and sel[0] < len(shown):
    ss["chosen"] = shown["key"].iloc[sel[0]]
    ss["had_selection"] = True
elif ss.pop("had_selection", False):  # the row was deselected
    ss["chosen"] = None

r = next((x for x in view if x["key"] == ss.get("chosen")), None)
if r is None:
    st.caption("Select a row for its details.")
    st.stop()

st.divider()
cid = r["case_id"]
st.subheader(f"{r['dataset']} / {r['pid']}" + (f" · bad case {cid}" if cid is not None else ""))
case = taxonomy.case_view(s, tax, cid) if cid is not None else None
if case is not None and any(k["on_map"] for k in case["keyphrases"]):
    common.page_link("2_Error_map", "Show on the map", ":material/map:", case=cid)
a, b = st.columns(2)
with a:
    st.markdown("**Question**")
    st.text(r["question"])
    st.markdown("**Reference solution**")
    st.code(r["solution"] or "", language=None, wrap_lines=True)
    st.markdown(f"**Reference answer:** `{r['answer']}`")
with b:
    st.markdown(f"**Model output** ({r['model_id']}, run `{r['run_id']}`)"
                + (", evidence highlighted" if case else ""))
    if case:
        with st.container(border=True):
            st.markdown(common.highlighted(r["output"] or "", [k["span"] for k in
                                                               case["keyphrases"] if k["span"]]))
    else:
        st.code(r["output"] or "", language=None, wrap_lines=True)
    judge = json.loads(r["judge"]) if isinstance(r["judge"], str) else (r["judge"] or {})
    st.markdown("**Grading**")
    st.json({"extracted answer": r["pred"], "extraction": judge.get("method"),
             "correct": bool(r["correct"]), "judged correct": bool(r["judged"]),
             "verdict by": "a person (Review)" if r["reviewed"] else "the judge",
             "detail": judge.get("detail"),
             "completion tokens": int(r["completion_tokens"] or 0), "error": r["error"]})
if case is not None and any(k["on_map"] for k in case["keyphrases"]):
    st.markdown("**Nearest cases** (by the mean embedding of their keyphrases)")
    near = search.nearest_cases(s, tax, cid, k=5)
    st.dataframe(pd.DataFrame(near, columns=["case_id", "score", "keyphrases", "question"]),
                 hide_index=True, width="stretch", key="nearest")
    for n in near[:5]:
        common.page_link("1_Bad_cases", f"case {n['case_id']} ({n['score']:.2f})",
                         ":material/arrow_forward:", case=n["case_id"])
if case is not None:
    st.markdown("**Error keyphrases**")
    if not case["keyphrases"]:
        st.caption("Not analysed yet: the quick start (Overview) or the loop (Iterations) "
                   "writes keyphrases for every bad case.")
    st.dataframe(pd.DataFrame([{
        "keyphrase": k["text"], "evidence": k["evidence"], "written by": k["analyzer"],
        "error type": k["type"], "excluded": k["excluded"]} for k in case["keyphrases"]]),
        hide_index=True, width="stretch")
