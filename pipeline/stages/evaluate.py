"""Evaluation: extraction runs of an iteration's model on held-out sets, and the
numbers the app shows for them: accuracy per iteration and evaluation set with the 95%
paired-bootstrap interval of the change against the base model (and the exact McNemar
p), and the fix rate per error type. Every figure is computed from stored runs, each of
which records its model, adapter hash, data hash, generation parameters and seed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pipeline.analysis.review import overrides
from pipeline.core.params import param
from pipeline.core.progress import Progress, no_progress, scaled
from pipeline.core.stats import pair_runs, paired_diff
from pipeline.models.settings import target_model
from pipeline.models.target import BackendParams, GenParams
from pipeline.stages.extract import extract
from pipeline.storage.store import Store

log = logging.getLogger(__name__)


@dataclass
class EvalParams(BackendParams):
    iteration: int = param(1, "The iteration whose model answers (0: the base model).",
                           cli=False)
    sets: list[str] = param(help="Evaluation sets, dataset/split (default: every test "
                                 "split).", factory=lambda: ["demo/test"], cli=False)
    limit: int | None = param(200, "Per set: the first N problems, the same every time.")
    max_new_tokens: int = param(200, "Generation limit per answer.")
    # finished rows leave the batch (early stop), so a wide batch costs little more per
    # step than a narrow one (200 demo test problems: 73 s at 48 rows, 54 s at 100, 50 s
    # at 200, identical outputs; 100 keeps the KV cache at half of 200's)
    batch_size: int = param(100, "Rows per generation batch (local backend).")
    adapter: str | None = param(None, "Adapter (default: the iteration's trained one).")
    arm: str = param("sei", "Which arm's adapter answers: sei (one-shot selection), "
                            "random, all.", choices=("sei", "random", "all"), cli=False)
    # openai: an OpenAI-compatible server (vLLM) answers; `served_model` is the name it
    # serves the base model under, `served_adapter` the name of this iteration's adapter
    # (by default it is loaded there at run time: never the base model in its stead)
    backend: str = param("local", "openai: an OpenAI-compatible server (vLLM) answers.",
                         choices=("local", "openai"))
    base_url: str | None = param(None, "The server's URL (openai backend).")
    served_model: str | None = param(None, "The name the server serves the base model "
                                           "under (openai backend).")
    served_adapter: str | None = param(None, "The name the server serves this iteration's "
                                             "adapter under (vLLM --lora-modules NAME=DIR); "
                                             "default: loaded at run time via "
                                             "/v1/load_lora_adapter")
    train_check: bool = param(True, "Also rerun the base run's train problems (fix rates).")
    seed: int = param(0, "Seed recorded with the runs (decoding is greedy).")


def eval_gen_params(p: EvalParams) -> GenParams:
    """Generation parameters of an evaluation run: stop at the first final answer."""
    # Every evaluation stops at the first complete final answer and is judged there: the
    # same rule for the base model and every adapter, so their runs pair item by item.
    return GenParams(max_new_tokens=p.max_new_tokens, batch_size=p.batch_size, seed=p.seed,
                     stop_at_answer=True, **p.backend_kw())


def default_sets(store: Store) -> list[str]:
    """The demo test split and every imported test split."""
    return sorted({f"{d['dataset']}/{d['split']}" for d in store.datasets()
                   if d["split"] == "test"})


def base_train_run(store: Store) -> dict | None:
    """The base model's first train-split extraction: the bad cases iteration 1 works on."""
    for r in store.runs("extract"):
        if r["split"] != "test" and not r["adapter"] and r["n_done"]:
            return r
    return None


