"""The SEI loop end to end: `sei iterate`, over any train and evaluation sets.

Per iteration i (the model of iteration 1 is the base; of i+1 the SEI arm's adapter of i):
  1. extract: the model on every train set (the first `limit_train` problems of each);
  2. analyze: keyphrases of all their bad cases together (train splits only, never an
     evaluation run), then cluster them, with the current clustering's parameters;
  3. freeze the taxonomy (the iteration's record, with the resolved experiment config);
  4. synthesize: the budget split across the train datasets, then across types;
  5. select: one-shot on a dev set drawn stratified across the train sets; the arms'
     baselines: `random` takes exactly as many of the same kept candidates, `all` every one;
  6. train each arm the same way, and 7. evaluate each arm on the same sets.
The base model is evaluated first (iteration 0): every change is paired against it.
Every step is an idempotent, resumable stage, so a killed loop re-run continues where it
stopped; with `review`, the loop stops before synthesis of each iteration after the first
so that a person can curate the new error types, and the next `sei iterate` goes on."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.analysis import taxonomy
from pipeline.core.params import Params, param
from pipeline.core.progress import Progress, no_progress, scaled
from pipeline.loop import resolve
from pipeline.models.target import GenParams
from pipeline.problems import sets
from pipeline.stages.analyze import analyze_bad_cases
from pipeline.stages.cluster import ClusterParams, cluster
from pipeline.stages.evaluate import EvalParams, evaluate
from pipeline.stages.extract import extract
from pipeline.stages.select import SelectParams, select
from pipeline.stages.synthesize import SynthParams, none_kept, synthesize
from pipeline.stages.train import TrainParams, train
from pipeline.storage.store import Store

# arm -> the selection method whose picks it trains on
ARMS = resolve.ARMS  # arm -> selection method, declared once
# section of an experiment file -> the stage's parameters
SECTIONS: dict[str, type[Params]] = {"extract": GenParams, "cluster": ClusterParams,
                                     "synthesize": SynthParams, "select": SelectParams,
                                     "train": TrainParams, "evaluate": EvalParams}
# what the loop decides itself in each stage (shown nowhere as a setting)
LOOP_SET = {"synthesize": {"iteration"},
            "select": {"iteration", "method", "model", "adapter", "size_of"},
            "train": {"iteration", "mode", "method", "selection_ids", "model"},
            "evaluate": {"iteration", "sets", "limit", "arm", "adapter", "train_check"}}
STEPS = ("extract", "analyze", "cluster", "synthesize", "select", "train", "evaluate")


@dataclass
class LoopParams(Params):
    preset: str = param("demo", "Named values over the stage defaults: demo (2 cores), "
                                "paper (the paper's protocol).", choices=("demo", "paper"))
    iterations: int = param(1, "Iterations to run (the paper: 3).")
    mode: str = param("scratch", "scratch: each iteration trains the base model on all "
                                 "data so far; iterative: the previous adapter on new data.",
                      choices=("scratch", "iterative"))
    review: bool = param(False, "Pause for curation before each synthesis after the first.")
    train_sets: list[str] = param(help="Train sets whose bad cases are analysed, e.g. "
                                       "gsm8k:train (repeat).", factory=lambda: ["demo/train"])
    eval_sets: list[str] | None = param(None, "Evaluation sets, e.g. math500:test (repeat); "
                                              "default: every imported test split.")
    limit_train: int | None = param(96, "Per train set: the first N problems the model is "
                                        "run on each iteration (none: all).")
    eval_limit: int | None = param(200, "Per evaluation set: the first N problems.")
    arms: list[str] = param(help="Arms trained and evaluated side by side: sei, random "
                                 "(same size, same pool), all.",
                            factory=lambda: ["sei", "random"])
    max_new_tokens: int | None = param(None, "Generation limit for every stage when set "
                                             "(the paper: 512); else each stage's own.")
    seed: int = param(0, "Seed of every stage.")
    # Where every generation runs (extraction, one-shot scoring, evaluation); training stays
    # local. Over a server each iteration's adapter is loaded there and asked for by name
    # (never the base model silently); a server that cannot serve it refuses the run.
    backend: str = param("local", "local (transformers), or openai: an OpenAI-compatible "
                                  "server (vLLM) answers every generation; training stays "
                                  "local.", choices=("local", "openai"))
    base_url: str | None = param(None, "The server's URL (openai backend).")
    served_model: str | None = param(None, "The name the server serves the base model under "
                                           "(openai backend; default: the model's name).")
    extract: dict = param(help="GenParams of the train-set extractions.", factory=dict,
                          cli=False)
    cluster: dict = param(help="ClusterParams over the current clustering's.", factory=dict,
                          cli=False)
    synthesize: dict = param(help="SynthParams.", factory=dict, cli=False)
    select: dict = param(help="SelectParams.", factory=dict, cli=False)
    train: dict = param(help="TrainParams.", factory=dict, cli=False)
    evaluate: dict = param(help="EvalParams.", factory=dict, cli=False)

    def __post_init__(self):
        self.train_sets = [sets.norm(s) for s in self.train_sets]
        self.eval_sets = [sets.norm(s) for s in self.eval_sets] if self.eval_sets else None
        bad = [a for a in self.arms if a not in ARMS]
        if bad or "sei" not in self.arms:
            raise ValueError(f"arms {self.arms}: each one of {sorted(ARMS)}, sei among them")
        for name, cls in SECTIONS.items():
            cls.from_dict(getattr(self, name), strict=True)  # a typo is refused by name
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("backend openai needs the server's URL (--base-url)")
            if not self.served_model:  # stored as resolved: the name every request used
                from pipeline.models.settings import target_model

                self.served_model = target_model()
        overlap = set(self.train_sets) & set(self.eval_sets or [])
        if overlap:
            raise ValueError(f"{sorted(overlap)} named as train and evaluation set")

    def stage(self, name: str, **fixed):
        """A stage's parameters: its defaults < this loop's section < the loop-wide ones
        (seed, max_new_tokens) < `fixed` (what the loop decides: iteration, model...)."""
        d = {"seed": self.seed, **getattr(self, name)}
        names = SECTIONS[name].names()
        if self.backend != "local":  # the loop's server, where the stage asks a server
            d.update({k: getattr(self, k) for k in ("backend", "base_url", "served_model")
                      if k in names and k not in getattr(self, name)})
        if self.max_new_tokens and "max_new_tokens" in names and \
                "max_new_tokens" not in getattr(self, name):  # the stage's own value wins
            d["max_new_tokens"] = self.max_new_tokens
        return SECTIONS[name].from_dict({**d, **fixed}, strict=True)

    def target_name(self, model: str) -> str:
        """The model's name where it generates: over a server, the name it is served under."""
        return (self.served_model or model) if self.backend == "openai" else model

    def resolved(self) -> dict:
        """Every parameter as the loop runs it, each stage's in full: what is stored with
        each iteration and shown by `--dry-run`, the app and `sei iterations`."""
        top = {k: v for k, v in self.to_dict().items() if k not in SECTIONS}
        return {**top, **{k: {n: v for n, v in self.stage(k).to_dict().items()
                              if n not in LOOP_SET.get(k, ())}
                          for k in SECTIONS}}


