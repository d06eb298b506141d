"""Error map: the UMAP of error keyphrases coloured by error type, with curation.

Every edit goes through pipeline.taxonomy, which appends to the edit log; the map is
then redrawn from the log, so what is shown is always what is stored."""

import pandas as pd
import streamlit as st

import common
from pipeline import jobs, taxonomy

s = common.header("Error map")
tax = taxonomy.current(s)
if tax.clustering is None:
    st.info("No clustering yet: run the quick start on the Overview page, or "
            "`sei analyze && sei cluster`.")
    st.stop()

cl = tax.clustering
by_kp = {p["kp_id"]: p for p in tax.points}
visible = tax.visible_types()
label = {t.type_id: f"{t.type_id}: {t.title}" for t in visible}


def edit(fn, *args, msg: str = "", **kw) -> None:
    """A button callback. Callbacks run before the rerun that the click triggers, so
    that rerun draws the edited map once (instead of drawing, editing, drawing again).
    Widget values are read from session_state here ("@key"), not bound when the button
    was drawn, so text typed just before the click counts."""
    ss = st.session_state

    def val(v):
        return ss[v[1:]] if isinstance(v, str) and v.startswith("@") else v

    args = [val(a) for a in args]
    kw = {k: val(v) for k, v in kw.items()}
    if "sel" in kw:
        kw[kw.pop("sel")] = selected()
    if fn is not taxonomy.undo:
        kw["tax"] = tax  # what the user saw and acted on
    try:
        out = fn(s, *args, **kw)
    except ValueError as e:  # a refused edit is shown, never a traceback
        ss["flash_error"] = str(e)
        return
    ss["flash"] = msg.format(out=out, n=len(selected()),
                             **{k: v for k, v in ss.items() if isinstance(k, str)})


def selected() -> list[int]:
    ev = st.session_state.get("map")
    pts = (ev.selection.points if ev and getattr(ev, "selection", None) else []) or []
    return sorted({int(q["customdata"] if not isinstance(q["customdata"], list)
                       else q["customdata"][0]) for q in pts if q.get("customdata") is not None})


if msg := st.session_state.pop("flash", None):
    st.success(msg)
if err := st.session_state.pop("flash_error", None):
    st.error(err)

p = cl["params"] or {}
st.caption(f"Clustering `{cl['clustering_id']}` · {cl['method']} · {cl['n_points']} keyphrases · "
           f"{cl['n_clusters']} clusters · analysis `{cl['analysis_id']}` · embeddings "
           f"{cl['embed_model']} · min cluster size {p.get('min_cluster_size')} · UMAP "
           f"neighbours {p.get('n_neighbors')} · seed {cl['seed']}")

left, right = st.columns([3, 2])
with left:
    show_excl = st.toggle("show excluded points", value=False)
    fig = common.build_map_figure(tax, show_excluded=show_excl)
    st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso", "points"),
                    key="map", width="stretch")
    sel = selected()
    if sel:
        st.markdown(f"**{len(sel)} selected keyphrases**")
        st.dataframe(pd.DataFrame([{"kp": k, "keyphrase": by_kp[k]["text"],
                                    "type": label.get(by_kp[k]["type"], "unassigned")}
                                   for k in sel if k in by_kp]),
                     hide_index=True, height=180, width="stretch")
        a, b, c = st.columns(3)
        with a:
            target = st.selectbox("assign to type", list(label), format_func=label.get,
                                  key="assign_to")
            st.button("Assign", key="assign", disabled=target is None,
                      on_click=edit, args=(taxonomy.move,),
                      kwargs={"sel": "kp_ids", "type_id": "@assign_to",
                              "msg": "moved {n} keyphrases to type {assign_to}"})
        with b:
            st.text_input("new type title", "new type", key="split_title")
            st.button("Make new type (split)", key="split", on_click=edit,
                      args=(taxonomy.split,),
                      kwargs={"sel": "kp_ids", "title": "@split_title",
                              "msg": "new type {out} from {n} keyphrases"})
        with c:
            st.write("")
            st.button("Exclude selection", key="exclude_sel", on_click=edit,
                      args=(taxonomy.exclude,),
                      kwargs={"sel": "kp_ids", "msg": "excluded {n} keyphrases"})
    else:
        st.caption("Box or lasso points on the map to assign, split or exclude them.")

