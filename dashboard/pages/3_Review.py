"""Review: judged generations whose verdict is doubtful, each with its reasons. Confirm
the judge's verdict or override it; each decision is an edit in the log (undoable here,
with `sei types undo`, or with the Error map's Undo), and an override moves the case into
or out of the bad cases that analysis reads and the dev set's pools."""

import json

import common
import pandas as pd
import streamlit as st

from pipeline.analysis import review

s = common.header("Review")
ss = st.session_state
WORD = {True: "correct", False: "wrong"}


def act(fn, *args, msg: str, then: str | None = None) -> None:
    """A decision or an undo (a callback: it runs before the rerun that draws its result);
    `then`: the generation to show next."""
    try:
        edit = fn(s, *args, author="app")
    except ValueError as e:
        common.flash(str(e), error=True)
        return
    common.flash(f"edit {edit}: {msg}")
    if then is not None:
        ss["rv_pick"] = then


if msg := ss.pop("flash", None):
    st.success(msg)
if err := ss.pop("flash_error", None):
    st.error(err)

f1, f2 = st.columns([3, 1])
labels = {v: k for k, v in review.REASONS.items()}
wanted = f1.multiselect("reasons", list(labels), key="rv_reasons",
                        placeholder="any reason")
show_decided = f2.toggle("show decided too", key="rv_decided")
items = review.queue(s, reviewed=show_decided)
if wanted:
    codes = {labels[w] for w in wanted}
    items = [r for r in items if codes & {x["code"] for x in r["reasons"]}]
decided = review.decisions(s)
st.button("Undo the latest review decision", key="rv_undo", disabled=not decided,
          on_click=act, args=(review.undo,), kwargs={"msg": "undid the latest decision"})

waiting = [r for r in items if r["decision"] is None]
n = review.counts(waiting)
st.caption(f"{len(waiting)} doubtful verdicts waiting · "
           + " · ".join(f"{review.REASONS[k]}: {v}" for k, v in n.items() if v)
           + f" · {len(decided)} decisions in force")
if not items:
    if s.runs("extract"):
        st.info("No doubtful verdict waiting for review.")
    else:
        st.info("No extraction runs yet: the quick start on the Overview page makes one.")
        common.page_link("Overview", "Open the quick start", ":material/play_arrow:")
    st.stop()

table = pd.DataFrame([{
    "id": r["id"], "dataset": r["dataset"], "pid": r["pid"], "case_id": r["case_id"],
    "judged": WORD[r["stored"]], "verdict": WORD[r["verdict"]], "decision": r["decision"] or "",
    "reasons": "; ".join(review.REASONS[x["code"]] for x in r["reasons"]),
    "expected": r["answer"], "got": r["pred"]} for r in items])
st.dataframe(table, hide_index=True, width="stretch", key="rv_table")

by_id = {r["id"]: r for r in items}
if ss.get("rv_pick") not in by_id:  # decided and gone from the list, or filtered out
    ss.pop("rv_pick", None)
pick = st.selectbox("generation", list(by_id), key="rv_pick",
                    format_func=lambda i: f"{i} · {by_id[i]['dataset']}/{by_id[i]['pid']} · "
                                          f"judged {WORD[by_id[i]['stored']]}")
r = by_id[pick]

st.divider()
st.subheader(f"{r['dataset']} / {r['split']} / {r['pid']}"
             + (f" · bad case {r['case_id']}" if r["case_id"] is not None else ""))
st.markdown("**Why doubtful**" if r["reasons"] else "**Not doubtful** (decided from elsewhere)")
for x in r["reasons"]:
    st.text(f"• {x['text']}")
a, b = st.columns(2)
with a:
    st.markdown("**Question**")
    st.text(r["question"])
    st.markdown("**Reference answer**")
    st.code(r["answer"], language=None)
    judge = json.loads(r["judge"]) if isinstance(r["judge"], str) else (r["judge"] or {})
    st.json({"extracted answer": r["pred"], "extraction": judge.get("method"),
             "judged": WORD[r["stored"]], "detail": judge.get("detail"),
             "completion tokens": int(r["completion_tokens"] or 0), "run": r["run_id"]})
with b:
    st.markdown(f"**Model output** ({r['model_id']})")
    st.code(r["output"] or "", language=None, wrap_lines=True)

ids = list(by_id)
after = ids[ids.index(pick) + 1] if ids.index(pick) + 1 < len(ids) else None
if r["decision"] is None:
    other = not r["stored"]
    c1, c2 = st.columns(2)
    c1.button(f"Confirm: {WORD[r['stored']]}", key="rv_confirm", on_click=act,
              args=(review.confirm, pick), kwargs={
                  "msg": f"confirmed {pick} as {WORD[r['stored']]}", "then": after})
    c2.button(f"Override: {WORD[other]}", key="rv_override", type="primary", on_click=act,
              args=(review.override, pick, other),
              kwargs={"msg": f"set {pick} to {WORD[other]}", "then": after})
else:
    st.info(f"{r['decision'].capitalize()} as {WORD[r['verdict']]} (edit {r['edit_id']}).")
    st.button("Undo this decision", key="rv_undo_this", on_click=act,
              args=(review.undo, r["edit_id"]), kwargs={"msg": f"undid edit {r['edit_id']}"})
