"""Bad-case extraction: run the target model on problems, judge, store.

A run is identified by its manifest (model, weights, adapter, data, prompt, generation
parameters, seed), so running the same command again resumes the same run: finished
items are skipped, items that failed are retried. Each batch is written in one
transaction, so a killed run leaves whole items or nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from pipeline.core import config
from pipeline.core.progress import no_progress
from pipeline.models.target import (
    DEFAULT_PROMPT,
    GenParams,
    ServerUnavailable,
    make_target,
    params_dict,
    prompt_template,
    render,
    runtime_key,
)
from pipeline.problems.answers import judge
from pipeline.problems.data import data_hash
from pipeline.storage.store import Store

# progress(done, total, step, message); may raise to stop at a safe point (between batches)
Progress = Callable[[int, int, str, str], None]



def manifest_for(target, dataset: str, split: str, problems: list[dict],
                 params: GenParams, prompt: str, kind: str) -> dict:
    """What identifies an extraction run: model and weights hash, data hash, prompt,
    generation parameters, seed and code version. The local backend's device and dtype
    are recorded; they are part of the id unless they are the CPU in float32 (what every
    run used before they were options: those runs keep their ids)."""
    model_id, whash = target.identity()
    runtime = target.runtime()
    m = {
        "kind": kind, "model_id": model_id, "weights_hash": whash, "adapter": target.adapter,
        "backend": target.backend, "dataset": dataset, "split": split,
        "data_hash": data_hash(problems), "n_items": len(problems),
        "prompt_template": prompt, "prompt_text": prompt_template(prompt),
        "gen_params": {**{k: v for k, v in params_dict(params).items() if k != "batch_size"},
                       **runtime_key(runtime)},
        "seed": params.seed,
    }
    key = hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:10]
    m["run_id"] = f"{kind}-{key}"
    m["code_version"] = config.code_version()
    m["batch_size"] = params.batch_size
    m.update(runtime)  # device, dtype (local backend): recorded whatever they are
    return m


def extract(store: Store, dataset: str, split: str, limit: int | None = None,
            backend: str = "local", model: str = config.DEFAULT_MODEL,
            adapter: str | None = None, base_url: str | None = None,
            params: GenParams | None = None, prompt: str = DEFAULT_PROMPT,
            kind: str = "extract", progress: Progress = no_progress,
            served_adapter: str | None = None) -> str:
    """Run the target on (dataset, split)[:limit]; returns the run id. `served_adapter`:
    the name an OpenAI-compatible server serves `adapter` under (default: loaded there at
    run time under a name derived from its weights)."""
    params = params or GenParams()
    problems = store.problems(dataset, split, limit)
    if not problems:
        raise ValueError(f"no problems for dataset={dataset!r} split={split!r}; "
                         "import some first (`sei data demo` or `sei data import`)")
    target = make_target(backend, model, adapter, base_url, served_adapter=served_adapter,
                         **params.backend_kw())
    m = manifest_for(target, dataset, split, problems, params, prompt, kind)
    run_id = m["run_id"]
    if backend == "openai" and len(store.done_pids(run_id)) < len(problems):
        # the server must serve the model the manifest names (an adapter by its served
        # name): refused here, before the run is recorded or anything generated
        target.load()
    with store.holding_run(run_id):  # a killed run shows as interrupted, not running
        store.upsert_run(m)
        _run(store, run_id, m, target, problems, params, progress)
    return run_id


def _run(store: Store, run_id: str, m: dict, target, problems: list[dict], params: GenParams,
         progress: Progress) -> None:
    kind, done = m["kind"], store.done_pids(run_id)  # kind: the step progress names
    todo = [p for p in problems if p["pid"] not in done]
    total = len(problems)
    progress(len(done), total, kind, f"run {run_id}: {len(todo)} to do")
    if todo:
        progress(len(done), total, kind, "loading the target model")
        target.load()
    tmpl = m["prompt_text"]
    n_done = len(done)
    # Progress moves inside a batch (rows' worth of tokens at every decoding step), so no
    # small first batch is needed for an early count and ETA: on a CPU a decoding step
    # costs about the same for 4 rows as for 64, and a first batch of 4 doubled the
    # decoding steps of a small run.
    for i in range(0, len(todo), params.batch_size):
        batch = todo[i:i + params.batch_size]
        what = f"generating {n_done + 1}-{n_done + len(batch)} of {total}"
        progress(n_done, total, kind, what)
        stopped, size = [], len(batch)

        def rows(n, base=n_done, size=size, what=what, stopped=stopped):
            try:
                progress(base + min(n, size - 1), total, kind, what)
            except BaseException:
                stopped.append(True)  # a cancel: the batch is dropped (resumable), not failed
                raise
        try:
            gens = target.generate([render(tmpl, p["question"]) for p in batch], params,
                                   on_rows=rows)
        except ServerUnavailable:
            raise  # a server down after its retries: the run stops (resumable), one line
        except Exception as e:  # a failing batch is recorded per item; the run goes on
            if stopped:
                raise
            gens = None
            err = f"{type(e).__name__}: {e}"
        items = []
        for j, p in enumerate(batch):
            base = {"dataset": p["dataset"], "split": p["split"], "pid": p["pid"]}
            if gens is None or gens[j].error:
                items.append(dict(base, error=gens[j].error if gens else err))
                continue
            g = gens[j]
            try:
                v = judge(g.text, p["answer"])
            except Exception as e:
                items.append(dict(base, output=g.text, error=f"judge failed: {e}"))
                continue
            items.append(dict(base, output=g.text, pred=v["pred"], correct=v["correct"],
                              judge=v, prompt_tokens=g.prompt_tokens,
                              completion_tokens=g.completion_tokens, latency_s=g.latency_s))
        store.record_generations(run_id, items)
        n_done += len(batch)
        n_bad = sum(1 for it in items if it.get("correct") is False)
        rate = target.throughput()
        progress(n_done, total, kind, f"batch of {len(batch)}: {n_bad} wrong"
                 + (f" ({rate})" if rate else ""))
    errors = store.run_errors(run_id)
    store.finish_run(run_id, "finished" if not errors else "finished_with_errors")
