"""Error map: the UMAP of error keyphrases coloured by error type, with curation.

Every edit goes through pipeline.analysis.taxonomy, which appends to the edit log; the map is
then redrawn from the log, so what is shown is always what is stored."""


import common
import map_view
import pandas as pd
import streamlit as st
from map_actions import MapActions

from pipeline.analysis import llm_cluster, review, search, taxonomy
from pipeline.core import config
from pipeline.models import instructor
from pipeline.stages.cluster import ClusterParams, agreement

s = common.header("Error map")
ss = st.session_state
flash = common.flash

with s.read():  # one connection for the page's reads (opening one costs ~25 ms)
    tax = taxonomy.current(s)
    held = taxonomy.held_clusterings(s)  # new clusterings waiting for a decision
    cls = s.clusterings()
act = MapActions(s, tax)  # the edit callbacks (dashboard/map_actions.py)
wk = act.wk


# Everything that comes and goes above the map sits in a container that is always drawn:
# an element is placed by its index, and a shifted index makes the browser build the map's
# frame anew (map_view.py keeps it to update it in place).
held_slot = st.container()
for h in held[:1]:
    d = h["diff"]["held"]
    with held_slot, st.container(border=True):
        st.warning(f"A new clustering `{h['clustering_id']}` ({h['n_points']} keyphrases, "
                   f"{h['n_clusters']} clusters) covers {d['n_cases']} bad cases, "
                   f"{d['shared_cases']} of the {d['current_cases']} that the current one "
                   "covers, so it was not made current. Make it current?")
        b1, b2 = st.columns(2)
        b1.button("Make it current", key="held_use", on_click=act.use,
                  args=(h["clustering_id"], f"clustering {h['clustering_id']} is current"))
        cur = tax.clustering["clustering_id"] if tax.clustering else None
        b2.button("Keep the current one", key="held_keep", disabled=cur is None, on_click=act.use,
                  args=(cur, f"kept clustering {cur}"))

if tax.clustering is None:
    st.info("No clustering yet: the quick start on the Overview page extracts, analyses and "
            "clusters in one job.")
    common.page_link("Overview", "Open the quick start", ":material/play_arrow:")
    st.stop()

cl = tax.clustering
p = cl["params"] or {}


# A running (re-)clustering shows here; when it ends the page redraws with its map. With
# the curation fragment on (below, the default), the panel polls only while one runs, and
# then an edit reruns the whole page: a poll's run that starts as an edit's fragment run ends
# takes over that run's clean-up in the browser (streamlit#16708), so the widgets the edit
# replaced stay on screen beside the new ones; a clustering started elsewhere then shows at
# the page's next full run.
fragment = config.map_fragment()
polling = common.job_panel(s, ("cluster", "quickstart", "retitle"), "error_map",
                           redraw_when_done=True, idle_poll=None if fragment else 10)

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
k2.button("Make current", key="cl_use", disabled=pick == cl["clustering_id"], on_click=act.use,
          args=(pick, f"clustering {pick} is current"))
st.caption(f"Current clustering `{cl['clustering_id']}`: {cl['method']} · {cl['n_points']} "
           f"keyphrases · {cl['n_clusters']} clusters · analysis `{cl['analysis_id']}` · "
           f"embeddings {cl['embed_model']} · min cluster size {p.get('min_cluster_size')} · "
           f"UMAP neighbours {p.get('n_neighbors')} · seed {cl['seed']} · made "
           f"{cl['created_at']:%Y-%m-%d %H:%M:%S}")


def kept_choice(where, label: str, options: list, name: str, key: str, fmt):
    """A selectbox whose choice lives in session state under `name` (the first option if
    it is gone), drawn afresh under `key` per edit: a rename changes the labels, and
    Streamlit would take a kept box for a new widget and drop its value."""
    if ss.get(name) not in options:
        ss[name] = options[0]
    ss.setdefault(key, ss[name])

    def chosen() -> None:
        # An edit's callback in the same click may have retired this box's key (a new
        # generation): the box is then drawn afresh from `name`.
        if key in ss:
            ss[name] = ss[key]
    return where.selectbox(label, options, key=key, format_func=fmt, on_change=chosen)