with right:
    st.subheader("Error types")
    n_noise = sum(1 for q in tax.points if q["type"] is None and not q["excluded"])
    st.caption(f"{tax.n_cases} bad cases with keyphrases · {n_noise} keyphrases unassigned")
    table = pd.DataFrame([{"id": t.type_id, "title": t.title, "share": common.pct(t.share),
                           "cases": t.n_cases, "keyphrases": len(t.members),
                           "excluded": t.excluded, "by": t.titled_by} for t in visible])
    st.dataframe(table, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(table)))

    u1, u2 = st.columns(2)
    u1.button("Undo last edit", key="undo", disabled=not tax.edits, on_click=edit,
              args=(taxonomy.undo,), kwargs={"msg": "undid the last edit"})
    u2.caption(f"{len(tax.edits)} edits in force")

    with st.form("merge"):
        st.multiselect("merge types", list(label), format_func=label.get, key="merge_ids")
        st.text_input("title of the merged type (optional)", key="merge_title")
        st.form_submit_button("Merge", on_click=lambda: edit(
            taxonomy.merge, "@merge_ids", title=st.session_state["merge_title"] or None,
            msg="merged types {merge_ids}"))

    for t in visible:
        with st.expander(f"{label[t.type_id]} · {common.pct(t.share)}"
                         + (" · excluded" if t.excluded else "")):
            st.text_input("title", t.title, key=f"title-{t.type_id}")
            st.button("Rename", key=f"rename-{t.type_id}", on_click=edit,
                      args=(taxonomy.rename, t.type_id, f"@title-{t.type_id}"),
                      kwargs={"msg": f"renamed type {t.type_id}"})
            st.text_area("description", t.description or "", key=f"desc-{t.type_id}",
                         height=80)
            st.button("Save description", key=f"describe-{t.type_id}", on_click=edit,
                      args=(taxonomy.describe, t.type_id, f"@desc-{t.type_id}"),
                      kwargs={"msg": f"described type {t.type_id}"})
            st.button("Include again" if t.excluded else "Exclude type", key=f"excl-{t.type_id}",
                      on_click=edit, args=(taxonomy.exclude,),
                      kwargs={"type_id": t.type_id, "include": t.excluded,
                              "msg": f"{'included' if t.excluded else 'excluded'} type {t.type_id}"})
            st.caption(f"title by {t.titled_by or '?'} · {len(t.members)} keyphrases · "
                       f"{t.n_cases} bad cases")
            st.markdown("Representative examples")
            st.dataframe(pd.DataFrame([{"keyphrase": by_kp[k]["text"],
                                        "question": by_kp[k]["question"]}
                                       for k in t.examples]), hide_index=True, width="stretch")

    st.subheader("Re-cluster")
    with st.form("recluster"):
        c1, c2 = st.columns(2)
        mcs = c1.number_input("min cluster size", 2, 500, int(p.get("min_cluster_size") or 5))
        nn = c2.number_input("UMAP neighbours", 2, 200, int(p.get("n_neighbors") or 15))
        kmeans = c1.checkbox("K-means (the paper's variant)", p.get("method") == "kmeans")
        k = c2.number_input("k (K-means)", 2, 100, int(p.get("k") or 8))
        seed = c1.number_input("seed", 0, 2**31 - 1, int(cl["seed"] or 0))
        if st.form_submit_button("Re-cluster (background job)"):
            jid = jobs.submit(s, "cluster", {"min_cluster_size": int(mcs), "n_neighbors": int(nn),
                                             "method": "kmeans" if kmeans else "hdbscan",
                                             "k": int(k), "seed": int(seed)})
            st.session_state["flash"] = f"clustering job #{jid} started (Jobs page)"
            st.rerun()
    diff = cl.get("diff") or {}
    if diff.get("previous"):
        st.markdown(f"Diff against `{diff['previous']}`")
        st.json({k: diff.get(k) for k in ("kept", "new", "gone", "split", "merged")},
                expanded=False)

    with st.expander("Edit log"):
        st.dataframe(pd.DataFrame([{"edit": e["edit_id"], "op": e["op"],
                                    "payload": str(e["payload"]), "at": e.get("created_at")}
                                   for e in s.edits()]), hide_index=True, width="stretch")
