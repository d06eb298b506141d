"""The long-running stages by name, with JSON-able parameters, so that the CLI (in the
foreground) and the job runner (in a background process) call exactly the same code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.progress import Progress
from pipeline.store import Store


@dataclass(frozen=True)
class StageDef:
    name: str
    fn: Callable[[Store, dict, Progress], dict]
    heavy: bool  # loads a model or trains: the runner lets one heavy job run at a time
    help: str


STAGES: dict[str, StageDef] = {}


def stage(name: str, heavy: bool):
    """Register a stage under `name`: the CLI and the job runner both find it here."""
    def register(fn):
        STAGES[name] = StageDef(name, fn, heavy, (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return register


def is_heavy(kind: str, params: dict | None = None) -> bool:
    """Whether a stage loads a model or trains (one such job runs at a time). A selection
    by a method that needs no model (random, all) is light: it never waits for the slot."""
    if kind == "select" and (params or {}).get("method") in ("random", "all"):
        return False
    return STAGES[kind].heavy


@stage("extract", heavy=True)
def _extract(store: Store, p: dict, progress) -> dict:
    from pipeline.extract import extract
    from pipeline.settings import target_model
    from pipeline.target import GenParams

    gp = GenParams.from_dict(p)
    run_id = extract(store, p.get("dataset", "demo"), p.get("split", "train"),
                     limit=p.get("limit"), backend=p.get("backend", "local"),
                     model=p.get("model") or target_model(), adapter=p.get("adapter"),
                     base_url=p.get("base_url"), params=gp, progress=progress)
    return {"run_id": run_id}


@stage("analyze", heavy=True)
def _analyze(store: Store, p: dict, progress) -> dict:
    from pipeline.keyphrases import analyze_bad_cases

    return {"analysis_id": analyze_bad_cases(store, run_id=p.get("run_id"),
                                             run_ids=p.get("run_ids"),
                                             instructor=p.get("instructor"),
                                             limit=p.get("limit"), progress=progress)}


@stage("cluster", heavy=False)
def _cluster(store: Store, p: dict, progress) -> dict:
    from pipeline.cluster import ClusterParams, cluster

    params = ClusterParams.from_dict(p)
    res = cluster(store, params, analysis_id=p.get("analysis_id"), progress=progress)
    return {"clustering_id": res["clustering_id"], "diff": res["diff"]}


@stage("retitle", heavy=False)
def _retitle(store: Store, p: dict, progress) -> dict:
    """Recompute the current types' titles (those a person gave are kept unless `all`;
    `type_ids`: only these, forced)."""
    from pipeline.cluster import retitle

    return {"retitled": retitle(store, only_unedited=not p.get("all", False),
                                progress=progress, type_ids=p.get("type_ids"))}


@stage("quickstart", heavy=True)
def _quickstart(store: Store, p: dict, progress) -> dict:
    """Extraction -> analysis -> clustering on the embedded default, one job."""
    from pipeline.data import import_demo

    if not store.problem_count("demo"):
        import_demo(store, p.get("n_train", 400), p.get("n_test", 200), seed=p.get("seed", 0))
    out = _extract(store, dict(p, dataset="demo", split="train"),
                   stage_part(progress, 0, 80, "extract"))
    out.update(_analyze(store, {"run_id": out["run_id"]}, stage_part(progress, 80, 15, "analyze")))
    out.update(_cluster(store, {"analysis_id": out["analysis_id"]},
                        stage_part(progress, 95, 5, "cluster")))
    return out


def stage_part(progress: Progress, start: int, span: int, name: str) -> Progress:
    """One stage of a multi-stage job on one bar of 100: the stage fills [start,
    start+span) and never moves the bar back; its own count goes into the message."""
    def inner(done: int, total: int, step: str, message: str) -> None:
        frac = min(1.0, done / total) if total else 0.0
        progress(start + int(frac * span), 100, name,
                 f"{done}/{total if total else '?'}: {message}")
    return inner


@stage("ticks", heavy=False)
def _ticks(store: Store, p: dict, progress) -> dict:
    """A cheap real writer: `n` items of `seconds` each, one committed row per item,
    resumable (finished items are skipped). Used to test the runner and the
    read-while-write pattern without loading a model."""
    import time

    n, secs = int(p.get("n", 10)), p.get("seconds", 0.5)
    secs = [float(x) for x in secs] if isinstance(secs, list) else [float(secs)]  # per item
    tag = p.get("tag", "ticks")
    done = store.ticks_done(tag)
    progress(len(done), n, "ticks", "")
    for i in range(n):
        if i in done:
            continue
        time.sleep(secs[min(i, len(secs) - 1)])
        store.add_tick(tag, i)
        progress(i + 1, n, "ticks", f"item {i}")
    return {"ticks": n}


def run_stage(store: Store, kind: str, params: dict, progress) -> dict:
    """Run a registered stage by name: the CLI and the job runner both call this."""
    if kind not in STAGES:
        raise ValueError(f"unknown stage {kind!r}; one of {sorted(STAGES)}")
    return STAGES[kind].fn(store, params, progress)


# -- the SEI loop's stages ---------------------------------------------------------------------


@stage("synthesize", heavy=True)
def _synthesize(store: Store, p: dict, progress) -> dict:
    """New problems per error type: verified, novelty- and contamination-filtered."""
    from pipeline.synthesize import SynthParams, synthesize

    return synthesize(store, SynthParams.from_dict(p), progress)


@stage("select", heavy=True)
def _select(store: Store, p: dict, progress) -> dict:
    """Score candidates as one-shot demonstrations (or proxy, random); keep the top."""
    from pipeline import resolve
    from pipeline.select import SelectParams, select

    return select(store, resolve.models(store, "select", SelectParams.from_dict(p)), progress)


@stage("train", heavy=True)
def _train(store: Store, p: dict, progress) -> dict:
    """LoRA on the selected data, from scratch or iterative; checkpointed."""
    from pipeline import resolve
    from pipeline.train import TrainParams, train

    return train(store, resolve.models(store, "train", TrainParams.from_dict(p)), progress)


@stage("evaluate", heavy=True)
def _evaluate(store: Store, p: dict, progress) -> dict:
    """An iteration's model on held-out sets (and the train problems, for fix rates)."""
    from pipeline import resolve
    from pipeline.evaluate import EvalParams, evaluate

    params = resolve.models(store, "evaluate", EvalParams.from_dict(p))
    out = evaluate(store, params, progress)
    if params.iteration > 0 and resolve.every_arm_evaluated(store, params.iteration):
        # stages run one by one close their iteration too, not only `sei iterate`
        store.set_iteration_status(params.iteration, "done")
    return out


@stage("iterate", heavy=True)
def _iterate(store: Store, p: dict, progress) -> dict:
    """The SEI loop end to end: extract, analyze, cluster, synthesize, select, train,
    evaluate, for N iterations."""
    from pipeline.loop import iterate
    from pipeline.presets import resolve

    # a job's parameters are the resolved config, or a preset with some values over it
    return iterate(store, resolve(overrides=p), progress)