def evaluate(store: Store, p: EvalParams, progress: Progress = no_progress) -> dict:
    """Run iteration p.iteration's model (0: the base) on each set; link the runs."""
    model = target_model()
    if p.backend == "openai":
        if not p.served_model:
            raise ValueError("evaluation through an OpenAI-compatible server needs the name "
                             "it serves the model under (--served-model)")
        model = p.served_model
    adapter = p.adapter
    if p.iteration > 0 and adapter is None:
        # never the base model silently: resolve.models fills in the arm's adapter
        raise ValueError(f"evaluating iteration {p.iteration} ({p.arm} arm) needs its "
                         "adapter (resolve.models, or --adapter)")
    jobs = []
    for s in p.sets:
        if "/" not in s:
            raise ValueError(f"evaluation set {s!r}: expected dataset/split, e.g. demo/test")
        ds, sp = s.split("/", 1)
        jobs.append((ds, sp, p.limit, "evaluate"))
    base = base_train_run(store)
    if p.train_check and p.iteration > 0 and base:
        # the base run's own train problems with the new model: fixed / persisting / new
        # errors per type, and the next iteration's extraction
        jobs.append((base["dataset"], base["split"], base["n_items"], "extract"))
    out = {"iteration": p.iteration, "adapter": adapter, "runs": {}}
    # one bar over all sets, in problems ("120 of 300"), not in a unit of its own
    sizes = {(d["dataset"], d["split"]): d["n"] for d in store.datasets()}
    counts = [max(1, min(sizes.get((ds, sp), 0), limit or 10**12)) for ds, sp, limit, _ in jobs]
    for i, (ds, sp, limit, kind) in enumerate(jobs):
        gp = eval_gen_params(p) if kind == "evaluate" else _like_run(store, base, p)
        rid = extract(store, ds, sp, limit=limit, backend=p.backend, model=model,
                      adapter=adapter, base_url=p.base_url, params=gp, kind=kind,
                      progress=scaled(progress, sum(counts[:i]), counts[i], sum(counts)),
                      served_adapter=p.served_adapter)
        store.link_run(p.iteration, eval_role(p.arm if p.iteration else "sei", f"{ds}/{sp}")
                       if kind == "evaluate" else "train_check", rid)
        if kind == "extract":
            store.link_run(p.iteration + 1, "extract", rid)
        out["runs"][f"{ds}/{sp}" if kind == "evaluate" else "train_check"] = rid
        if kind == "evaluate":
            # problems scored wrong whatever the model answers: said with the figures
            n = len(unmatchable(store, ds, sp, pids={x["pid"] for x in store.run_items(rid)}))
            out.setdefault("unmatchable_references", {})[f"{ds}/{sp}"] = n
            if n:
                log.warning("%s", unmatchable_line(f"{ds}/{sp}", n))
    return out


def unmatchable(store: Store, dataset: str, split: str, limit: int | None = None,
                pids: set[str] | None = None) -> list[dict]:
    """The problems of dataset/split (its first `limit`, as an evaluation takes them, or
    those in `pids`) whose reference the judge cannot match to itself written as a model
    writes it ("The answer is X."): each one is scored wrong whatever the model answers.
    (The import reports them too, by file:line.)"""
    from pipeline.problems.answers import judge
    from pipeline.problems.data import as_a_model_writes_it

    probs = store.problems(dataset, split, None if pids is not None else limit)
    return [p for p in probs if (pids is None or p["pid"] in pids)
            and not judge(as_a_model_writes_it(p["answer"]), p["answer"])["correct"]]


def unmatchable_line(set_: str, n: int) -> str:
    """What an evaluation says of a set whose references include n that cannot match
    themselves (see unmatchable)."""
    return (f"{set_}: {n} reference{'s' if n != 1 else ''} the judge cannot match to "
            f"{'themselves' if n != 1 else 'itself'} (\"The answer is X.\" is not judged "
            f"equal to X), so {'those' if n != 1 else 'that'} {n} problem"
            f"{'s are' if n != 1 else ' is'} scored wrong whatever the model answers")


def eval_role(arm: str, set_: str) -> str:
    """The link role of an evaluation run: `eval:SET` for the SEI arm (and the base
    model), `eval@ARM:SET` for a baseline arm."""
    return f"eval:{set_}" if arm == "sei" else f"eval@{arm}:{set_}"


def parse_eval_role(role: str) -> tuple[str, str] | None:
    """(arm, set) of an evaluation link role, None for any other role."""
    if role.startswith("eval:"):
        return "sei", role[5:]
    if role.startswith("eval@"):
        arm, _, s = role[5:].partition(":")
        return arm, s
    return None


