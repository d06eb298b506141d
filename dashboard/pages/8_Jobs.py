"""Jobs: every background job with status, progress, ETA, log tail, cancel and resume.

The list lives in a fragment that reruns every two seconds, so progress moves without
a manual refresh; jobs are OS processes recorded in the store, so a browser refresh
(or closing the tab) changes nothing about them."""

import common
import streamlit as st

from pipeline import jobs

s = common.header("Jobs")


with st.expander("Start a job"):
    with st.form("submit"):
        kind = st.selectbox("stage", ["extract", "analyze", "cluster", "quickstart"])
        c1, c2, c3 = st.columns(3)
        dataset = c1.text_input("dataset (extract)", "demo")
        split = c2.text_input("split (extract)", "train")
        limit = c3.number_input("limit (0 = all; not cluster)", 0, 100000, 64)
        if st.form_submit_button("Start"):
            params = {} if kind == "cluster" else {"limit": int(limit) or None}
            if kind == "extract":
                params.update(dataset=dataset, split=split)
            jid = common.submit(s, kind, params)  # a refusal is said in words
            if jid is not None:
                st.success(f"job #{jid} started")


@st.fragment(run_every=2)
def job_list():
    jobs.reap(s)  # dead or stale jobs are marked failed before they are shown
    rows = s.jobs(limit=50)
    if not rows:
        st.info("No jobs yet.")
        return
    for j in rows:
        common.job_row(s, j, st.container(border=True), controls=True)


job_list()
