"""Error map: the UMAP of error keyphrases coloured by error type, with curation.

Every edit goes through pipeline.taxonomy, which appends to the edit log; the map is
then redrawn from the log, so what is shown is always what is stored."""

import json

import common
import pandas as pd
import streamlit as st

from pipeline import jobs, taxonomy
from pipeline.cluster import retitle

s = common.header("Error map")
ss = st.session_state
ACTIVE = ("queued", "running")
# Widgets whose values describe the taxonomy as it was (the merge box, titles,
# descriptions, pickers) carry a generation in their key, and every edit starts a new
# one: they are drawn afresh from what is stored. Deleting their state is not enough:
# the browser keeps the old value and sends it back with the next click (a stale merge
# chip; an old title that Rename wrote back).
GEN = ss.setdefault("gen", 0)


def wk(name: str) -> str:
    return f"{name}~{GEN}"


def reset_widgets() -> None:
    ss["gen"] = ss.get("gen", 0) + 1
    for key in [x for x in ss if isinstance(x, str) and "~" in x]:
        del ss[key]


def flash(msg: str, error: bool = False) -> None:
    ss["flash_error" if error else "flash"] = msg


tax = taxonomy.current(s)

# -- the clustering in use, and new ones waiting for a decision ------------------------------
held = taxonomy.held_clusterings(s)


def use(cid: str, msg: str) -> None:
    taxonomy.use_clustering(s, cid, author="app")
    reset_widgets()
    flash(msg)


for h in held[:1]:
    d = h["diff"]["held"]
    with st.container(border=True):
        st.warning(f"A new clustering `{h['clustering_id']}` ({h['n_points']} keyphrases, "
                   f"{h['n_clusters']} clusters) covers {d['n_cases']} bad cases, "
                   f"{d['shared_cases']} of the {d['current_cases']} that the current one "
                   "covers, so it was not made current. Make it current?")
        b1, b2 = st.columns(2)
        b1.button("Make it current", key="held_use", on_click=use,
                  args=(h["clustering_id"], f"clustering {h['clustering_id']} is current"))
        cur = tax.clustering["clustering_id"] if tax.clustering else None
        b2.button("Keep the current one", key="held_keep", disabled=cur is None, on_click=use,
                  args=(cur, f"kept clustering {cur}"))

if tax.clustering is None:
    st.info("No clustering yet: run the quick start on the Overview page, or "
            "`sei analyze && sei cluster`.")
    st.stop()

cl = tax.clustering
p = cl["params"] or {}


@st.fragment(run_every=2)
def watch_jobs(ids: list[int]) -> None:
    """While a clustering job runs, show it; when it ends, redraw the whole page (the map
    of a new current clustering)."""
    jobs.reap(s)  # a dead job is marked failed, so this stops polling
    rows = [s.job(i) for i in ids]
    if all(r is None or r["status"] not in ACTIVE for r in rows):
        done = [r for r in rows if r is not None]
        flash(" · ".join(f"job #{r['job_id']} {r['kind']} {r['status']}" for r in done))
        st.rerun()
    for r in rows:
        frac = min(1.0, (r["done"] or 0) / r["total"]) if r and r["total"] else 0.0
        st.progress(frac, text=common.job_line(r) + f" · {r['step'] or ''} {r['message'] or ''}")


running = [j["job_id"] for j in s.jobs(statuses=list(ACTIVE))
           if j["kind"] in ("cluster", "quickstart")]
if running:
    watch_jobs(running)

if msg := ss.pop("flash", None):
    st.success(msg)
if err := ss.pop("flash_error", None):
    st.error(err)

cls = s.clusterings()
# The clustering in use and a picker, always in view (a switch is an edit: Undo goes back).
names = {c["clustering_id"]: (f"{c['clustering_id']} · {c['n_points']} keyphrases · "
                              f"{c['n_clusters']} clusters · {c['method']}"
                              + (" · held" if (c["diff"] or {}).get("held") else "")
                              + (" · current" if c["clustering_id"] == cl["clustering_id"]
                                 else ""))
         for c in reversed(cls)}
k1, k2 = st.columns([5, 1], vertical_alignment="bottom")
pick = k1.selectbox(f"clustering ({len(cls)} in all)", list(names), format_func=names.get,
                    index=list(names).index(cl["clustering_id"]), key=wk("cl_pick"))