def _like_run(store: Store, run: dict, backend: BackendParams | None = None) -> GenParams:
    """The generation parameters of a stored run, so a rerun pairs with it; the backend's
    settings from `backend` where the run does not record them."""
    import json

    g = json.loads(run["gen_params"] or "{}") if isinstance(run.get("gen_params"), str) else {}
    if not g:
        g = json.loads(store.run(run["run_id"])["gen_params"] or "{}")
    return GenParams(**{**(backend.backend_kw() if backend else {}),
                        **{k: v for k, v in g.items() if k in GenParams.__dataclass_fields__}})


# -- the numbers the app shows ---------------------------------------------------------------


def eval_runs(store: Store) -> dict[tuple[int, str, str], str]:
    """{(iteration, arm, set): run id} of every linked evaluation run."""
    runs = {}
    for lk in store.iteration_links():
        parsed = parse_eval_role(lk["role"])
        if parsed:
            runs[(lk["iteration"], *parsed)] = lk["ref"]
    return runs


def accuracy_table(store: Store, n_boot: int = 10_000) -> list[dict]:
    """Per iteration, arm and evaluation set: accuracy, and the paired change against
    the base model (iteration 0) with its 95% bootstrap interval and McNemar p."""
    runs = eval_runs(store)
    rows = []
    for (it, arm, s), rid in sorted(runs.items()):
        items = store.run_items(rid)
        r = store.run(rid)
        row = {"iteration": it, "arm": arm, "set": s, "run_id": rid, "n": len(items),
               "accuracy": sum(x["correct"] for x in items) / len(items) if items else None,
               "adapter": r["adapter"], "weights_hash": r["weights_hash"],
               "data_hash": r["data_hash"], "seed": r["seed"], "model_id": r["model_id"]}
        base = runs.get((0, "sei", s))
        if it > 0 and base:
            a, b = pair_runs(store.run_items(base), items)
            if a:
                d = paired_diff(a, b, n_boot=n_boot, seed=0)
                row.update(diff=d.diff, lo=d.lo, hi=d.hi, mcnemar_p=d.mcnemar_p,
                           fixed=d.fixed, broken=d.broken, n_paired=d.n)
        rows.append(row)
    return rows


def fix_rates(store: Store) -> list[dict]:
    """Per iteration and error type of iteration 1's taxonomy: of the base model's bad
    cases of that type, how many the iteration's model fixed and how many persist; and
    per iteration the new errors (base right, now wrong). A verdict a person decided in
    review (pipeline/analysis/review.py) counts, not the judge's."""
    first = store.iteration(1)
    # the base model's train runs: iteration 1's extractions (one per train set)
    base_ids = [lk["ref"] for lk in store.iteration_links(1) if lk["role"] == "extract"]
    if not base_ids and base_train_run(store):
        base_ids = [base_train_run(store)["run_id"]]
    if first is None or not base_ids:
        return []
    ov = overrides(store)

    def verdicts(run_id: str) -> dict[tuple, bool]:
        return {(x["dataset"], x["split"], x["pid"]):
                ov.get((run_id, x["dataset"], x["split"], x["pid"]), x["correct"])
                for x in store.run_items(run_id)}

    cases = {c["case_id"]: (c["dataset"], c["split"], c["pid"])
             for c in store.bad_cases_of(base_ids, verdicts=ov)}
    base_ok = {k: ok for rid in base_ids for k, ok in verdicts(rid).items()}
    checks: dict[int, dict] = {}  # iteration -> its model's verdicts on the train problems
    for lk in store.iteration_links():
        if lk["role"] == "train_check":
            checks.setdefault(lk["iteration"], {}).update(verdicts(lk["ref"]))
    out = []
    for it, now in sorted(checks.items()):
        new_errors = sum(1 for k, ok in base_ok.items() if ok and now.get(k) is False)
        for t in first["taxonomy"]["types"]:
            keys = [cases[c] for c in t["case_ids"] if c in cases and cases[c] in now]
            fixed = sum(1 for k in keys if now[k])
            out.append({"iteration": it, "type_id": t["type_id"],
                        "title": t["title"], "n": len(keys), "fixed": fixed,
                        "persist": len(keys) - fixed,
                        "fix_rate": fixed / len(keys) if keys else None,
                        "new_errors": new_errors})
    return out
