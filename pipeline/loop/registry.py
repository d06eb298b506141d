"""The long-running stages by name, with JSON-able parameters, so that the CLI (in the
foreground) and the job runner (in a background process) call exactly the same code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.core.params import Params, param
from pipeline.core.progress import Progress
from pipeline.loop import presets
from pipeline.loop.iterate import LoopParams
from pipeline.models.target import GenParams
from pipeline.problems import demo
from pipeline.stages.cluster import ClusterParams
from pipeline.stages.evaluate import EvalParams
from pipeline.stages.select import SelectParams
from pipeline.stages.synthesize import SynthParams
from pipeline.stages.train import TrainParams
from pipeline.storage.store import Store


@dataclass(frozen=True)
class StageDef:
    name: str
    fn: Callable[[Store, Params, Progress], dict]
    heavy: bool  # loads a model or trains: the runner lets one heavy job run at a time
    help: str
    params: type[Params]  # what a job, a CLI command or a form may set: nothing else
    parser: Callable[[dict], Params] | None = None  # other than Params.from_dict

    def parse(self, p: dict | None) -> Params:
        """The stage's Params from a job's dict; an unknown key is refused by name."""
        if self.parser is not None:
            return self.parser(dict(p or {}))
        return self.params.from_dict(p, strict=True)


STAGES: dict[str, StageDef] = {}


def stage(name: str, heavy: bool, params: type[Params],
          parser: Callable[[dict], Params] | None = None):
    """Register a stage under `name` with its Params: the CLI, the job runner and the
    app's Jobs page all find it here and read the same fields."""
    def register(fn):
        STAGES[name] = StageDef(name, fn, heavy, (fn.__doc__ or "").strip().split("\n")[0],
                                params, parser)
        return fn
    return register


def parse(kind: str, params: dict | None) -> Params:
    """A job's parameters checked against its stage's Params before anything runs."""
    if kind not in STAGES:
        raise ValueError(f"unknown stage {kind!r}; one of {sorted(STAGES)}")
    return STAGES[kind].parse(params)


def is_heavy(kind: str, params: dict | None = None) -> bool:
    """Whether a stage loads a model or trains (one such job runs at a time). A selection
    by a method that needs no model (random, all) is light: it never waits for the slot."""
    if kind == "select" and (params or {}).get("method") in ("random", "all"):
        return False
    return STAGES[kind].heavy


@dataclass
class ExtractParams(GenParams):
    """An extraction: which problems, which model answers, how it generates."""
    dataset: str = param("demo", "Dataset to run (as imported).")
    split: str = param("train", "Split to run.")
    limit: int | None = param(None, "First N problems (default: all).")
    backend: str = param("local", "local (transformers) or openai (any compatible server).",
                         choices=("local", "openai"))
    model: str | None = param(None, "Embedded default (smollm2-135m-instruct), a local HF "
                                    "model dir, or the endpoint's model name. Default: "
                                    "SEI_TARGET_MODEL, else the app's settings, else the "
                                    "embedded default.")
    adapter: str | None = param(None, "A peft adapter directory (local backend).")
    base_url: str | None = param(None, "OpenAI-compatible endpoint (openai backend).")


@stage("extract", heavy=True, params=ExtractParams)
def _extract(store: Store, p: ExtractParams, progress) -> dict:
    """Run the target model, judge answers, keep the wrong ones (resumable)."""
    from pipeline.models.settings import target_model
    from pipeline.stages.extract import extract

    gen = GenParams.from_dict(p.to_dict())  # not strict: the generation fields alone
    run_id = extract(store, p.dataset, p.split, limit=p.limit, backend=p.backend,
                     model=p.model or target_model(), adapter=p.adapter,
                     base_url=p.base_url, params=gen, progress=progress)
    return {"run_id": run_id}


@dataclass
class AnalyzeParams(Params):
    """An analysis: which bad cases, and who writes their keyphrases."""
    run_id: str | None = param(None, "The extraction run whose bad cases are analysed.")
    run_ids: list[str] | None = param(None, "Several runs (default: the base model's "
                                            "extractions of train splits).", cli=False)
    limit: int | None = param(None, "First N bad cases.")
    # "offline", or an instructor's settings ({"model": ..., "base_url": ..., limits});
    # default: the configured instructor, else the offline analyzer
    instructor: dict | str | None = param(None, "offline, or the instructor's settings.",
                                          cli=False)


@stage("analyze", heavy=True, params=AnalyzeParams)
def _analyze(store: Store, p: AnalyzeParams, progress) -> dict:
    """Write error keyphrases for bad cases (resumable; a rerun retries failed cases)."""
    from pipeline.stages.analyze import analyze_bad_cases

    return {"analysis_id": analyze_bad_cases(store, run_id=p.run_id, run_ids=p.run_ids,
                                             instructor=p.instructor, limit=p.limit,
                                             progress=progress)}


@dataclass
class ClusterJobParams(ClusterParams):
    """A clustering, and which analysis it clusters."""
    analysis_id: str | None = param(None, "The analysis whose keyphrases are clustered "
                                          "(default: the latest).", cli=False)


