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

from pipeline.loop import costs, views
from pipeline.loop.iterate import LoopParams
from pipeline.loop.presets import flat, resolve
from pipeline.problems import sets
from pipeline.stages import evaluate
from pipeline.stages.evaluate import EvalParams
from pipeline.stages.train import TrainParams

s = common.header("Iterations")


def pts(x: float | None, sign: bool = True) -> str:
    return "–" if x is None else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def interval(r: dict) -> str:
    return "–" if r.get("lo") is None else f"[{pts(r['lo'])}, {pts(r['hi'])}] pts"


def unmatchable_warnings(rows: list[dict]) -> None:
    """Under the figures: each evaluated set whose problems hold references that cannot
    match themselves (scored wrong whatever the model answers), how many, once per set
    and count."""
    said = set()
    for r in rows:
        ds, sp = r["set"].split("/", 1)
        n = len(evaluate.unmatchable(s, ds, sp, pids={x["pid"]
                                                      for x in s.run_items(r["run_id"])}))
        if n and (r["set"], n) not in said:
            said.add((r["set"], n))
            st.warning(evaluate.unmatchable_line(r["set"], n) + "; the accuracy counts "
                       "them as wrong.", icon=":material/rule:")


empty = views.is_empty(s)
if empty:
    st.info("Nothing yet: run the quick start (Overview), then synthesize (Synthesis page). "
            "Or run the whole loop below: it evaluates the base model, synthesizes, selects, "
            "trains and evaluates.")
