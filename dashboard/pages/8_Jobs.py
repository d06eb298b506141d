"""Jobs: every background job with status, progress, ETA, log tail, cancel and resume.

The list lives in a fragment that reruns every two seconds, so progress moves without
a manual refresh; jobs are OS processes recorded in the store, so a browser refresh
(or closing the tab) changes nothing about them."""

import common
import streamlit as st

from pipeline.loop import jobs
from pipeline.loop import registry as stages

s = common.header("Jobs")


with st.expander("Start a job"):
    # every registered stage, its form drawn from its Params (defaults, help, choices)
    # in the order they are registered: the loop's, extract first
    kind = st.selectbox("stage", list(stages.STAGES), key="job-kind",
                        format_func=lambda k: f"{k}: {stages.STAGES[k].help}")
    with st.form("submit"):
        params = common.params_form(stages.STAGES[kind].params, f"job-{kind}")
        if st.form_submit_button("Start"):
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