def examples_table(kp_ids: list[int], by_kp: dict[int, dict]) -> str:
    """A type's representative examples as a markdown table (model text made inert)."""
    def cut(text: str) -> str:
        return common.md_text(common.clip(text, 110))

    rows = [f"| {cut(by_kp[k]['text'])} | {by_kp[k]['case_id']} | {cut(by_kp[k]['question'])} |"
            for k in kp_ids if k in by_kp]
    return "\n".join(["**Representative examples**", "", "| keyphrase | case | question |",
                      "|---|---|---|", *rows])


def type_editor(t: taxonomy.TypeView, act: MapActions, by_kp: dict[int, dict]) -> None:
    """Rename, describe, exclude or retitle one type; its representative examples."""
    wk = act.wk
    c1, c2 = st.columns([2, 3])
    with c1:
        # Forms: typing reruns nothing (a rerun redraws the map); the button (or Enter)
        # sends what was typed with the click, in one rerun.
        with st.form(f"rename-form-{t.type_id}", border=False):
            st.text_input("title", t.title, key=wk(f"title-{t.type_id}"))
            st.form_submit_button("Rename", key=f"rename-{t.type_id}", on_click=act.rename,
                                  args=(t.type_id,))
        with st.form(f"describe-form-{t.type_id}", border=False):
            st.text_area("description", t.description or "", key=wk(f"desc-{t.type_id}"),
                         height=80)
            st.form_submit_button("Save description", key=f"describe-{t.type_id}",
                                  on_click=act.describe, args=(t.type_id,))
        b1, b2 = st.columns(2)
        b1.button("Include again" if t.excluded else "Exclude type", key=f"excl-{t.type_id}",
                  on_click=act.exclude_type, args=(t.type_id, t.excluded))
        b2.button("Retitle this type", key=f"retitle-{t.type_id}", on_click=act.retitle,
                  args=(t.type_id,), help="A new title and description from its members "
                  "now (by the instructor if configured), even if a person renamed it")
    with c2:
        # one markdown table, not a data grid: cheap to draw again at every edit
        st.markdown(examples_table(t.examples, by_kp))


class Ctx:
    """What the curation's parts share: the taxonomy drawn, its edit callbacks and lookups."""

    def __init__(self, tax: taxonomy.Taxonomy):
        self.tax = tax
        self.act = MapActions(s, tax)  # the edit callbacks (dashboard/map_actions.py)
        self.wk, self.selected, self.n_dots = self.act.wk, self.act.selected, self.act.n_dots
        self.by_kp = tax.by_kp()
        self.visible = tax.visible_types()
        self.label = {t.type_id: f"{t.type_id}: {t.title}" for t in self.visible}

    def name(self, t) -> str:
        return self.label.get(t, f"{t} (gone)")

    def box_of(self, kp_ids, pad: float = 0.15) -> tuple[float, float, float, float] | None:
        xs = [self.by_kp[k]["x"] for k in kp_ids if k in self.by_kp]
        ys = [self.by_kp[k]["y"] for k in kp_ids if k in self.by_kp]
        if not xs:
            return None
        dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        return (min(xs) - pad * dx, max(xs) + pad * dx, min(ys) - pad * dy, max(ys) + pad * dy)

    def view_box(self, zoom) -> tuple[float, float, float, float] | None:
        """Axis ranges of the chosen view (None: the whole map)."""
        if zoom == "the selection":
            return ss.get("zoom_box")
        if isinstance(zoom, int) and zoom in self.tax.types:
            return self.box_of(self.tax.types[zoom].members)
        return None

    def zoom_to_selection(self) -> None:
        ss["zoom_box"] = self.box_of(self.selected())
        ss["zoom_to"] = ss[self.wk("zoom")] = "the selection" if ss["zoom_box"] else "whole map"


