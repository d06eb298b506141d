"""Iterations: what each round of the SEI loop did and what it changed.

Accuracy per iteration and evaluation set, with the 95% paired-bootstrap interval of the
change against the base model (iteration 0) as error bars and in the table; the fix rate
per error type and iteration; the loss curve of every training run; each iteration's
lineage (taxonomy snapshot, candidates, selections, adapter, evaluation runs with their
hashes and seed); and buttons for training, evaluation and the next iteration, each
with a time estimate first."""

import html
from dataclasses import asdict

import common
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pipeline import evaluate, report, views_loop
from pipeline.evaluate import EvalParams
from pipeline.loop import LoopParams
from pipeline.train import TrainParams

s = common.header("Iterations")


def pts(x: float | None, sign: bool = True) -> str:
    return "–" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def interval(r: dict) -> str:
    return "–" if r.get("lo") is None else f"[{pts(r['lo'])}, {pts(r['hi'])}] pts"


empty = views_loop.is_empty(s)
if empty:
    st.info("Nothing yet: run the quick start (Overview), then synthesize (Synthesis page). "
            "Or run the whole loop below: it evaluates the base model, synthesizes, selects, "
            "trains and evaluates.")
else:
    acc = views_loop.accuracy_rows(s)
    st.subheader("Accuracy per iteration")
    if not acc:
        st.info("No evaluation runs yet: evaluate iteration 0 (the base model) and a trained "
                "iteration below.")
    else:
        fig = go.Figure()
        for name in sorted({r["set"] for r in acc}):
            rs = sorted((r for r in acc if r["set"] == name), key=lambda r: r["iteration"])
            label = html.escape(name, quote=False)  # plotly draws a subset of HTML
            hover = [f"{label} · iteration {r['iteration']}<br>"
                     f"accuracy {pts(r['accuracy'], False)}%"
                     + (f"<br>change vs base {pts(r['diff'])} pts, 95% {interval(r)}"
                        f"<br>McNemar p {r['mcnemar_p']:.3g}" if r.get("diff") is not None
                        else "<br>base model" if r["iteration"] == 0 else "")
                     + f"<br>n {r['n']}" for r in rs]
            fig.add_trace(go.Scatter(
                x=[r["iteration"] for r in rs], y=[100 * (r["accuracy"] or 0) for r in rs],
                mode="lines+markers", name=label, hovertext=hover, hoverinfo="text",
                error_y={"type": "data", "symmetric": False,
                         "array": [100 * r["err_plus"] for r in rs],
                         "arrayminus": [100 * r["err_minus"] for r in rs]}))
        fig.update_layout(title={"text": "Accuracy per iteration"}, height=380, showlegend=True,
                          xaxis={"title": "iteration (0 = base model)", "dtick": 1},
                          yaxis={"title": "accuracy (%)"}, margin={"t": 50})
        st.plotly_chart(fig, key="it_acc")
        st.caption("Error bars: the 95% paired-bootstrap interval of the change against the "
                   "base model on the same problems, drawn around the accuracy.")
        st.dataframe(pd.DataFrame([{
            "iteration": r["iteration"], "set": r["set"],
            "accuracy": f"{pts(r['accuracy'], False)}%",
            "change vs base": "–" if r.get("diff") is None else f"{pts(r['diff'])} pts",
            "95% interval": interval(r),
            "McNemar p": "–" if r.get("mcnemar_p") is None else f"{r['mcnemar_p']:.3g}",
            "fixed": r.get("fixed"), "broken": r.get("broken"), "n": r["n"],
            "run_id": r["run_id"], "adapter": r["adapter"], "weights_hash": r["weights_hash"],
            "data_hash": r["data_hash"], "seed": r["seed"]} for r in acc]),
            hide_index=True, width="stretch", key="it_acc_table")

    fr = evaluate.fix_rates(s)
    st.subheader("Fix rate by error type")
    if not fr:
        st.caption("No train check yet: evaluating a trained iteration reruns the base "
                   "model's train problems, which gives each error type's fix rate.")
    else:
        df = pd.DataFrame(fr)
        df["type"] = df["type_id"].astype(str) + ": " + df["title"].astype(str)
        z = df.pivot_table(index="type", columns="iteration", values="fix_rate", aggfunc="first")
        n = df.pivot_table(index="type", columns="iteration", values="n", aggfunc="first")
        fx = df.pivot_table(index="type", columns="iteration", values="fixed", aggfunc="first")
        # by type id, the first at the top (a heatmap's rows go bottom-up)
        order = list(dict.fromkeys(df.sort_values("type_id", ascending=False)["type"]))
        z, n, fx = z.reindex(order), n.reindex(order), fx.reindex(order)
        text = [[f"{int(fx.loc[t, i])}/{int(n.loc[t, i])} fixed" if pd.notna(n.loc[t, i]) else ""
                 for i in z.columns] for t in z.index]
        hm = go.Figure(go.Heatmap(
            z=(100 * z).values.tolist(), x=[f"iteration {i}" for i in z.columns],
            y=[common._snip(t, 60) for t in z.index], text=text, texttemplate="%{text}",
            colorscale="Greens", zmin=0, zmax=100, colorbar={"title": "fixed %"},
            hovertemplate="%{y}<br>%{x}<br>%{z:.0f}% fixed (%{text})<extra></extra>"))
        hm.update_layout(title={"text": "Fix rate by error type"},
                         height=max(260, 40 + 28 * len(z.index)), margin={"t": 50})
        st.plotly_chart(hm, key="it_fix")
        new = df.groupby("iteration")["new_errors"].first()
        st.caption("New errors (right with the base model, wrong now): "
                   + ", ".join(f"iteration {i}: {int(v)}" for i, v in new.items()))

    st.subheader("Training loss")
    curves = views_loop.loss_curves(s)
    if not curves:
        st.caption("No training runs yet.")
    else:
        lf = go.Figure()
        for t in curves:
            st_ = t["steps"]
            lf.add_trace(go.Scatter(x=[x["step"] for x in st_], y=[x["loss"] for x in st_],
                                    mode="lines+markers", name=f"{t['train_id']} ({t['status']})"))
        lf.update_layout(title={"text": "Loss per step"}, height=340, margin={"t": 50},
                         xaxis={"title": "step"}, yaxis={"title": "loss"})
        st.plotly_chart(lf, key="it_loss")

    st.subheader("Lineage")
    lineage = report.iteration_table(s)
    for it in lineage:
        n_ = it["iteration"]
        label = (f"iteration {n_} · base model" if n_ == 0 else
                 f"iteration {n_} · {it.get('mode')} · {it.get('status')}")
        with st.expander(label, expanded=it is lineage[-1]):
            if n_ > 0 and "n_types" in it:
                st.text(f"taxonomy snapshot: {it['n_types']} types, {it['n_edits']} edits "
                        f"(clustering {it['clustering_id']})")
                st.text(f"candidates: {it['n_kept']} kept of {it['n_candidates']}")
                sel = it["selections"]
                if sel:
                    st.dataframe(pd.DataFrame([{"method": m, **{k: v for k, v in x.items()
                                                                if k != "stats"}}
                                               for m, x in sel.items()]),
                                 hide_index=True, key=f"it_sel_{n_}")
                for t in it["trains"]:
                    st.text(f"training {t['train_id']} ({t['mode']}, {t['method']}, "
                            f"{t['n_examples']} examples): {t['status']}")
                    st.text(f"adapter {t['adapter_dir']} · hash {t['adapter_hash']}")
            if it["eval"]:
                st.dataframe(pd.DataFrame([{
                    "set": k, "run_id": v["run_id"], "accuracy": f"{pts(v['accuracy'], False)}%",
                    "weights_hash": v["weights_hash"], "data_hash": v["data_hash"],
                    "seed": v["seed"], "adapter": v["adapter"]} for k, v in it["eval"].items()]),
                    hide_index=True, key=f"it_eval_{n_}")
            else:
                st.caption("no evaluation runs")