k2.button("Make current", key="cl_use", disabled=pick == cl["clustering_id"], on_click=use,
          args=(pick, f"clustering {pick} is current"))
st.caption(f"Current clustering `{cl['clustering_id']}`: {cl['method']} · {cl['n_points']} "
           f"keyphrases · {cl['n_clusters']} clusters · analysis `{cl['analysis_id']}` · "
           f"embeddings {cl['embed_model']} · min cluster size {p.get('min_cluster_size')} · "
           f"UMAP neighbours {p.get('n_neighbors')} · seed {cl['seed']} · made "
           f"{cl['created_at']:%Y-%m-%d %H:%M:%S}")

by_kp = {q["kp_id"]: q for q in tax.points}
visible = tax.visible_types()
label = {t.type_id: f"{t.type_id}: {t.title}" for t in visible}


def name(t) -> str:
    return label.get(t, f"{t} (gone)")


def edit(fn, *args, msg: str = "", **kw) -> None:
    """A button callback. Callbacks run before the rerun that the click triggers, so
    that rerun draws the edited map once (instead of drawing, editing, drawing again).
    Widget values are read from session_state here ("@key"), not bound when the button
    was drawn, so text typed just before the click counts."""
    def val(v):
        return ss.get(f"{v[1:]}~{GEN}") if isinstance(v, str) and v.startswith("@") else v

    args = [val(a) for a in args]
    kw = {k: val(v) for k, v in kw.items()}
    if "sel" in kw:
        kw[kw.pop("sel")] = selected()
    if fn not in (taxonomy.undo, taxonomy.redo):
        kw["tax"] = tax  # what the user saw and acted on
    try:
        out = fn(s, *args, author="app", **kw)
    except ValueError as e:  # a refused edit is shown, never a traceback
        flash(str(e), error=True)
        return
    text = msg.format(out=out, n=len(selected()), args=args, **kw)
    reset_widgets()
    flash(text)


def selected() -> list[int]:
    """Keyphrase ids behind the selected dots (a dot stands for identical keyphrases)."""
    ev = ss.get("map")
    pts = (ev.selection.points if ev and getattr(ev, "selection", None) else []) or []
    dots = {int(q["customdata"] if not isinstance(q["customdata"], list)
                else q["customdata"][0]) for q in pts if q.get("customdata") is not None}
    return taxonomy.expand(sorted(dots), tax, show_excluded=ss.get("show_excl", False))


def n_dots() -> int:
    ev = ss.get("map")
    pts = (ev.selection.points if ev and getattr(ev, "selection", None) else []) or []
    return len({str(q.get("customdata")) for q in pts if q.get("customdata") is not None})


# A case sent from Bad cases ("show on the map"): its keyphrases are ringed.
shown_case = st.query_params.get("case")
shown_case = int(shown_case) if shown_case and shown_case.isdigit() else None
mark = {q["kp_id"] for q in tax.points if q["case_id"] == shown_case} if shown_case else None