def curation(tax: taxonomy.Taxonomy) -> None:
    """The map, the types panel, the type editors, the diff against the previous clustering
    and the edit log: everything an edit changes. Run as a fragment, an edit reruns this
    alone (the rest of the page is not rebuilt and sent again)."""
    if (tax.clustering or {}).get("clustering_id") != cl["clustering_id"]:
        st.rerun()  # an undo switched clusterings: the whole page follows
    c = Ctx(tax)
    with st.container():  # always drawn, so the map's place does not move (see held_slot)
        if msg := ss.pop("flash", None):
            st.success(msg)
        if err := ss.pop("flash_error", None):
            st.error(err)
    left, right = st.columns([3, 2])
    with left:
        sel, shown_case = map_column(c)
        case_panel(c, sel, shown_case)
    with right:
        types_column(c)
    type_editor_section(c)
    compare_section(c)
    edit_log(c)

def map_column(c: Ctx) -> tuple[list, int | None]:
    """Search, zoom and colour controls, the map, and what is selected on it; returns the
    selection and the case sent here from Bad cases, if any."""
    tax, wk, selected, name, visible = c.tax, c.wk, c.selected, c.name, c.visible
    # A case sent from Bad cases ("show on the map"): its keyphrases are ringed.
    shown_case = st.query_params.get("case")
    shown_case = int(shown_case) if shown_case and shown_case.isdigit() else None
    mark = taxonomy.kp_ids_of_case(tax, shown_case) if shown_case else None

    # Search: hits (by words and by meaning) are outlined on the map and listed below it.
    query = st.text_input("search keyphrases and cases (words or meaning)", key="map_search",
                          placeholder="e.g. percent of the wrong base")
    hits = search.search(s, query, tax) if query.strip() else None
    z1, z2, z3, z4 = st.columns([2, 3, 2, 2], vertical_alignment="bottom")
    show_excl = z1.toggle("show excluded points", value=False, key="show_excl")
    colour_by = z4.selectbox("colour by", taxonomy.COLOUR_BY, key="colour_by")
    # "zoom to" is app state (kept through edits); plotly's own zoom is kept too, as
    # the map component updates the figure in place (map_view.py).
    zooms = ["whole map"] + (["the selection"] if ss.get("zoom_box") else []) + \
        [t.type_id for t in visible]
    zoom = kept_choice(z2, "zoom to", zooms, "zoom_to", wk("zoom"),
                       lambda z: z if isinstance(z, str) else name(z))
    z3.button("Zoom to the selection", key="zoom_sel", disabled=not selected(),
              on_click=c.zoom_to_selection)
    # updated in place (map_view.py): only what changed is sent
    map_view.plotly_map(common.map_spec(
        tax, show_excluded=show_excl, mark=mark, view=c.view_box(zoom),
        hits=hits.kp_ids() if hits else None, colour_by=colour_by,
        attr=None if colour_by == "type" else review.point_verdicts(s, tax.points)
        if colour_by == "verdict" else taxonomy.point_attribute(tax, colour_by)), key="map")
    if hits:
        st.caption(f"Search “{query}”: {len(hits.keyphrases)} keyphrases and "
                   f"{len(hits.cases)} cases contain it; {len(hits.kp_ids())} keyphrases "
                   "outlined in red (words and nearest in meaning).")
        with st.expander("search hits", expanded=True):
            st.dataframe(pd.DataFrame(
                [dict(k, found="words") for k in hits.keyphrases]
                + [dict(k, found=f"meaning {k['score']:.2f}") for k in hits.similar],
                columns=["found", "kp_id", "text", "case_id", "type"]),
                hide_index=True, width="stretch", height=200, key="search_hits")
    sel = selection_panel(c, shown_case, mark)
    return sel, shown_case