st.subheader("Run")
its = views_loop.iteration_choices(s)
nxt = views_loop.next_iteration(s)
tab_tr, tab_ev, tab_it = st.tabs(["Train", "Evaluate", "Next iteration"])
with tab_tr:
    c1, c2, c3, c4 = st.columns(4)
    t_it = c1.number_input("iteration", 1, 100, int(its[-1]), key="tr_it")
    t_mode = c2.selectbox("mode", ["scratch", "iterative"], key="tr_mode")
    t_method = c3.selectbox("selected by", ["oneshot", "proxy", "random"], key="tr_method")
    t_epochs = c4.number_input("epochs", 1, 50, 3, key="tr_epochs")
    tp = TrainParams(iteration=int(t_it), mode=t_mode, method=t_method, epochs=int(t_epochs))
    te = views_loop.train_estimate(s, tp)
    if "error" in te:
        st.caption(te["error"])
    else:
        st.caption(f"Estimate: {te['n_examples']} examples × {tp.epochs} epochs × ~150 tokens "
                   f"÷ ~130 tokens/s ≈ {common.duration(te['seconds'])} "
                   f"({te['steps']} steps; from {', '.join(te['selection_ids'])})")
    if st.button("Train", key="tr_go", disabled="error" in te or not te.get("n_examples")):
        common.launch(s, "train", asdict(tp), "iterations")
with tab_ev:
    sets_all = evaluate.default_sets(s) or ["demo/test"]
    c1, c2, c3 = st.columns([1, 3, 1])
    e_it = c1.number_input("iteration (0 = base)", 0, 100, 0 if empty else int(its[-1]),
                           key="ev_it")
    e_sets = c2.multiselect("evaluation sets", sets_all, default=sets_all, key="ev_sets")
    e_limit = c3.number_input("problems per set (0: all)", 0, 100_000, 200, key="ev_limit")
    ep = EvalParams(iteration=int(e_it), sets=list(e_sets), limit=int(e_limit) or None)
    ee = views_loop.eval_estimate(s, ep)
    st.caption(f"Estimate: {ee['n_problems']} problems ("
               + common.md_text(", ".join(f"{k} {v}" for k, v in ee["problems"].items()))
               + f") × ~80 tokens ÷ ~200 tokens/s ≈ {common.duration(ee['seconds'])}")
    if st.button("Evaluate", key="ev_go", disabled=not e_sets):
        common.launch(s, "evaluate", asdict(ep), "iterations")
with tab_it:
    c1, c2 = st.columns(2)
    l_mode = c1.selectbox("mode", ["scratch", "iterative"], key="lp_mode")
    l_review = c2.checkbox("stop for review before synthesis", key="lp_review")
    lp = LoopParams(iterations=nxt, mode=l_mode, review=l_review)
    le = views_loop.iterate_estimate(s, lp)
    if le["parts"]:
        st.caption(f"Runs iterations up to {nxt} (finished stages are skipped). Rough "
                   f"estimate: ~{common.duration(60 * le['minutes'])} ("
                   + ", ".join(f"{k} {v} min" for k, v in le["parts"].items()) + ")")
    else:
        st.caption(f"Runs iterations up to {nxt}: every stage of it has finished, so a run "
                   "only checks that and marks it done (under a minute).")
    if st.button(f"Run iteration {nxt}", key="lp_go", type="primary"):
        common.launch(s, "iterate", asdict(lp), "iterations")
common.follow_jobs(s, ("train", "evaluate", "iterate"), "iterations")
