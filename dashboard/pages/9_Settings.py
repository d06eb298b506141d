"""Settings: instructor endpoint and model, target model, store path.

The API key is read from the environment only: this page says whether one is set and
never shows or stores it."""

import os

import common
import streamlit as st

from pipeline.models import settings
from pipeline.models.instructor import from_env

s = common.header("Settings")
cfg = settings.load()

st.subheader("Instructor")
st.caption(f"The settings of this store, saved beside it in `{settings.path()}`: another "
           "store keeps its own.")
with st.form("instructor"):
    base = st.text_input("endpoint (OpenAI-compatible base URL; empty: the OpenAI API)",
                         cfg.instructor_base_url)
    model = st.text_input("model (empty: no instructor, the offline analyzer)",
                          cfg.instructor_model)
    target = st.text_input("target model (embedded default or a local HF model directory)",
                           cfg.target_model)
    if st.form_submit_button("Save"):
        try:
            p = settings.save(settings.Settings(base.strip(), model.strip(), target.strip()))
            st.success(f"saved to {p}")
        except ValueError as e:
            st.error(str(e))
st.caption("OPENAI_API_KEY is " + ("set in the environment." if os.environ.get("OPENAI_API_KEY")
                                  else "not set.") + " Keys are never stored or shown here.")
for var in ("SEI_INSTRUCTOR_MODEL", "OPENAI_BASE_URL"):
    if os.environ.get(var):
        st.caption(f"{var} is set in the environment and takes precedence over this form.")
ins = from_env()
st.text(f"in use: {ins.name if ins else 'offline analyzer'}")

st.subheader("Store")
st.text(str(s.path))
st.caption("Set SEI_DB (or `sei --db`) before starting the app to use another store; "
           "background jobs inherit it.")