def selection_panel(c: Ctx, shown_case: int | None, mark) -> list:
    """What is selected on the map, with assign, split and exclude; returns the selection."""
    wk, selected, n_dots, by_kp, act, label, name = (c.wk, c.selected, c.n_dots, c.by_kp,
                                                     c.act, c.label, c.name)
    sel = selected()
    if shown_case and not mark:
        st.caption(f"Case {shown_case} has no keyphrases in this clustering.")
    if sel:
        st.markdown(f"**{len(sel)} selected keyphrases** ({n_dots()} dots)")
        a, b, c = st.columns(3)
        with a:
            target = st.selectbox("assign to type", list(label), format_func=name,
                                  key=wk("assign_to"))
            st.button("Assign", key="assign", disabled=target is None, on_click=act.assign)
        with b, st.form("split-form", border=False):
            st.text_input("new type title", "new type", key=wk("split_title"))
            st.form_submit_button("Make new type (split)", key="split", on_click=act.split)
        with c:
            st.write("")
            st.button("Exclude selection", key="exclude_sel", on_click=act.exclude_selection)
        st.dataframe(pd.DataFrame([{"kp": k, "keyphrase": by_kp[k]["text"],
                                    "case": by_kp[k]["case_id"],
                                    "type": name(by_kp[k]["type"])
                                    if by_kp[k]["type"] is not None else "unassigned"}
                                   for k in sel if k in by_kp]),
                     hide_index=True, height=180, width="stretch")
    else:
        st.caption("Click, box or lasso points on the map to open their cases and to assign, "
                   "split or exclude them.")
    return sel


def case_panel(c: Ctx, sel: list, shown_case: int | None) -> None:
    """The cases behind the selection (or the case sent here), one at a time."""
    tax, wk = c.tax, c.wk
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


def types_column(c: Ctx) -> None:
    """The types table, noise, duplicate titles, undo and redo, merge, retitle, export."""
    tax, wk, act, by_kp, label, name = c.tax, c.wk, c.act, c.by_kp, c.label, c.name
    visible = c.visible
    st.subheader("Error types")
    n_noise = sum(1 for q in tax.points if q["type"] is None and not q["excluded"])
    st.caption(f"{tax.n_cases} bad cases with keyphrases · {n_noise} keyphrases unassigned")
    # a click on a type's row opens its editor (below)
    st.dataframe(common.legend_table(tax), hide_index=True, width="stretch",
                 height=min(420, 38 + 35 * len(visible)), key=wk("legend"),
                 on_select=act.edit_from_legend, selection_mode="single-row",
                 column_config={"colour": st.column_config.ImageColumn("", width=28)})
    nz = taxonomy.noise(tax)
    if nz["kp_ids"]:
        with st.expander(f"{len(nz['kp_ids'])} unassigned keyphrases (noise) in "
                         f"{len(nz['case_ids'])} bad cases · {len(nz['only_noise'])} cases "
                         "reached by no type"):
            only = set(nz["only_noise"])
            st.dataframe(pd.DataFrame([{"kp": k, "keyphrase": by_kp[k]["text"],
                                        "case": by_kp[k]["case_id"],
                                        "noise only": by_kp[k]["case_id"] in only}
                                       for k in nz["kp_ids"]]),
                         hide_index=True, width="stretch", height=180, key="noise_table")
            st.caption("Synthesis cannot reach a case whose keyphrases are all noise. Assign "
                       "each to the type whose centre is nearest (one edit; Undo takes it "
                       "back), or leave those less similar than a floor.")
            n1, n2 = st.columns(2, vertical_alignment="bottom")
            n1.number_input("leave if similarity below", 0.0, 1.0, 0.0, 0.05,
                            key=wk("noise_floor"))
            n2.button("Assign noise to nearest types", key="assign_noise",
                      on_click=act.assign_noise)
    for title, ids in taxonomy.duplicate_titles(tax).items():
        st.warning(f"Types {', '.join(map(str, ids))} share the title “{title}”: rename or "
                   "merge them.")

    u1, u2, u3 = st.columns(3)
    u1.button("Undo last edit", key="undo", disabled=not tax.edits, on_click=act.undo)
    u2.button("Redo", key="redo", disabled=not tax.redoable, on_click=act.redo)
    u3.caption(f"{len(tax.edits)} edits in force")

    with st.form("merge"):
        st.multiselect("merge types", list(label), format_func=name, key=wk("merge_ids"))
        st.text_input("title of the merged type (optional)", key=wk("merge_title"))
        st.form_submit_button("Merge", on_click=act.merge)

    r1, r2 = st.columns(2)
    r1.button("Retitle types", key="retitle", on_click=act.retitle,
              help="Recompute titles of types a person has not renamed")
    r2.download_button(
        "Export types (JSONL)", key="export", mime="application/jsonl",
        file_name=f"types-{cl['clustering_id']}.jsonl",
        data=lambda: taxonomy.export_jsonl(s, taxonomy.current(s)))