else:
    acc = views.accuracy_rows(s)
    st.subheader("Accuracy per iteration")
    if not acc:
        st.info("No evaluation runs yet: evaluate iteration 0 (the base model) and a trained "
                "iteration below.")
    elif all(r["iteration"] == 0 for r in acc):
        # one point per line is no chart: the base model's accuracy, and what comes next
        st.info("Only the base model (iteration 0) is evaluated so far: "
                + "; ".join(f"{r['set']} {pts(r['accuracy'], False)}% (n {r['n']})"
                            for r in acc)
                + ". The chart starts once a trained iteration is evaluated (below).")
    else:
        fig = go.Figure()
        for arm, name in sorted({(r["arm"], r["set"]) for r in acc}):
            # the base model (iteration 0) starts every arm's line
            rs = sorted((r for r in acc if r["set"] == name and (
                r["arm"] == arm or r["iteration"] == 0)), key=lambda r: r["iteration"])
            label = html.escape(name if arm == "sei" else f"{name} ({arm})", quote=False)
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
            "iteration": r["iteration"], "arm": r["arm"], "set": r["set"],
            "accuracy": f"{pts(r['accuracy'], False)}%",
            "change vs base": "–" if r.get("diff") is None else f"{pts(r['diff'])} pts",
            "95% interval": interval(r),
            "McNemar p": "–" if r.get("mcnemar_p") is None else f"{r['mcnemar_p']:.3g}",
            "fixed": r.get("fixed"), "broken": r.get("broken"), "n": r["n"],
            "run_id": r["run_id"], "adapter": r["adapter"], "weights_hash": r["weights_hash"],
            "data_hash": r["data_hash"], "seed": r["seed"]} for r in acc]),
            hide_index=True, width="stretch", key="it_acc_table")
    unmatchable_warnings(acc)

    arm_rows = []
    for it in views.arms_table(s):
        for label, cmp_ in ([(f"{a} vs base", c) for a, c in it["arms"].items()]
                            + [(f"sei vs {a}", c) for a, c in it["sei_vs"].items()]):
            for s_, d in cmp_["sets"].items():
                arm_rows.append({"iteration": it["iteration"], "comparison": label, "set": s_,
                                 "change": f"{pts(d['diff'])} pts", "95% interval": interval(d),
                                 "n": d["n"]})
            for g, avg in cmp_["averages"].items():
                for how in ("micro", "macro"):
                    d = avg[how]
                    arm_rows.append({"iteration": it["iteration"], "comparison": label,
                                     "set": f"{how} average, {g.replace('_', '-')}",
                                     "change": f"{pts(d['diff'])} pts",
                                     "95% interval": interval(d), "n": d["n"]})
    if arm_rows:
        st.subheader("Arms side by side")
        st.caption("Each arm trained the same way on its own selection (sei: one-shot; "
                   "random: as many of the same kept candidates; all: every kept one), paired "
                   "on the same problems: against the base model, and SEI against each "
                   "baseline. Micro: every problem counts once; macro: every set.")
        st.dataframe(pd.DataFrame(arm_rows), hide_index=True, width="stretch",
                     key="it_arms")

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
    curves = views.loss_curves(s)
    n_steps = max((len(t["steps"]) for t in curves), default=0)
    if not curves:
        st.caption("No training runs yet.")
    elif n_steps < 2:  # no line to draw yet: say where each run stands
        st.caption("No loss curve yet: " + "; ".join(
            f"{t['label']} ({t['status']}, {t['train_id']}): " + (
                f"loss {t['steps'][0]['loss']:.4g} after step {t['steps'][0]['step']}"
                if t["steps"] else "no step yet") for t in curves) + ".")
    else:
        lf = go.Figure()
        for t in curves:
            st_ = t["steps"]
            lf.add_trace(go.Scatter(x=[x["step"] for x in st_], y=[x["loss"] for x in st_],
                                    mode="lines+markers", name=f"{t['label']} ({t['status']})",
                                    hovertext=t["train_id"]))
        lf.update_layout(title={"text": "Loss per step"}, height=340, margin={"t": 50},
                         xaxis={"title": "step"}, yaxis={"title": "loss"})
        st.plotly_chart(lf, key="it_loss")

    st.subheader("Lineage")
    lineage = views.iteration_table(s)
    for it in lineage:
        n_ = it["iteration"]
        label = (f"iteration {n_} · base model" if n_ == 0 else
                 f"iteration {n_} · {it.get('mode')} · {it.get('status')}")
        with st.expander(label, expanded=it is lineage[-1]):
            if it.get("preset"):
                dev = it.get("deviations") or {}
                st.text(f"preset {it['preset']}; deviations: " + (", ".join(
                    f"{k} {a} → {b}" for k, (a, b) in dev.items()) or "none"))
            for e in it.get("extractions", []):
                st.text(f"train set {e['dataset']}/{e['split']}: run {e['run_id']} "
                        f"({e['n_done']} problems, accuracy {pts(e['accuracy'], False)}%)")
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
its = views.iteration_choices(s)
nxt = views.next_iteration(s)
tab_tr, tab_ev, tab_it = st.tabs(["Train", "Evaluate", "Next iteration"])
with tab_tr:
    c1, c2, c3, c4 = st.columns(4)
    t_it = c1.number_input("iteration", 1, 100, int(its[-1]), key="tr_it")
    t_mode = common.param_input(c2, TrainParams, "mode", "mode", "tr_mode")
    t_method = common.param_input(c3, TrainParams, "method", "selected by", "tr_method")
    t_epochs = common.param_input(c4, TrainParams, "epochs", "epochs", "tr_epochs", 1, 50)
    tp = TrainParams(iteration=int(t_it), mode=t_mode, method=t_method, epochs=int(t_epochs))
    te = views.train_estimate(s, tp)
    if "error" in te:  # nothing selected yet: the page that selects, not a shell command
        st.warning(f"Nothing to train on for iteration {tp.iteration} by {tp.method}: "
                   "select candidates on the Selection page first.")
        common.page_link("Selection", "Go to Selection", ":material/arrow_forward:")
    else:
        st.caption(f"Estimate: {te['n_examples']} examples × {tp.epochs} epochs × "
                   f"~{costs.TRAIN_TOKENS_PER_EXAMPLE} tokens ÷ ~{costs.TRAIN_TOKENS_PER_S} "
                   f"tokens/s ≈ {common.duration(te['seconds'])} "
                   f"({te['steps']} steps; from {', '.join(te['selection_ids'])})")
    if st.button("Train", key="tr_go", disabled="error" in te or not te.get("n_examples")
                 or common.running_job(s, "train", asdict(tp)) is not None):
        common.launch(s, "train", asdict(tp), "iterations")
with tab_ev:
    sets_all = evaluate.default_sets(s) or ["demo/test"]
    c1, c2, c3, c4 = st.columns([1, 3, 1, 1])
    # only models that exist: the base (0) and each iteration's trained arms
    models = views.trained_models(s)
    e_pick = c1.selectbox("model", list(models), index=len(models) - 1, key="ev_model",
                          help="The base model, or an iteration's adapter by arm.")
    e_sets = c2.multiselect("evaluation sets", sets_all, default=sets_all, key="ev_sets")
    e_limit = common.param_input(c3, EvalParams, "limit", "problems per set (0: all)",
                                 "ev_limit", 0, 100_000)
    # a fixed budget per answer: compare arms only at the same one (it is in each run's params)
    e_tokens = common.param_input(c4, EvalParams, "max_new_tokens", "max new tokens per answer",
                                  "ev_tokens", 16, 8192)
    e_it, e_arm = models[e_pick]
    ep = EvalParams(iteration=e_it, arm=e_arm, sets=list(e_sets), limit=int(e_limit) or None,
                    max_new_tokens=int(e_tokens))
    ee = views.eval_estimate(s, ep)
    st.caption(f"Estimate: {ee['n_problems']} problems ("
               + common.md_text(", ".join(f"{k} {v}" for k, v in ee["problems"].items()))
               + f") × ~{ee['s_per_problem']:.2g} s each ("
               + ("measured in this store's runs" if ee["measured"] else
                  "the reference machine's rate") + f") ≈ {common.duration(ee['seconds'])}")
    for set_ in e_sets:  # said before the run: problems no answer can get right
        n_bad = len(evaluate.unmatchable(s, *set_.split("/", 1), ep.limit))
        if n_bad:
            st.warning(evaluate.unmatchable_line(set_, n_bad) + ".", icon=":material/rule:")
    if st.button("Evaluate", key="ev_go", disabled=not e_sets
                 or common.running_job(s, "evaluate", asdict(ep)) is not None):
        common.launch(s, "evaluate", asdict(ep), "iterations")
