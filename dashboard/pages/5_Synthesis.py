"""Synthesis: new training problems per error type, with what became of each.

Per type, how many proposals were generated, rejected (failed verification), near
duplicates (Rouge-L against train problems and earlier candidates), contaminated (close
to a test split) and kept; a type's candidates beside the bad cases they came from; and a
launch form that shows the estimate (calls, proposals, tokens and cost, or minutes) before
it submits a `synthesize` job. All text is shown as text."""

from dataclasses import asdict

import common
import pandas as pd
import streamlit as st

from pipeline.loop import views
from pipeline.stages import synthesize

s, its, it_n = common.iteration_header("Synthesis", key="syn_it")
COUNTS = ["type_id", "title", "generated", "rejected", "near_duplicate", "contaminated", "kept"]

bs = views.batches(s, it_n)

st.subheader("Candidates per error type")
if not bs:
    st.info(f"No synthesis batch for iteration {it_n} yet. Run the quick start (Overview) "
            "so the bad cases are clustered into error types, then launch a batch below.")
else:
    names = {b["batch_id"]: f"{b['batch_id']} · {b['synthesizer']} · {b['status']} · "
             f"{str(b['created_at'])[:16]}" for b in bs}
    # a batch that appeared since the last run (a job this page launched) is shown at once:
    # the picker keeps a person's choice otherwise
    common.open_on_newest("syn_batch", bs[0]["batch_id"], it_n)
    bid = st.selectbox("batch", list(names), format_func=names.get, key="syn_batch")
    counts = synthesize.summary(s, bid)
    df = pd.DataFrame(counts, columns=COUNTS)
    st.dataframe(df, hide_index=True, width="stretch", key="syn_counts")
    tot = {c: int(df[c].sum()) for c in COUNTS[2:]}
    st.caption(" · ".join(f"{v} {k.replace('_', '-')}" for k, v in tot.items())
               + (f" · {100 * tot['kept'] / tot['generated']:.0f}% kept"
                  if tot["generated"] else ""))

    if counts:
        types = {r["type_id"]: f"{r['type_id']}: {r['title']}" for r in counts}
        c1, c2 = st.columns([3, 1])
        tid = c1.selectbox("error type", list(types), format_func=types.get, key="syn_type")
        status = c2.selectbox("status", ["all", *views.CAND_STATUSES], key="syn_status")
        cands = views.type_candidates(s, bid, tid, None if status == "all" else status)
        if not cands:
            st.info("No candidates of this type with that status.")
        else:
            table = pd.DataFrame([{
                "cand_id": c["cand_id"], "status": c["status"], "reason": c["reason"],
                "question": c["question"], "answer": c["answer"],
                "nearest_score": c["nearest_score"], "nearest": c["nearest"],
                "source_cases": ", ".join(str(i) for i in c["source_cases"] or [])}
                for c in cands])
            st.dataframe(table, hide_index=True, width="stretch", key="syn_cands")
            pick = {c["cand_id"]: c for c in cands}
            cid = st.selectbox(
                "candidate", list(pick), key="syn_cand",
                format_func=lambda i: f"#{i} · {pick[i]['status']} · "
                                      f"{' '.join((pick[i]['question'] or '').split())[:80]}")
            c = pick[cid]
            left, right = st.columns(2)
            with left:
                st.markdown(f"**Candidate #{cid}** · {c['status']}")
                if c["reason"]:
                    st.text(f"reason: {c['reason']}")
                st.caption("question")
                st.code(c["question"] or "(none)", language=None, wrap_lines=True)
                st.caption("solution")
                st.code(c["solution"] or "(none)", language=None, wrap_lines=True)
                st.text(f"answer: {c['answer']}")
                if c["nearest"]:
                    st.caption(f"nearest earlier problem (Rouge-L {c['nearest_score']:.2f})")
                    st.code(c["nearest"], language=None, wrap_lines=True)
                if c["contamination"]:
                    st.caption("contamination check")
                    st.json(c["contamination"], expanded=False)
                prov = {k: c[k] for k in ("synthesizer", "model", "prompt_version", "batch_id")}
                st.caption(common.md_text(" · ".join(f"{k} {v}" for k, v in prov.items()
                                                     if v)))
            with right:
                st.markdown(f"**The bad cases it came from** ({len(c['sources'])})")
                for b in c["sources"]:
                    with st.container(border=True):
                        st.caption(common.md_text(f"case {b['case_id']} · {b['dataset']}/"
                                                  f"{b['split']} · {b['pid']}"))
                        st.code(b["question"] or "", language=None, wrap_lines=True)
                        st.caption("the model's wrong output")
                        st.code(b["output"] or "", language=None, wrap_lines=True)
                        st.text(f"model's answer: {b['pred']} · reference: {b['answer']}")
                if not c["sources"]:
                    st.caption("(no stored bad cases)")

st.subheader("Launch a synthesis batch")
c0, c1, c2, c3, c4, c5 = st.columns(6)
new_it = max(its) + 1
for_it = c0.number_input("for iteration", 1, new_it, int(it_n), key="syn_for_it",
                         help=f"Iteration {new_it} does not exist yet: launching for it "
                              "freezes the error types in force now as its taxonomy.")
SP = synthesize.SynthParams
budget = common.param_input(c1, SP, "budget", "budget (proposals)", "syn_budget", 1, 100_000,
                            step=16)
per_call = common.param_input(c2, SP, "per_call", "per call", "syn_per_call", 1, 100)
k = common.param_input(c3, SP, "k", "bad cases shown per call (k)", "syn_k", 1, 20)
alloc = common.param_input(c4, SP, "allocation", "allocation", "syn_alloc")
synth = common.param_input(c5, SP, "synthesizer", "synthesizer", "syn_synth")
p = synthesize.SynthParams(iteration=int(for_it), budget=int(budget), per_call=int(per_call),
                           k=int(k), allocation=alloc, synthesizer=synth)
try:
    est = synthesize.estimate(s, p)
except ValueError as e:
    est = None
    st.error(str(e))
if est:
    m = st.columns(4)
    m[0].metric("synthesizer", est["synthesizer"])
    m[1].metric("calls", est["n_calls"])
    m[2].metric("proposals", est["n_proposals"])
    if "minutes" in est:
        m[3].metric("time (offline)", f"~{est['minutes']} min")
    else:
        cost = est.get("cost_usd")
        m[3].metric("cost", f"${cost:.2f}" if cost is not None else "no price")
        st.caption(f"{est['prompt_tokens']:,} prompt + {est['completion_tokens']:,} completion "
                   "tokens (rough: ~4 characters a token); prices per million tokens from "
                   "pipeline/prices.json, overridden by data/prices.json"
                   + ("" if est.get("price_per_mtok") else " (none listed for this model)"))
    if not est["n_calls"]:
        st.warning("No error types to synthesize from: run the quick start first.")
    if est.get("unreached"):
        st.warning(f"This batch cannot reach {est['unreached']} bad cases: "
                   + "; ".join(est["unreached_why"]) + ".", icon=":material/visibility_off:")
if st.button("Launch synthesis", key="syn_go", type="primary",
             disabled=not est or not est["n_calls"]
             or common.running_job(s, "synthesize", asdict(p)) is not None):
    common.launch(s, "synthesize", asdict(p), "synthesize")
common.job_panel(s, ("synthesize",), "synthesize")