def type_editor_section(c: Ctx) -> None:
    # One type's editor, for the type picked here or by a click on its row in the types
    # table. An editor per type drew hundreds of elements that the browser built again at
    # every edit (~1 s of an edit at 200 types); the choice outlives renames (edit_type).
    tax, wk, act, by_kp, name = c.tax, c.wk, c.act, c.by_kp, c.name
    ids = [t.type_id for t in c.visible]
    if ids:
        st.subheader("Edit a type")
        e1, e2 = st.columns([3, 2], vertical_alignment="bottom")
        tid = kept_choice(e1, f"type to edit ({len(ids)} types, largest first; or click its "
                          "row in the types table)", ids, "edit_type", wk("edit_type"), name)
        t = tax.types[tid]
        e2.caption(f"{common.pct(t.share)} · {t.n_cases} bad cases · {len(t.members)} "
                   f"keyphrases · title by {t.titled_by or '?'}"
                   + (" · **excluded**" if t.excluded else ""))
        with st.container(border=True, key="type_editor"):
            type_editor(t, act, by_kp)


def compare_section(c: Ctx) -> None:
    """What changed against the previous clustering, both with the edits applied."""
    tax = c.tax
    prev_id = (cl.get("diff") or {}).get("previous")
    # Folding the log onto the previous clustering too costs a second taxonomy: on by default
    # for maps of demo size, a click away on large ones.
    if prev_id and any(x["clustering_id"] == prev_id for x in cls) and st.toggle(
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


def edit_log(c: Ctx) -> None:
    tax, wk, act = c.tax, c.wk, c.act
    with st.expander("Edit log"):
        log = taxonomy.edit_log(s, tax)
        st.dataframe(pd.DataFrame(log, columns=["edit", "at", "what", "in force", "by"]),
                     hide_index=True, width="stretch")
        live = {e["edit"]: e["what"] for e in log if e["in force"]}
        if live:
            st.selectbox("edit to undo", list(live), key=wk("undo_pick"),
                         format_func=lambda i: f"{i}: {live.get(i, '')}"[:120])
            st.button("Undo this edit", key="undo_one", on_click=act.undo_picked)


# An edit reruns only the curation (a fragment: less to rebuild and send than the whole page;
# benchmarks/browser_edit.py times both), except while the job panel above polls or with
# SEI_MAP_FRAGMENT=0: then the whole page.
if polling or not fragment:
    curation(tax)
else:
    drawn = [tax]  # a full run draws the taxonomy it already derived; a fragment rerun anew

    @st.fragment
    def curation_fragment() -> None:
        curation(drawn.pop() if drawn else taxonomy.current(s))

    curation_fragment()

# Re-clustering and comparing two clusterings: below the curation, not rerun by an edit.
st.subheader("Re-cluster")
ins = instructor.from_env()
with st.form("recluster"):
    c1, c2, c3 = st.columns(3)
    method = common.param_input(c1, ClusterParams, "method", "method", "rc_method")
    mcs = c2.number_input("min cluster size (HDBSCAN)", 2, 500,
                          int(p.get("min_cluster_size") or ClusterParams.default(
                              "min_cluster_size")))
    nn = c3.number_input("UMAP neighbours", 2, 200,
                         int(p.get("n_neighbors") or ClusterParams.default("n_neighbors")))
    k = c1.number_input("k (K-means)", 2, 100, int(p.get("k") or ClusterParams.default("k")))
    batch = common.param_input(c2, ClusterParams, "llm_batch", "keyphrases per request (LLM)",
                               "rc_llm_batch", 5, 200)
    seed = c3.number_input("seed", 0, 2**31 - 1, int(cl["seed"] or 0))
    n_uniq = len({pt["text"] for pt in tax.points})
    st.caption("LLM clustering: the instructor names types from a sample of keyphrases, then "
               "assigns every keyphrase in batches, opening new types where none fits (the "
               f"paper's released code): about {llm_cluster.n_calls(n_uniq, int(batch))} "
               f"requests for these {n_uniq} distinct keyphrases, cached like every "
               "instructor call. " + (f"Instructor: `{ins.name}`." if ins else
                                      "No instructor is configured (Settings page)."))
    if st.form_submit_button("Re-cluster (background job)"):
        if method == "llm" and ins is None:
            # refused here, not by a failed job
            ss["flash_error"] = ("LLM clustering needs an instructor model: choose one on the "
                                 "Settings page.")
        else:
            jid = common.submit(s, "cluster", {"min_cluster_size": int(mcs),
                                               "n_neighbors": int(nn), "method": method,
                                               "k": int(k), "llm_batch": int(batch),
                                               "seed": int(seed),
                                               "analysis_id": cl["analysis_id"]},
                                show=lambda m: flash(m, error=True))
            if jid is not None:
                flash(f"clustering job #{jid} started; the map redraws when it ends")
        st.rerun()
if ins is None:
    common.page_link("Settings", "Configure an instructor for LLM clustering",
                     ":material/settings:")

# Two clusterings of the same keyphrases side by side (e.g. the instructor's and HDBSCAN's).
if len(cls) >= 2:
    with st.expander("Compare two clusterings (types, sizes, agreement)"):
        ids = [c["clustering_id"] for c in reversed(cls)]
        other = next((c["clustering_id"] for c in reversed(cls)
                      if c["method"] != cl["method"]), ids[1] if ids[0] == cl["clustering_id"]
                     else ids[0])
        a1, a2 = st.columns(2)
        ca = a1.selectbox("clustering A", ids, index=ids.index(cl["clustering_id"]),
                          format_func=names.get, key="agree_a")
        cb = a2.selectbox("clustering B", ids, index=ids.index(other), format_func=names.get,
                          key="agree_b")
        try:
            ag = agreement(s, ca, cb)
        except ValueError as e:
            st.info(str(e))
        else:
            st.dataframe(pd.DataFrame([{
                "clustering": r["clustering"], "method": r["method"], "types": r["types"],
                "largest types": ", ".join(map(str, r["sizes"][:10])),
                "noise keyphrases": r["noise"]} for r in ag["rows"]]),
                hide_index=True, width="stretch")
            m1, m2, m3 = st.columns(3)
            m1.metric("shared keyphrases", ag["shared"])
            m2.metric("adjusted Rand index", f"{ag['ari']:.3f}",
                      help="1: the same grouping; 0: no more alike than chance. Noise "
                           "counts as one group.")
            m3.metric("normalised mutual information", f"{ag['nmi']:.3f}")
            if "ari_in_types" in ag:
                st.caption(f"On the {ag['in_types']} keyphrases both put in a type: ARI "
                           f"{ag['ari_in_types']:.3f}, NMI {ag['nmi_in_types']:.3f}.")