with tab_it:
    c1, c2, c3 = st.columns(3)
    l_preset = common.param_input(c1, LoopParams, "preset", "preset", "lp_preset")
    l_mode = common.param_input(c2, LoopParams, "mode", "mode", "lp_mode")
    l_review = common.param_input(c3, LoopParams, "review", "stop for review before synthesis",
                                  "lp_review")
    names = sorted({f"{d['dataset']}/{d['split']}" for d in s.datasets()} |
                   set(LoopParams.default("train_sets")))
    c1, c2, c3 = st.columns([2, 3, 1])
    l_train = c1.multiselect("train sets", [n for n in names if not sets.is_test_split(
        n.split("/", 1)[1])], default=LoopParams.default("train_sets"), key="lp_train",
        help=LoopParams.help("train_sets"))
    l_eval = c2.multiselect("evaluation sets", [n for n in names if n not in l_train],
                            default=[], key="lp_eval",
                            help=LoopParams.help("eval_sets"))
    l_arms = c3.multiselect("arms", ["sei", "random", "all"],
                            default=LoopParams.default("arms"), key="lp_arms",
                            help=LoopParams.help("arms"))
    # where the generations run (training stays here): this process or a vLLM-like server
    c1, c2, c3 = st.columns(3)
    l_backend = common.param_input(c1, LoopParams, "backend", "generation", "lp_backend")
    local = l_backend == "local"
    l_url = c2.text_input("server URL", key="lp_url", disabled=local,
                          placeholder="http://127.0.0.1:8000/v1",
                          help=LoopParams.help("base_url"))
    l_served = c3.text_input("served model name", key="lp_served", disabled=local,
                             help=LoopParams.help("served_model"))
    try:
        lp = resolve(l_preset, None, {"iterations": nxt, "mode": l_mode, "review": l_review,
                                      "train_sets": l_train or None,
                                      "eval_sets": l_eval or None, "arms": l_arms or None,
                                      "backend": l_backend,
                                      "base_url": None if local else l_url.strip() or None,
                                      "served_model": None if local else
                                      l_served.strip() or None})
    except ValueError as e:
        st.error(str(e))
        st.stop()
    le = views.iterate_estimate(s, lp)
    plan = costs.plan(s, lp)
    dev = plan["deviations"]
    st.caption(f"Preset **{lp.preset}**; "
               + (common.md_text("deviations: " + ", ".join(
                   f"{k} {a} → {b}" for k, (a, b) in dev.items())) if dev else "no deviations"))
    with st.expander("The plan: every parameter and the estimate (as `sei iterate --dry-run`)"):
        st.dataframe(pd.DataFrame([{"parameter": k, "value": str(v)}
                                   for k, v in flat(plan["config"]).items()]),
                     hide_index=True, key="lp_plan_params")
        st.dataframe(pd.DataFrame([{"per iteration": k, "estimate": str(v)} for k, v in
                                   plan["estimate"]["per_iteration"].items()]),
                     hide_index=True, key="lp_plan_est")
        for a in plan["estimate"]["assumptions"]:
            st.caption(a)
    if le["parts"]:
        st.caption(f"Runs iterations up to {nxt} (finished stages are skipped). Rough "
                   f"estimate: ~{common.duration(60 * le['minutes'])} ("
                   + ", ".join(f"{k} {v} min" for k, v in le["parts"].items()) + ")")
    else:
        st.caption(f"Runs iterations up to {nxt}: every stage of it has finished, so a run "
                   "only checks that and marks it done (under a minute).")
    if st.button(f"Run iteration {nxt}", key="lp_go", type="primary",
                 disabled=common.running_job(s, "iterate") is not None):
        common.launch(s, "iterate", lp.resolved(), "iterations")
common.job_panel(s, ("train", "evaluate", "iterate"), "iterations")