@stage("cluster", heavy=False, params=ClusterJobParams)
def _cluster(store: Store, p: ClusterJobParams, progress) -> dict:
    """Keyphrases into error types: embeddings, UMAP, HDBSCAN (or K-means, or the LLM)."""
    from pipeline.stages.cluster import cluster

    params = ClusterParams.from_dict(p.to_dict())  # the clustering's own, without the id
    res = cluster(store, params, analysis_id=p.analysis_id, progress=progress)
    return {"clustering_id": res["clustering_id"], "diff": res["diff"]}


@dataclass
class RetitleParams(Params):
    all: bool = param(False, "Also replace titles a person gave.")
    type_ids: list[int] | None = param(None, "Only these types (forced).", cli=False)


@stage("retitle", heavy=False, params=RetitleParams)
def _retitle(store: Store, p: RetitleParams, progress) -> dict:
    """Recompute the current types' titles (those a person gave are kept unless `all`;
    `type_ids`: only these, forced)."""
    from pipeline.stages.cluster import retitle

    return {"retitled": retitle(store, only_unedited=not p.all, progress=progress,
                                type_ids=p.type_ids)}


@dataclass
class QuickstartParams(GenParams):
    """The quick start: the demo set, its extraction, analysis and clustering."""
    limit: int | None = param(LoopParams.default("limit_train"),
                              "Demo train problems to run (the loop's limit_train).")
    n_train: int = param(demo.N_TRAIN, "Demo train problems to generate (if none yet).")
    n_test: int = param(demo.N_TEST, "Demo test problems to generate (if none yet).")


@stage("quickstart", heavy=True, params=QuickstartParams)
def _quickstart(store: Store, p: QuickstartParams, progress) -> dict:
    """Extraction -> analysis -> clustering on the embedded default, one job."""
    from pipeline.problems.data import import_demo

    if not store.problem_count("demo"):
        import_demo(store, p.n_train, p.n_test, seed=p.seed)
    out = _extract(store, ExtractParams.from_dict(p.to_dict()),  # demo/train, limit, gen
                   stage_part(progress, 0, 80, "extract"))
    out.update(_analyze(store, AnalyzeParams(run_id=out["run_id"]),
                        stage_part(progress, 80, 15, "analyze")))
    out.update(_cluster(store, ClusterJobParams(analysis_id=out["analysis_id"]),
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


@dataclass
class TicksParams(Params):
    n: int = param(10, "Items to write.")
    seconds: float | list[float] = param(0.5, "Seconds per item (a list: per item, the "
                                              "last repeated).")
    tag: str = param("ticks", "Tag of the rows written.")


@stage("ticks", heavy=False, params=TicksParams)
def _ticks(store: Store, p: TicksParams, progress) -> dict:
    """A cheap real writer: `n` items of `seconds` each, one committed row per item,
    resumable (finished items are skipped). Used to test the runner and the
    read-while-write pattern without loading a model."""
    import time

    secs = [float(x) for x in p.seconds] if isinstance(p.seconds, list) else [float(p.seconds)]
    done = store.ticks_done(p.tag)
    progress(len(done), p.n, "ticks", "")
    for i in range(p.n):
        if i in done:
            continue
        time.sleep(secs[min(i, len(secs) - 1)])
        store.add_tick(p.tag, i)
        progress(i + 1, p.n, "ticks", f"item {i}")
    return {"ticks": p.n}


def run_stage(store: Store, kind: str, params: dict, progress) -> dict:
    """Run a registered stage by name: the CLI and the job runner both call this."""
    return STAGES[kind].fn(store, parse(kind, params), progress)


# -- the SEI loop's stages ---------------------------------------------------------------------


@stage("synthesize", heavy=True, params=SynthParams)
def _synthesize(store: Store, p: SynthParams, progress) -> dict:
    """New problems per error type: verified, novelty- and contamination-filtered."""
    from pipeline.stages.synthesize import synthesize

    return synthesize(store, p, progress)


@stage("select", heavy=True, params=SelectParams)
def _select(store: Store, p: SelectParams, progress) -> dict:
    """Score candidates as one-shot demonstrations (or proxy, random); keep the top."""
    from pipeline.loop import resolve
    from pipeline.stages.select import select

    return select(store, resolve.models(store, "select", p), progress)


@stage("train", heavy=True, params=TrainParams)
def _train(store: Store, p: TrainParams, progress) -> dict:
    """LoRA on the selected data, from scratch or iterative; checkpointed."""
    from pipeline.loop import resolve
    from pipeline.stages.train import train

    return train(store, resolve.models(store, "train", p), progress)


@stage("evaluate", heavy=True, params=EvalParams)
def _evaluate(store: Store, p: EvalParams, progress) -> dict:
    """An iteration's model on held-out sets (and the train problems, for fix rates)."""
    from pipeline.loop import resolve
    from pipeline.stages.evaluate import evaluate

    params = resolve.models(store, "evaluate", p)
    out = evaluate(store, params, progress)
    if params.iteration > 0 and resolve.every_arm_evaluated(store, params.iteration):
        # stages run one by one close their iteration too, not only `sei iterate`
        store.set_iteration_status(params.iteration, "done")
    return out


# a loop job's parameters are the resolved config, or a preset with some values over it
@stage("iterate", heavy=True, params=LoopParams,
       parser=lambda p: presets.resolve(overrides=p))
def _iterate(store: Store, p: LoopParams, progress) -> dict:
    """The SEI loop end to end: extract, analyze, cluster, synthesize, select, train,
    evaluate, for N iterations."""
    from pipeline.loop.iterate import iterate

    return iterate(store, p, progress)