left, right = st.columns([3, 2])
with left:
    show_excl = st.toggle("show excluded points", value=False, key="show_excl")
    fig = common.build_map_figure(tax, show_excluded=show_excl, mark=mark)
    st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso", "points"),
                    key="map", width="stretch")
    sel = selected()
    if shown_case and not mark:
        st.caption(f"Case {shown_case} has no keyphrases in this clustering.")
    if sel:
        st.markdown(f"**{len(sel)} selected keyphrases** ({n_dots()} dots)")
        a, b, c = st.columns(3)
        with a:
            target = st.selectbox("assign to type", list(label), format_func=name,
                                  key=wk("assign_to"))
            st.button("Assign", key="assign", disabled=target is None,
                      on_click=edit, args=(taxonomy.move,),
                      kwargs={"sel": "kp_ids", "type_id": "@assign_to",
                              "msg": "moved {n} keyphrases to type {type_id}"})
        with b, st.form("split-form", border=False):
            st.text_input("new type title", "new type", key=wk("split_title"))
            st.form_submit_button("Make new type (split)", key="split", on_click=edit,
                                  args=(taxonomy.split,),
                                  kwargs={"sel": "kp_ids", "title": "@split_title",
                                          "msg": "new type {out} from {n} keyphrases"})
        with c:
            st.write("")
            st.button("Exclude selection", key="exclude_sel", on_click=edit,
                      args=(taxonomy.exclude,),
                      kwargs={"sel": "kp_ids", "msg": "excluded {n} keyphrases"})
        st.dataframe(pd.DataFrame([{"kp": k, "keyphrase": by_kp[k]["text"],
                                    "case": by_kp[k]["case_id"],
                                    "type": name(by_kp[k]["type"])
                                    if by_kp[k]["type"] is not None else "unassigned"}
                                   for k in sel if k in by_kp]),
                     hide_index=True, height=180, width="stretch")
    else:
        st.caption("Click, box or lasso points on the map to open their cases and to assign, "
                   "split or exclude them.")

    # The cases behind the selection (or the case sent here), one at a time.
    cases = taxonomy.cases_of(tax, sel) if sel else ([shown_case] if shown_case else [])
    if cases:
        st.subheader("Case")
        question = {q["case_id"]: q["question"] for q in tax.points}
        pick = st.selectbox(f"{len(cases)} cases behind the selection", cases,
                            key=wk("case_pick"),
                            format_func=lambda c: f"case {c}: {question.get(c, '')[:90]}"
                            ) if len(cases) > 1 else cases[0]
        view = taxonomy.case_view(s, tax, pick)
        if view is None:
            st.caption(f"Case {pick} is not in the store.")
        else:
            st.markdown(f"**Case {pick}** · {view['dataset']} / {view['pid']} · answered "
                        f"`{view['pred']}`, reference `{view['answer']}`")
            common.page_link("1_Bad_cases", "Open in Bad cases", ":material/open_in_new:",
                             case=pick)
            st.markdown("**Question**")
            st.text(view["question"])
            st.markdown("**Model output** (evidence highlighted)")
            with st.container(border=True, height=260):
                st.markdown(common.highlighted(view["output"] or "",
                                               [k["span"] for k in view["keyphrases"]
                                                if k["span"]]))
            st.dataframe(pd.DataFrame([{"keyphrase": k["text"], "type": k["type"],
                                        "evidence": k["evidence"], "written by": k["analyzer"],
                                        "excluded": k["excluded"]}
                                       for k in view["keyphrases"]]),
                         hide_index=True, width="stretch")

