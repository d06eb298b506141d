"""Selection: which candidates help the target model most.

Score distributions per error type with a threshold preview (how many candidates each
top-fraction cut keeps, per type, ranked as selection ranks); the top candidates with
their score, accuracy on the good and bad halves of the dev set and the dev problems they
fixed or broke; the proxy's Spearman correlation with the one-shot score when both ran;
and launch buttons for one-shot / proxy / random scoring, each with a time estimate."""

from dataclasses import asdict

import common
import pandas as pd
import plotly.express as px
import streamlit as st

from pipeline.loop import views
from pipeline.stages import select

s, its, it_n = common.iteration_header("Selection", key="sel_it")
sels = list(reversed(s.selections(it_n)))

st.subheader("Scores")
if not sels:
    st.info(f"No selection for iteration {it_n} yet: synthesize candidates (Synthesis page), "
            "then score them below.")
else:
    names = {x["selection_id"]: f"{x['method']} · {x['selection_id']} · {x['n_selected']}/"
             f"{x['n_scored']} selected · {x['status']}" for x in sels}
    # newest first: open on the newest finished one-shot selection, else the newest
    # finished one (never a cancelled or running one while a finished one exists)
    done = [i for i, x in enumerate(sels) if x["status"] == "finished"]
    first = next((i for i in done if sels[i]["method"] == "oneshot"), done[0] if done else 0)
    # a selection finished since the last run (a job just ended) is shown at once
    common.open_on_newest("sel_pick", sels[done[0] if done else 0]["selection_id"], it_n)
    sid = st.selectbox("selection", list(names), format_func=names.get, key="sel_pick",
                       # a valid choice in force wins (so no default is passed with it)
                       index=0 if st.session_state.get("sel_pick") in names else first)
    sel = s.selection(sid)
    scores = s.cand_scores(sid)
    stats = sel["stats"] or {}
    seed = int((sel["params"] or {}).get("seed") or 0)
    m = st.columns(4)
    m[0].metric("scored", len(scores))
    m[1].metric("selected", sum(bool(x["selected"]) for x in scores))
    baseline = sel["method"] in ("random", "all")
    # a random draw or "all" has no score (its numbers are draw order): none is shown
    m[2].metric("mean score", f"{stats['score_mean']:.3f}"
                if "score_mean" in stats and not baseline else "–")
    rho = next((x["stats"] for x in sels if (x["stats"] or {}).get("spearman_proxy_oneshot")
                is not None), None)
    m[3].metric("Spearman proxy vs one-shot",
                f"{rho['spearman_proxy_oneshot']:.2f}" if rho else "–",
                help="Stored when both the proxy and the one-shot scores exist for the same "
                     "candidates (at least 3).")
    if not scores:
        st.info("Nothing scored yet in this selection.")
    elif baseline:  # a baseline's "scores" are draw order, not quality: no distribution
        pair = (sel["params"] or {}).get("size_of")
        what = ("every kept candidate" if sel["method"] == "all" else
                f"{sum(bool(x['selected']) for x in scores)} of {len(scores)} kept candidates "
                f"drawn uniformly (seed {seed})")
        st.info(f"A {sel['method']} baseline: {what}"
                + (f", as many as selection `{pair}` kept, from the same pool." if pair
                   else "."))
        st.dataframe(pd.DataFrame(views.baseline_by_type(s, sid, pair)), hide_index=True,
                     key="sel_baseline")
    else:
        # type titles are user text and plotly draws a subset of HTML: escaped for charts
        df = pd.DataFrame([{"cand_id": x["cand_id"],
                            "type": common._snip(f"{x['type_id']}: {x['type_title']}", 60),
                            "score": x["score"], "selected": bool(x["selected"])} for x in scores])
        saved_top = float((sel["params"] or {}).get("top") or 0.25)
        n = len(scores)
        default = saved_top if saved_top < 1 else min(1.0, saved_top / n)
        top = st.slider("threshold preview: keep the top fraction", 0.01, 1.0,
                        float(round(max(0.01, default), 2)), 0.01, key="sel_top")
        cut = views.cut_score(scores, top, seed)
        # what no demonstration scores: one-shot's dev set is right zero-shot on its good
        # half and wrong on its bad half, so (1 + 0) / 2; the proxy's gain is 0
        zero = {"oneshot": 0.5, "proxy": 0.0}.get(sel["method"])
        if zero is not None:
            below = sum(x["score"] < zero for x in scores)
            st.caption(f"{below} of {n} candidates score below the zero-shot line ({zero:.3f}):"
                       " as a demonstration they do worse than none.")
        kind = st.radio("chart", ["box", "histogram"], horizontal=True, key="sel_chart")
        if kind == "box":
            fig = px.box(df, x="type", y="score", points="all", hover_data=["cand_id"],
                         title="Scores per error type")
            line = fig.add_hline
        else:
            fig = px.histogram(df, x="score", color="type", barmode="overlay", nbins=30,
                               title="Scores per error type")
            line = fig.add_vline
        if cut is not None:
            line(cut, line_dash="dash", annotation_text=f"top {100 * top:.0f}% cut ({cut:.3f})")
        if zero is not None:
            line(zero, line_dash="dot", line_color="grey",
                 annotation_text=f"zero-shot ({zero:.3f})", annotation_position="bottom right")
        fig.update_layout(height=380, margin={"t": 40})
        st.plotly_chart(fig, key="sel_fig")
        tops = sorted({0.05, 0.1, 0.25, 0.5, round(top, 2)})
        prev = pd.DataFrame(views.cut_preview(scores, tops, seed))
        st.caption(f"How many candidates each cut keeps, per type ({n} scored; ties broken "
                   "by the selection's seed, as selection does)")
        st.dataframe(prev, hide_index=True, width="stretch", key="sel_preview")

        st.subheader("Top candidates")
        k = st.number_input("show", 1, max(1, n), min(20, n), key="sel_n")
        top_rows = scores[:int(k)]
        st.dataframe(pd.DataFrame([{
            "rank": x["rank"], "selected": bool(x["selected"]), "cand_id": x["cand_id"],
            "type": f"{x['type_id']}: {x['type_title']}", "score": x["score"],
            "good_acc": x["good_acc"], "bad_acc": x["bad_acc"],
            "below zero-shot": zero is not None and x["score"] < zero,
            "fixed − broken": len(x["fixed"] or []) - len(x["broken"] or []),
            "fixed": ", ".join(map(str, x["fixed"] or [])),
            "broken": ", ".join(map(str, x["broken"] or [])),
            "question": x["question"]} for x in top_rows]),
            hide_index=True, width="stretch", key="sel_top_table")
        pick = {x["cand_id"]: x for x in top_rows}
        cid = st.selectbox("candidate", list(pick), key="sel_cand",
                           format_func=lambda i: f"#{i} · score {pick[i]['score']:.3f} · "
                           f"{' '.join((pick[i]['question'] or '').split())[:80]}")
        c = pick[cid]
        left, right = st.columns(2)
        with left:
            st.caption("question")
            st.code(c["question"] or "", language=None, wrap_lines=True)
            st.caption("solution")
            st.code(c["solution"] or "", language=None, wrap_lines=True)
            st.text(f"answer: {c['answer']}")
        with right:
            changes = views.dev_changes(s, sid, it_n, c)
            st.markdown(f"**Dev problems it fixed ({len(c['fixed'] or [])}) or broke "
                        f"({len(c['broken'] or [])})**")
            if not changes:
                st.caption("none: it changed no dev verdict"
                           if sel["method"] == "oneshot" else
                           f"({sel['method']} scoring keeps no verdicts)")
            for ch in changes:
                with st.container(border=True):
                    st.caption(common.md_text(f"{ch['change']} · {ch['pid']} ({ch['half']} "
                                              f"half) · reference {ch['answer']}"))
                    st.code(ch["question"] or "", language=None, wrap_lines=True)
                    st.caption("zero-shot output")
                    st.code(ch["zero_shot_output"] or "", language=None, wrap_lines=True)
                    st.caption("with this candidate as the example (answer "
                               + common.md_text(str(ch["one_shot_pred"])) + ")")
                    st.code(ch["one_shot_output"] or "", language=None, wrap_lines=True)

    both = views.proxy_vs_oneshot(s, it_n)
    if both:
        st.subheader("Proxy vs one-shot")
        sc = pd.DataFrame(both)
        sc["type"] = [common._snip(f"{a}: {b}", 60) for a, b in zip(sc.type_id, sc.type_title)]
        fig = px.scatter(sc, x="oneshot", y="proxy", color="type",
                         hover_data=["cand_id"], title="Proxy score vs one-shot score")
        fig.update_layout(height=360, margin={"t": 40})
        st.plotly_chart(fig, key="sel_scatter")
        if rho:
            st.caption(f"Spearman {rho['spearman_proxy_oneshot']:.3f} over "
                       f"{rho.get('spearman_n')} candidates")

