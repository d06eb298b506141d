"""The SEI loop end to end: `sei iterate --iterations N`.

Iteration 1 works on the base model's bad cases (the quick start's extraction, analysis
and clustering, run here if missing). Iteration i+1 works on iteration i's model: its
rerun of the train problems (made by evaluation) is analysed and re-clustered, which
keeps every curation edit. Then, per iteration: freeze the taxonomy, synthesize, select
(one-shot, plus the random baseline of the same size), train, evaluate. Every step is an
idempotent, resumable stage, so a killed loop re-run continues where it stopped; with
`review`, the loop stops before synthesis of each iteration after the first so that a
person can curate the new error types, and the next `sei iterate` goes on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline import iterations
from pipeline.progress import Progress, no_progress, scaled
from pipeline.store import Store

STEPS = ("extract", "analyze", "cluster", "synthesize", "select", "baseline", "train",
         "evaluate")


@dataclass
class LoopParams:
    iterations: int = 1
    mode: str = "scratch"
    review: bool = False
    train_limit: int = 96            # train problems the model is run on each iteration
    max_new_tokens: int = 256
    eval_sets: list[str] | None = None
    eval_limit: int | None = 200
    baseline: bool = True            # also select (and train) at random, the ablation
    synth: dict = field(default_factory=dict)   # overrides of SynthParams
    select: dict = field(default_factory=dict)  # overrides of SelectParams
    train: dict = field(default_factory=dict)   # overrides of TrainParams
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> LoopParams:
        """Parameters from a job's dict (unknown keys ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _error_types(store: Store, i: int, p: LoopParams, extract_bar: Progress,
                 analyze_bar: Progress, cluster_bar: Progress) -> None:
    """Iteration i's model on the train split, its bad cases' keyphrases and their error
    types (extract -> analyze -> cluster), each resumed or skipped when already there."""
    from pipeline.cluster import ClusterParams, cluster
    from pipeline.extract import extract
    from pipeline.keyphrases import analyze_bad_cases
    from pipeline.target import GenParams

    model, adapter = iterations.model_for(store, i)
    if i > 1 and adapter is None:
        raise ValueError(f"iteration {i - 1} has no trained adapter")
    linked = [lk["ref"] for lk in store.iteration_links(i) if lk["role"] == "extract"]
    rid = linked[-1] if linked else extract(
        store, "demo", "train", limit=p.train_limit, model=model, adapter=adapter,
        params=GenParams(max_new_tokens=p.max_new_tokens, seed=p.seed),
        progress=extract_bar)
    store.link_run(i, "extract", rid)
    aid = analyze_bad_cases(store, run_id=rid, progress=analyze_bar)
    cl = store.latest_clustering()
    if cl is None or cl["analysis_id"] != aid:
        # iteration i's own bad cases: current on purpose (not held as a subset)
        cluster(store, ClusterParams(), analysis_id=aid, progress=cluster_bar,
                make_current=True)


def iterate(store: Store, p: LoopParams, progress: Progress = no_progress) -> dict:
    """The SEI loop for p.iterations iterations, resumable: the base model's evaluation,
    then per iteration error types, synthesis, selection, training and evaluation."""
    from pipeline.data import import_demo
    from pipeline.evaluate import EvalParams, default_sets, evaluate
    from pipeline.select import SelectParams, select
    from pipeline.synthesize import SynthParams, synthesize
    from pipeline.train import TrainParams, train

    n_steps = len(STEPS) * p.iterations + 1
    out: dict = {"iterations": []}

    def bar(k: int, name: str) -> Progress:
        return scaled(progress, k * 100, 100, n_steps * 100)

    if not store.problems("demo", "train", 1):
        import_demo(store, 400, 200, seed=p.seed)
    sets = p.eval_sets or default_sets(store)
    # the base model's evaluation (iteration 0): what every gain is measured against
    evaluate(store, EvalParams(iteration=0, sets=sets, limit=p.eval_limit, seed=p.seed),
             bar(0, "evaluate base"))
    for i in range(1, p.iterations + 1):
        k0 = 1 + (i - 1) * len(STEPS)
        done = store.iteration(i)
        if done is None:
            _error_types(store, i, p, bar(k0, "extract"), bar(k0 + 1, "analyze"),
                         bar(k0 + 2, "cluster"))
            if p.review and i > 1:
                out["paused"] = (f"iteration {i}: review the error types (app: Error map; "
                                 "CLI: `sei types list`), then run `sei iterate` again")
                return out
            iterations.ensure(store, i, p.mode, asdict(p))
        syn = synthesize(store, SynthParams.from_dict({**p.synth, "iteration": i,
                                                       "seed": p.seed}),
                         bar(k0 + 3, "synthesize"))
        sel = select(store, SelectParams.from_dict({**p.select, "iteration": i, "seed": p.seed,
                                                    "method": "oneshot"}),
                     bar(k0 + 4, "select"))
        if p.baseline:
            select(store, SelectParams.from_dict({**p.select, "iteration": i, "seed": p.seed,
                                                  "method": "random"}), bar(k0 + 5, "random"))
        tr = train(store, TrainParams.from_dict({**p.train, "iteration": i, "mode": p.mode,
                                                 "seed": p.seed}), bar(k0 + 6, "train"))
        ev = evaluate(store, EvalParams(iteration=i, sets=sets, limit=p.eval_limit,
                                        seed=p.seed), bar(k0 + 7, "evaluate"))
        store.set_iteration_status(i, "done")
        out["iterations"].append({"iteration": i, "batch_id": syn["batch_id"],
                                  "selection_id": sel["selection_id"],
                                  "train_id": tr["train_id"], "eval": ev["runs"]})
    return out