with right:
    st.subheader("Error types")
    n_noise = sum(1 for q in tax.points if q["type"] is None and not q["excluded"])
    st.caption(f"{tax.n_cases} bad cases with keyphrases · {n_noise} keyphrases unassigned")
    st.dataframe(common.legend_table(tax), hide_index=True, width="stretch",
                 height=min(420, 38 + 35 * len(visible)),
                 column_config={"colour": st.column_config.TextColumn("", width=28)})
    for title, ids in taxonomy.duplicate_titles(tax).items():
        st.warning(f"Types {', '.join(map(str, ids))} share the title “{title}”: rename or "
                   "merge them.")

    u1, u2, u3 = st.columns(3)
    u1.button("Undo last edit", key="undo", disabled=not tax.edits, on_click=edit,
              args=(taxonomy.undo,), kwargs={"msg": "undid the last edit"})
    u2.button("Redo", key="redo", disabled=not tax.redoable, on_click=edit,
              args=(taxonomy.redo,),
              kwargs={"msg": "redid the last undone edit"})
    u3.caption(f"{len(tax.edits)} edits in force")

    with st.form("merge"):
        st.multiselect("merge types", list(label), format_func=name, key=wk("merge_ids"))
        st.text_input("title of the merged type (optional)", key=wk("merge_title"))
        st.form_submit_button("Merge", on_click=lambda: edit(
            taxonomy.merge, "@merge_ids", title=ss.get(wk("merge_title")) or None,
            msg="merged types {args[0]}"))

    def do_retitle() -> None:
        n = retitle(s)
        reset_widgets()
        flash(f"retitled {n} types (titles a person gave are kept)")

    r1, r2 = st.columns(2)
    r1.button("Retitle types", key="retitle", on_click=do_retitle,
              help="Recompute titles of types a person has not renamed")
    r2.download_button(
        "Export types (JSONL)", key="export", mime="application/jsonl",
        file_name=f"types-{cl['clustering_id']}.jsonl",
        data=lambda: "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                             for r in taxonomy.export_rows(s, taxonomy.current(s))))

for t in visible:
    with st.expander(f"{label[t.type_id]} · {common.pct(t.share)} · {t.n_cases} cases"
                     + (" · excluded" if t.excluded else "")):
        c1, c2 = st.columns([2, 3])
        with c1:
            # Forms: typing reruns nothing (a rerun redraws the map); the button (or Enter)
            # sends what was typed with the click, in one rerun.
            with st.form(f"rename-form-{t.type_id}", border=False):
                st.text_input("title", t.title, key=wk(f"title-{t.type_id}"))
                st.form_submit_button("Rename", key=f"rename-{t.type_id}", on_click=edit,
                                      args=(taxonomy.rename, t.type_id, f"@title-{t.type_id}"),
                                      kwargs={"msg": f"renamed type {t.type_id}"})
            with st.form(f"describe-form-{t.type_id}", border=False):
                st.text_area("description", t.description or "",
                             key=wk(f"desc-{t.type_id}"), height=80)
                st.form_submit_button("Save description", key=f"describe-{t.type_id}",
                                      on_click=edit,
                                      args=(taxonomy.describe, t.type_id, f"@desc-{t.type_id}"),
                                      kwargs={"msg": f"described type {t.type_id}"})
            st.button("Include again" if t.excluded else "Exclude type",
                      key=f"excl-{t.type_id}", on_click=edit, args=(taxonomy.exclude,),
                      kwargs={"type_id": t.type_id, "include": t.excluded,
                              "msg": f"{'included' if t.excluded else 'excluded'} type "
                                     f"{t.type_id}"})
            st.caption(f"title by {t.titled_by or '?'} · {len(t.members)} keyphrases · "
                       f"{t.n_cases} bad cases")
        with c2:
            st.markdown("Representative examples")
            st.dataframe(pd.DataFrame([{"keyphrase": by_kp[k]["text"],
                                        "case": by_kp[k]["case_id"],
                                        "question": by_kp[k]["question"]}
                                       for k in t.examples]), hide_index=True, width="stretch")

st.subheader("Re-cluster")
with st.form("recluster"):
    c1, c2, c3 = st.columns(3)
    mcs = c1.number_input("min cluster size", 2, 500, int(p.get("min_cluster_size") or 5))
    nn = c2.number_input("UMAP neighbours", 2, 200, int(p.get("n_neighbors") or 15))
    seed = c3.number_input("seed", 0, 2**31 - 1, int(cl["seed"] or 0))
    kmeans = c1.checkbox("K-means (the paper's variant)", p.get("method") == "kmeans")
    k = c2.number_input("k (K-means)", 2, 100, int(p.get("k") or 8))
    if st.form_submit_button("Re-cluster (background job)"):
        jid = jobs.submit(s, "cluster", {"min_cluster_size": int(mcs), "n_neighbors": int(nn),
                                         "method": "kmeans" if kmeans else "hdbscan",
                                         "k": int(k), "seed": int(seed),
                                         "analysis_id": cl["analysis_id"]})
        flash(f"clustering job #{jid} started; the map redraws when it ends")
        st.rerun()

prev_id = (cl.get("diff") or {}).get("previous")
# Folding the log onto the previous clustering too costs a second taxonomy: on by default
# for maps of demo size, a click away on large ones.
if prev_id and any(c["clustering_id"] == prev_id for c in cls) and st.toggle(
        "Compare with the previous clustering", value=len(tax.points) <= 5000,
        key="compare"):
    rows = taxonomy.compare(taxonomy.current(s, prev_id), tax)
    st.markdown(f"**What changed against the previous clustering `{prev_id}`** "
                "(both with your edits applied)")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    stale = [r["type"] for r in rows if r["inherited title"]]
    if stale:
        st.info(f"Types {', '.join(map(str, stale))} kept titles from the previous clustering "
                "although their members changed: Retitle types (above) recomputes them.")

with st.expander("Edit log"):
    log = taxonomy.edit_log(s, tax)
    st.dataframe(pd.DataFrame(log, columns=["edit", "at", "what", "in force", "by"]),
                 hide_index=True, width="stretch")
    live = {e["edit"]: e["what"] for e in log if e["in force"]}
    if live:
        st.selectbox("edit to undo", list(live), key=wk("undo_pick"),
                     format_func=lambda i: f"{i}: {live.get(i, '')}"[:120])
        st.button("Undo this edit", key="undo_one", on_click=edit,
                  args=(taxonomy.undo, "@undo_pick"), kwargs={"msg": "undid edit {args[0]}"})