st.subheader("Score candidates")
c1, c2, c3, c4, c5 = st.columns(5)
SP = select.SelectParams
method = common.param_input(c1, SP, "method", "method", "sel_method")
n_good = common.param_input(c2, SP, "n_good", "dev: right answers", "sel_good", 1, 500)
n_bad = common.param_input(c3, SP, "n_bad", "dev: wrong answers", "sel_bad", 1, 500)
keep = common.param_input(c4, SP, "top", "keep top (fraction < 1, else a count)", "sel_keep",
                          0.01, 10_000.0)
limit = c5.number_input("score only the first N (0: all)", 0, 100_000, 0, key="sel_limit")
p = select.SelectParams(iteration=int(it_n), method=method, n_good=int(n_good),
                        n_bad=int(n_bad), top=float(keep), limit=int(limit) or None)
est = select.estimate(s, p)
st.caption(f"Estimate: {est['n_candidates']} kept candidates to score with {method}, "
           f"~{est['minutes']} min on this machine, keeping {est['n_selected']}."
           + (" The dev set of an iteration is drawn once and reused."
              if method in ("oneshot", "proxy") else " Needs no model."))
if st.button(f"Score with {method}", key="sel_go", type="primary",
             disabled=not est["n_candidates"]
             or common.running_job(s, "select", asdict(p)) is not None):
    common.launch(s, "select", asdict(p), "select")
if not est["n_candidates"]:
    st.caption(f"Iteration {it_n} has no kept candidates to score yet.")
common.job_panel(s, ("select",), "select")
