"""Bad-case extraction with the real SmolLM2 model and a real llama.cpp server."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pipeline.models.target import GenParams, LocalTarget, ModelError, ensure_default_model
from pipeline.problems.data import import_demo
from pipeline.shells.cli import cli
from pipeline.stages.extract import extract


@pytest.mark.slow
def test_default_model_is_cached_as_safetensors():
    d = ensure_default_model()
    assert (d / "model.safetensors").stat().st_size > 100e6
    src = json.loads((d / "sei_source.json").read_text())
    assert src["gguf"].endswith(".gguf") and len(src["gguf_sha256"]) == 64


def test_batched_generation_matches_one_at_a_time(target):
    """Left padding must not change greedy outputs."""
    from pipeline.models.target import prompt_template, render

    tmpl = prompt_template()
    qs = ["What is 7 times 8?",
          "Tom has 3 apples and buys 4 more. How many apples does he have now?"]
    p = GenParams(max_new_tokens=24)
    batched = target.generate([render(tmpl, q) for q in qs], p)
    single = [target.generate([render(tmpl, q)], p)[0] for q in qs]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.completion_tokens and g.prompt_tokens > 20 for g in batched)


def test_shared_prefix_prefill_matches_plain_left_padding(target):
    """The shared-prefix KV path must give the tokens plain HF left padding gives."""
    import torch

    from pipeline.models.target import _common_prefix, prompt_template, render
    from pipeline.problems.demo import generate as demo_problems

    tmpl = prompt_template()
    msgs = [render(tmpl, p["question"]) for p in demo_problems(6, seed=3)]
    p = GenParams(max_new_tokens=24)
    ours = [g.text for g in target.generate(msgs, p)]
    tok, model = target._tok, target._model
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert tok.padding_side == "left"
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert _common_prefix(ids) > 40  # the system prompt and instruction are shared
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=24, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    plain = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert ours == plain


@pytest.mark.slow
def test_extract_records_run_generations_and_bad_cases(store):
    import_demo(store, 40, 10)
    said = []
    run_id = extract(store, "demo", "train", limit=6,
                     params=GenParams(max_new_tokens=64, batch_size=6),
                     progress=lambda d, t, step, msg: said.append(msg))
    assert "loading the target model" in said
    run = store.run(run_id)
    m = json.loads(run["manifest"])
    assert m["model_id"] == "smollm2-135m-instruct" and m["backend"] == "local"
    assert len(m["weights_hash"]) == 16 and len(m["data_hash"]) == 16
    assert m["gen_params"]["max_new_tokens"] == 64 and "Question:" in m["prompt_text"]
    assert m["code_version"]
    gens = store.rows("SELECT * FROM generations WHERE run_id = ?", [run_id])
    assert len(gens) == 6 and all(g["output"] for g in gens)
    assert all(g["completion_tokens"] <= 64 and g["latency_s"] > 0 for g in gens)
    wrong = sum(1 for g in gens if g["correct"] is False)
    assert store.count("bad_cases") == wrong
    assert wrong >= 1  # a 135M model gets some demo problems wrong
    for b in store.bad_cases(run_id):
        assert b["output"] and b["answer"] and b["question"]
    # Same command again: same run, nothing to do, so the model is not even loaded.
    said.clear()
    assert extract(store, "demo", "train", limit=6,
                   params=GenParams(max_new_tokens=64, batch_size=6),
                   progress=lambda d, t, step, msg: said.append(msg)) == run_id
    assert said == [f"run {run_id}: 0 to do"]
    assert store.count("generations") == 6 and store.count("bad_cases") == wrong
    r = store.runs()[0]
    assert r["n_done"] == 6 and abs(r["accuracy"] - (6 - wrong) / 6) < 1e-9


@pytest.mark.slow
def test_broken_model_path_is_a_clear_error(store, tmp_path):
    import_demo(store, 5, 2)
    with pytest.raises(ModelError, match="not found"):
        extract(store, "demo", "train", limit=2, model=str(tmp_path / "nope"))
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        LocalTarget(model=str(d)).load()
    r = CliRunner().invoke(cli, ["--db", str(store.path), "extract", "--limit", "2",
                                 "--model", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "not found" in r.output
    assert store.count("generations") == 0


@pytest.mark.slow
def test_target_model_from_settings_drives_jobs_and_cli(store, tmp_path):
    """The target model saved on the Settings page is what a job (and a CLI run without
    --model) runs; a bogus one is refused when saved, naming it."""
    from pipeline.loop.registry import run_stage
    from pipeline.models import settings

    mine = tmp_path / "my-smol"
    mine.symlink_to(ensure_default_model(), target_is_directory=True)
    with pytest.raises(ValueError, match="nope"):
        settings.save(settings.Settings(target_model=str(tmp_path / "nope")))
    settings.save(settings.Settings(target_model=str(mine)))
    try:
        import_demo(store, 6, 2)
        out = run_stage(store, "extract", {"limit": 2, "max_new_tokens": 8},
                        lambda *a: None)
        run = next(r for r in store.runs() if r["run_id"] == out["run_id"])
        assert run["model_id"] == "my-smol" and run["n_done"] == 2
        r = CliRunner().invoke(cli, ["--db", str(store.path), "extract", "--limit", "2",
                                     "--max-new-tokens", "8"])
        assert r.exit_code == 0, r.output
        assert {r["model_id"] for r in store.runs()} == {"my-smol"}
    finally:
        settings.path().unlink()


@pytest.mark.slow
def test_killed_extraction_resumes_without_duplicates(store, scripted_slow):
    """A kill -9 mid-run (the scripted target at 0.25 s a row: the kill lands mid-run)."""
    import_demo(store, 40, 10)
    cmd = [sys.executable, "-m", "pipeline.shells.cli", "--db", str(store.path), "extract",
           "--limit", "10", "--batch-size", "2", "--max-new-tokens", "32"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    deadline = time.monotonic() + 300
    # Wait for two generations; the process must still be working, and within the deadline.
    while store.scalar("SELECT count(*) FROM generations") < 2:
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "fewer than 2 generations after 300 s"
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    partial = store.count("generations")
    assert 2 <= partial < 10 and partial % 2 == 0  # whole batches only
    assert store.runs()[0]["status"] == "interrupted"  # not 'running' forever
    out = CliRunner().invoke(cli, ["--db", str(store.path), "runs"]).output
    assert "interrupted" in out and "running" not in out
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "extract" in r.stderr and "10/10" in r.stderr  # the tqdm bar
    assert store.count("generations") == 10
    assert store.scalar("SELECT count(DISTINCT (dataset, split, pid)) FROM bad_cases") == \
        store.count("bad_cases")
    assert store.count("runs") == 1
    assert store.runs()[0]["status"] == "finished"


def test_a_run_nobody_works_on_shows_interrupted_without_accuracy(store):
    """A run row left 'running' by a process that died before its first item: shown as
    interrupted with accuracy '-', not 'running' at 0.0%; while a process holds the run
    it is running, and a second process cannot run it at the same time."""
    m = {"run_id": "extract-x", "kind": "extract", "model_id": "m", "dataset": "d",
         "split": "s", "n_items": 5}
    store.upsert_run(m)
    r = store.runs()[0]
    assert (r["status"], r["n_done"], r["accuracy"]) == ("interrupted", 0, None)
    line = CliRunner().invoke(cli, ["--db", str(store.path), "runs"]).output.splitlines()[1]
    assert line.split()[-3:] == ["-", "0", "interrupted"]
    with store.holding_run("extract-x"):
        assert store.runs()[0]["status"] == "running"
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from pipeline.storage.store import Store; "
             "s = Store(sys.argv[1]); print(s.runs()[0]['status']); "
             "s.holding_run('extract-x').__enter__()", str(store.path)],
            capture_output=True, text=True, timeout=120)
        assert other.stdout.split() == ["running"]
        assert "run extract-x is already running in another process" in other.stderr
    assert store.runs()[0]["status"] == "interrupted"


def test_openai_backend_against_real_server(store, llama_server):
    import_demo(store, 8, 5)
    # One problem far longer than the server's context: that item fails, the run goes on.
    store.insert_problems([{"dataset": "demo", "split": "train", "pid": "zz-too-long",
                            "question": "How many? " + "one two three " * 1500, "answer": "1",
                            "source_line": 10**6}])
    run_id = extract(store, "demo", "train", backend="openai", model="smollm2-135m-instruct",
                     base_url=llama_server, params=GenParams(max_new_tokens=48, batch_size=4))
    gens = {g["pid"]: g for g in store.rows("SELECT * FROM generations WHERE run_id = ?", [run_id])}
    assert len(gens) == 9
    assert gens["zz-too-long"]["error"] and gens["zz-too-long"]["output"] is None
    ok = [g for g in gens.values() if g["error"] is None]
    assert len(ok) == 8 and all(g["output"] and g["completion_tokens"] for g in ok)
    assert store.run(run_id)["status"] == "finished_with_errors"
    assert store.run(run_id)["backend"] == "openai"
    # The CLI's run listing shows the run with its accuracy.
    r = CliRunner().invoke(cli, ["--db", str(store.path), "runs"])
    assert run_id in r.output and "%" in r.output and "smollm2" in r.output


def test_evaluation_through_an_openai_compatible_server(store, llama_server):
    """`sei evaluate --backend openai`: the scale-out path (vLLM serving an adapter under a
    name), here against llama.cpp serving the base model as iteration 0."""
    import_demo(store, 20, 6)
    args = ["--db", str(store.path), "evaluate", "--iteration", "0", "--set", "demo/test",
            "--limit", "6", "--max-new-tokens", "64", "--backend", "openai",
            "--base-url", llama_server]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "--served-model" in r.output
    r = CliRunner().invoke(cli, args + ["--served-model", "smollm2-135m-instruct"])
    assert r.exit_code == 0, r.output
    link = [lk for lk in store.iteration_links(0) if lk["role"] == "eval:demo/test"]
    assert len(link) == 1
    run = store.run(link[0]["ref"])
    assert run["backend"] == "openai" and run["kind"] == "evaluate"
    assert run["model_id"] == "smollm2-135m-instruct"
    assert run["weights_hash"] == f"endpoint:{llama_server}"
    items = store.run_items(run["run_id"])
    assert len(items) == 6 and all(i["output"] for i in items)
    # each stored verdict is the judge's on the stored output against the set's reference
    from pipeline.problems.answers import judge

    ref = {p["pid"]: p["answer"] for p in store.problems("demo", "test")}
    stored = store.rows("SELECT pid, pred, correct, judge FROM generations WHERE run_id = ? "
                        "ORDER BY pid", [run["run_id"]])
    verdicts = {i["pid"]: judge(i["output"], ref[i["pid"]]) for i in items}
    assert [(g["pid"], g["pred"], g["correct"], json.loads(g["judge"])) for g in stored] == \
        [(pid, v["pred"], v["correct"], v) for pid, v in sorted(verdicts.items())]
    [listed] = [r for r in store.runs() if r["run_id"] == run["run_id"]]
    assert listed["n_correct"] == sum(v["correct"] for v in verdicts.values())


@pytest.mark.slow
def test_progress_moves_inside_one_batch_and_the_run_is_one_batch(store):
    """Progress comes at every decoding step of a batch, in rows' worth (an extraction sat
    at 0/16 with no ETA for 80 s), so a run that fits one batch is generated as one batch
    (a small first batch doubled the decoding steps of a small run)."""
    import_demo(store, 12, 2)
    seen = []

    def progress(d, t, step, msg):
        seen.append((d, msg, store.count("generations")))

    extract(store, "demo", "train", limit=6, params=GenParams(max_new_tokens=8, batch_size=16),
            progress=progress)
    assert [m for _, m, _ in seen if m.startswith("generating")][0] == "generating 1-6 of 6"
    assert not any(m.startswith("generating") and m != "generating 1-6 of 6"
                   for _, m, _ in seen), seen
    # counts that moved while nothing was stored yet: inside the batch
    inside = [d for d, m, stored in seen if m == "generating 1-6 of 6" and stored == 0]
    assert max(inside) > 0, seen
    assert inside == sorted(inside) and max(inside) < 6  # never back, never "done" unstored
    assert seen[-1][0] == 6 and store.count("generations") == 6