def needs_instructor(p) -> list[str]:
    """The stages of loop parameters p that ask for an instructor by name."""
    return [what for what, asks in (("synthesis", p.synthesize.get("synthesizer") == "instructor"),
                                    ("LLM clustering", p.cluster.get("method") == "llm"))
            if asks]


def instructor_check(p) -> None:
    """Refuse, in one line and before anything runs, loop parameters that ask for an
    instructor when none is configured (the paper's protocol is not run offline silently;
    running it offline is an explicit deviation, recorded as such)."""
    from pipeline.models.instructor import from_env

    needs = needs_instructor(p)
    if needs and from_env() is None:
        raise ValueError(
            f"the {p.preset} preset's {' and '.join(needs)} need an instructor, and none is "
            "configured: set SEI_INSTRUCTOR_MODEL and OPENAI_BASE_URL (an OpenAI-compatible "
            "server; OPENAI_API_KEY alone: the OpenAI API) or save one on the Settings page; "
            "or run without one, as a recorded deviation: -p synthesize.synthesizer=offline "
            "-p cluster.method=hdbscan")


def _train_extractions(store: Store, i: int, p: LoopParams, bar: Progress) -> list[str]:
    """Iteration i's model on every train set: one extraction run each, linked to i (and,
    for i > 1, to i - 1 as the check of its fix rates)."""
    model, adapter = resolve.model_for(store, i)
    rids = []
    for k, name in enumerate(p.train_sets):
        ds, sp = name.split("/", 1)
        rid = extract(store, ds, sp, limit=p.limit_train, model=p.target_name(model),
                      adapter=adapter, params=p.stage("extract"), backend=p.backend,
                      base_url=p.base_url,
                      progress=scaled(bar, k, 1, len(p.train_sets)))
        store.link_run(i, "extract", rid)
        if i > 1:
            store.link_run(i - 1, "train_check", rid)
        rids.append(rid)
    return rids


def _error_types(store: Store, i: int, p: LoopParams, bars: list[Progress]) -> None:
    """Iteration i's bad cases over all train sets, their keyphrases and error types
    (extract -> analyze -> cluster), each resumed or skipped when already there."""
    rids = _train_extractions(store, i, p, bars[0])
    aid = analyze_bad_cases(store, run_ids=rids, progress=bars[1])
    cl = store.latest_clustering()
    if cl is None or cl["analysis_id"] != aid:
        # the user's clustering choices carry over; the experiment's section wins
        prev = ClusterParams.from_dict((cl or {}).get("params") or {})
        cp = ClusterParams.from_dict({**prev.to_dict(), **p.cluster})
        # iteration i's own bad cases: current on purpose (not held as a subset)
        cluster(store, cp, analysis_id=aid, progress=bars[2], make_current=True)


def _arms(store: Store, i: int, p: LoopParams, model: str, adapter: str | None,
          bars: list[Progress]) -> dict:
    """One-shot selection and the arms' baselines, each arm trained and evaluated the
    same way on the same sets. Returns per arm its selection, training and runs."""
    out = {}
    sel = select(store, p.stage("select", iteration=i, method="oneshot",
                                model=p.target_name(model), adapter=adapter), bars[0])
    sel_ids = {"sei": sel["selection_id"]}
    for arm in p.arms:
        if arm != "sei":
            sel_ids[arm] = select(store, p.stage(
                "select", iteration=i, method=ARMS[arm], model=p.target_name(model),
                adapter=adapter,
                size_of=sel["selection_id"] if arm == "random" else None),
                no_progress)["selection_id"]
    sets_ = p.eval_sets or []
    for k, arm in enumerate(p.arms):
        tr = train(store, resolve.models(store, "train", p.stage(
                       "train", iteration=i, mode=p.mode, method=ARMS[arm])),
                   scaled(bars[1], k, 1, len(p.arms)))
        ev = evaluate(store, p.stage("evaluate", iteration=i, sets=sets_, limit=p.eval_limit,
                                     arm=arm, adapter=tr["adapter_dir"], train_check=False),
                      scaled(bars[2], k, 1, len(p.arms)))
        out[arm] = {"selection_id": sel_ids[arm], "train_id": tr["train_id"],
                    "adapter_hash": tr["adapter_hash"], "eval": ev["runs"]}
    return out


def iterate(store: Store, p: LoopParams, progress: Progress = no_progress) -> dict:
    """The SEI loop for p.iterations iterations, resumable: the base model's evaluation,
    then per iteration error types, synthesis, selection, and per arm training and
    evaluation; finally the last model's rerun of the train sets (its fix rates)."""
    instructor_check(p)  # before any set is imported or anything generated
    p.train_sets = sets.ensure(store, p.train_sets, p.seed)
    p.eval_sets = sets.ensure(store, p.eval_sets) if p.eval_sets else \
        sets.ensure(store, [s for s in default_eval_sets(store) if s not in p.train_sets])
    n_steps = len(STEPS) * p.iterations + 2
    out: dict = {"preset": p.preset, "iterations": []}

    def bar(k: int) -> Progress:
        return scaled(progress, k, 1, n_steps)

    # the base model's evaluation (iteration 0): what every gain is measured against
    base = evaluate(store, p.stage("evaluate", iteration=0, sets=p.eval_sets,
                                   limit=p.eval_limit, train_check=False), bar(0))
    # every arm is evaluated on the same problems: references that cannot match
    # themselves (scored wrong whatever the answer) are counted once, per set, here
    out["unmatchable_references"] = base.get("unmatchable_references", {})
    for i in range(1, p.iterations + 1):
        k0 = 1 + (i - 1) * len(STEPS)
        if store.iteration(i) is None:
            _error_types(store, i, p, [bar(k0), bar(k0 + 1), bar(k0 + 2)])
            if p.review and i > 1:
                out["paused"] = (f"iteration {i}: review the error types (app: Error map; "
                                 "CLI: `sei types list`), then run `sei iterate` again")
                return out
            taxonomy.freeze(store, i, p.mode, p.resolved())
        model, adapter = resolve.model_for(store, i)
        syn = synthesize(store, p.stage("synthesize", iteration=i), bar(k0 + 3))
        if why := none_kept(store, i):
            raise ValueError(why)
        arms = _arms(store, i, p, model, adapter, [bar(k0 + 4), bar(k0 + 5), bar(k0 + 6)])
        store.set_iteration_status(i, "done")
        out["iterations"].append({"iteration": i, "batch_id": syn["batch_id"], "arms": arms})
    # the last model on the train sets: its fix rates (and iteration N+1's bad cases)
    _train_extractions(store, p.iterations + 1, p, bar(n_steps - 1))
    return out


def default_eval_sets(store: Store) -> list[str]:
    """Every imported test split (the demo's when nothing is imported)."""
    from pipeline.stages.evaluate import default_sets

    return default_sets(store) or ["demo/test"]
