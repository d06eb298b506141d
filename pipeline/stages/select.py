"""Selection (SEI step 5): keep the candidates that help the target model most.

The dev set Ddev is n_good + n_bad problems of the train split that the current model
got right and wrong in its latest extraction run, drawn with a seed and stored per
iteration (never from a test split). Each kept candidate c is scored by a method:

- `oneshot` (the paper's): the target answers every Ddev problem with c as a one-shot
  worked example (user: c's question, assistant: c's solution, user: the dev question);
  score = (accuracy on the good half + accuracy on the bad half) / 2. The fixed (bad
  ones now right) and broken (good ones now wrong) dev problems are stored too, with
  every generation behind the score. Batched: several candidates' dev rows share a
  batch (`batch_size` rows), each candidate's prefix (system prompt + demonstration) runs
  once and its KV cache serves its rows; a row stops once its final answer is complete,
  and every output is judged cut there, so early stopping never changes a score.
- `proxy` (after Nuggets' golden score): the mean change, over Ddev, of the per-token
  log-likelihood of the reference solution with c as the example versus without it;
  forward passes only. Its Spearman correlation with the one-shot score is stored when
  both ran on the same candidates.
- `random`: the same number of candidates, drawn with the seed: the ablation baseline.

The top fraction (`top`, the paper's 5%) by score is selected, ties broken by the seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from typing import Protocol

from pipeline.analysis import review
from pipeline.core.params import param
from pipeline.core.progress import Progress, no_progress
from pipeline.models.settings import target_model
from pipeline.models.target import (
    DEFAULT_PROMPT,
    BackendParams,
    GenParams,
    make_target,
    prompt_template,
    render,
    resolve_runtime,
    runtime_key,
)
from pipeline.problems.answers import cut_at_final_answer, judge
from pipeline.stages.synthesize import chat_solution
from pipeline.storage.store import Store

METHODS = ("oneshot", "proxy", "random", "all")


@dataclass
class SelectParams(BackendParams):
    # Demo defaults (one iteration ~10 min on 2 cores); the paper's are the `paper` preset.
    iteration: int = param(1, "The iteration whose kept candidates are scored.", cli=False)
    method: str = param("oneshot", "oneshot (the paper's), proxy (likelihood), random "
                                   "(the baseline), all (every kept candidate).",
                        choices=METHODS)
    n_good: int = param(10, "Dev set: problems the model got right (the paper: 50).")
    n_bad: int = param(10, "Dev set: problems the model got wrong (the paper: 50).")
    top: float = param(0.5, "Kept: a fraction (< 1) or a count (>= 1); the paper: 0.05.")
    max_new_tokens: int = param(128, "Generation limit per dev answer.")
    batch_size: int = param(160, "Dev rows per batch; several candidates share one.")
    backend: str = param("local", "local (transformers) or openai (any compatible "
                                  "server).", choices=("local", "openai"))
    model: str | None = param(None, "Target model (default: the iteration's model).")
    adapter: str | None = param(None, "Adapter (default: the one the iteration's model "
                                      "uses).", cli=False)
    base_url: str | None = param(None, "OpenAI-compatible endpoint (openai backend).")
    served_adapter: str | None = param(None, "The name the server serves this iteration's "
                                             "adapter under (vLLM --lora-modules NAME=DIR); "
                                             "default: loaded at run time via "
                                             "/v1/load_lora_adapter")
    limit: int | None = param(None, "Score only the first N candidates.")
    size_of: str | None = param(None, "random/all: the selection this one is paired with "
                                      "(it takes exactly as many candidates).", cli=False)
    seed: int = param(0, "Seed of the dev set draw and of ties.")


# -- the dev set --------------------------------------------------------------------------------


def stratify(n: int, available: list[int]) -> list[int]:
    """n split as equally as possible across groups holding `available` items each; what
    a small group cannot give goes to the others."""
    take = [0] * len(available)
    left = n
    while left > 0:
        open_ = [i for i, a in enumerate(available) if take[i] < a]
        if not open_:
            break
        for i in open_[:left] if left < len(open_) else open_:
            take[i] += 1
            left -= 1
            if left == 0:
                break
    return take


def dev_set(store: Store, iteration: int, n_good: int, n_bad: int, seed: int = 0,
            run_id: str | None = None, adapter: str | None = None) -> list[dict]:
    """Iteration's Ddev, drawn once and stored (later calls return the stored one):
    n_good right and n_bad wrong answers of the iteration's model (base + `adapter`),
    stratified across its train-split extraction runs (one per train set), or from
    `run_id`."""
    have = store.dev_set(iteration)
    if have:
        return have
    from pipeline.problems.sets import is_test_split

    runs = [store.run(run_id)] if run_id else _train_runs(store, iteration, adapter)
    if not runs or runs[0] is None:
        raise ValueError("no finished extraction run on a train split to draw a dev set from: "
                         "run `sei extract --split train` first")
    for run in runs:
        if run["kind"] != "extract" or is_test_split(run["split"]):
            raise ValueError(f"run {run['run_id']} is on {run['dataset']}/{run['split']} "
                             f"({run['kind']}): a dev set never comes from a test split")
    verdicts = review.overrides(store)  # a reviewer's verdicts in force win over the judge's
    items = [[dict(x, run_id=r["run_id"], correct=review.effective(
        x["correct"], (r["run_id"], x["dataset"], x["split"], x["pid"]), verdicts))
        for x in store.run_items(r["run_id"])] for r in runs]
    good = [[x for x in it if x["correct"]] for it in items]
    bad = [[x for x in it if not x["correct"]] for it in items]
    if not any(good) or not any(bad):
        raise ValueError(f"runs {[r['run_id'] for r in runs]} have {sum(map(len, good))} "
                         f"right and {sum(map(len, bad))} wrong answers; a dev set needs both")
    rng = random.Random(seed)
    picks = []
    for half, pools, n in (("good", good, n_good), ("bad", bad, n_bad)):
        for pool, k in zip(pools, stratify(n, [len(x) for x in pools])):
            picks += [dict(r, half=half) for r in rng.sample(pool, k)]
    store.save_dev_set(iteration, [dict(r, seed=seed) for r in picks])
    return store.dev_set(iteration)


def _train_runs(store: Store, iteration: int, adapter: str | None) -> list[dict]:
    """The iteration's train-set extraction runs (linked by the loop), else the latest
    train-split extraction of the iteration's model (base + `adapter`)."""
    from pipeline.problems.sets import is_test_split

    linked = [lk["ref"] for lk in store.iteration_links(iteration) if lk["role"] == "extract"]
    if linked:
        return [store.run(r) for r in linked]
    runs = [r for r in store.runs("extract") if not is_test_split(r["split"])
            and r["adapter"] == adapter and r["n_done"]]
    return [store.run(runs[-1]["run_id"])] if runs else []


# -- scorers ------------------------------------------------------------------------------------


class Scorer(Protocol):
    method: str

    def score(self, cand: dict, dev: list[dict]) -> tuple[dict, list[dict]]:
        """(score row, generations or per-item values behind it) for one candidate."""

    def score_many(self, cands: list[dict], dev: list[dict], on_rows=None, on_scored=None
                   ) -> list[tuple[dict, list[dict]]]:
        """score() of each candidate, batched together where the method can; on_rows(n)
        hears how far the chunk's dev answers are, in answers (those finished, and the
        tokens of those still being written, in answers' worth: see target.generate);
        on_scored(score, rows) hears each candidate as soon as its score is known."""


def _demo_turns(cand: dict, tmpl: str) -> list[dict]:
    return [render(tmpl, cand["question"])[0],
            {"role": "assistant", "content": chat_solution(cand["solution"])}]


def _one_by_one(scorer, cands, dev, on_rows=None, on_scored=None):
    """score_many for methods that gain nothing from batching candidates together."""
    out = []
    for c in cands:
        out.append(scorer.score(c, dev))
        if on_scored is not None:
            on_scored(*out[-1])
        if on_rows is not None:
            on_rows(len(out) * len(dev))
    return out


class OneShot:
    method = "oneshot"

    def __init__(self, target, params: SelectParams, prompt: str = DEFAULT_PROMPT):
        self.target, self.p = target, params
        self.tmpl = prompt_template(prompt)
        self.gp = GenParams(max_new_tokens=params.max_new_tokens, batch_size=params.batch_size,
                            seed=params.seed, stop_at_answer=True)

    def score(self, cand, dev):
        """A candidate's score with it as the one-shot example: the mean of the good and
        bad halves' dev accuracy (oneshot_score); returns the score row and the generations."""
        return self.score_many([cand], dev)[0]

    def score_many(self, cands, dev, on_rows=None, on_scored=None):
        """score() of each candidate; their dev rows share batches (params.batch_size rows
        each), every candidate's demonstration prefilled once for its rows. A candidate is
        scored (on_scored) once its last dev answer is finished, not when its batch ends."""
        convs = [_demo_turns(c, self.tmpl) + render(self.tmpl, d["question"])
                 for c in cands for d in dev]
        n = len(dev)
        got: dict[int, object] = {}

        def finished(row: int, g) -> None:
            got[row] = g
            k = row // n
            if on_scored is not None and all(k * n + j in got for j in range(n)):
                on_scored(*self._judged(cands[k], dev, [got[k * n + j] for j in range(n)]))
        gens = []
        for i in range(0, len(convs), self.p.batch_size):
            done = len(gens)
            gens += self.target.generate(
                convs[i:i + self.p.batch_size], self.gp,
                on_rows=None if on_rows is None else (lambda m, d=done: on_rows(d + m)),
                on_done=lambda j, g, d=done: finished(d + j, g))
        return [self._judged(c, dev, gens[k * n:(k + 1) * n]) for k, c in enumerate(cands)]

    @staticmethod
    def _judged(cand, dev, gens):
        rows = []
        for d, g in zip(dev, gens):
            text = cut_at_final_answer(g.text)
            v = judge(text, d["answer"]) if not g.error else {"pred": None, "correct": False}
            rows.append({"cand_id": cand["cand_id"], "dataset": d["dataset"], "split": d["split"],
                         "pid": d["pid"], "output": g.text if not g.error else g.error,
                         "pred": v["pred"], "correct": bool(v["correct"]),
                         "completion_tokens": g.completion_tokens, "half": d["half"],
                         "zero_correct": bool(d["zero_correct"])})
        return oneshot_score(cand["cand_id"], rows), rows


def oneshot_score(cand_id: int, rows: list[dict]) -> dict:
    """The paper's score from judged one-shot answers: (acc good + acc bad) / 2, with the
    dev problems fixed and broken against the zero-shot verdicts. Also how a stored score
    is recomputed by hand from its generations."""
    good = [r for r in rows if r["half"] == "good"]
    bad = [r for r in rows if r["half"] == "bad"]
    acc = lambda rs: sum(r["correct"] for r in rs) / len(rs) if rs else 0.0  # noqa: E731
    fixed = [r["pid"] for r in bad if r["correct"] and not r["zero_correct"]]
    broken = [r["pid"] for r in good if not r["correct"] and r["zero_correct"]]
    return {"cand_id": cand_id, "score": (acc(good) + acc(bad)) / 2, "good_acc": acc(good),
            "bad_acc": acc(bad), "fixed": fixed, "broken": broken,
            "detail": {"n_good": len(good), "n_bad": len(bad),
                       "net": (len(fixed) - len(broken)) / max(1, len(rows))}}


class Proxy:
    """Nuggets-style golden score: does c as the example make the references likelier?"""
    method = "proxy"

    def __init__(self, target, params: SelectParams, prompt: str = DEFAULT_PROMPT):
        self.target, self.p = target, params
        self.tmpl = prompt_template(prompt)
        self._zero: list[float] | None = None

    def zero(self, dev):
        """Answer log-likelihoods without a demonstration, computed once per dev set."""
        if self._zero is None:  # the zero-shot pass, once per dev set
            self._zero = self._ll([], dev)
        return self._zero

    def _ll(self, demo, dev):
        out = []
        for i in range(0, len(dev), self.p.batch_size):
            chunk = dev[i:i + self.p.batch_size]
            out += self.target.answer_logliks([demo + render(self.tmpl, d["question"])
                                               for d in chunk],
                                              [chat_solution(d["solution"]) for d in chunk])
        return out

    def score(self, cand, dev):
        """A candidate's score: the mean gain in answer log-likelihood it brings as the
        demonstration; returns the score row and the per-problem values."""
        z = self.zero(dev)
        ll = self._ll(_demo_turns(cand, self.tmpl), dev)
        delta = [a - b for a, b in zip(ll, z)]
        rows = [{"cand_id": cand["cand_id"], "dataset": d["dataset"], "split": d["split"],
                 "pid": d["pid"], "value": x} for d, x in zip(dev, delta)]
        up = sum(x > 0 for x in delta) / len(delta)
        return ({"cand_id": cand["cand_id"], "score": sum(delta) / len(delta),
                 "detail": {"share_up": up, "mean_ll": sum(ll) / len(ll)}}, rows)

    score_many = _one_by_one


class RandomPick:
    """No model: a seeded uniform draw, so a training run can be compared against it."""
    method = "random"

    def __init__(self, seed: int):
        self.seed = seed

    def score(self, cand, dev):
        """A seeded random score (the baseline that needs no model)."""
        r = random.Random(f"{self.seed}/{cand['cand_id']}").random()
        return {"cand_id": cand["cand_id"], "score": r, "detail": {"random": True}}, []

    score_many = _one_by_one


class AllPick:
    """No model: every kept candidate (the arm that trains on everything)."""
    method = "all"

    def score(self, cand, dev):
        """The same score for every candidate: all are selected."""
        return {"cand_id": cand["cand_id"], "score": 1.0, "detail": {"all": True}}, []

    score_many = _one_by_one


# -- the stage ----------------------------------------------------------------------------------


def n_keep(top: float, n: int) -> int:
    """How many of n candidates a `top` keeps: a fraction (<1) or a count (>=1)."""
    return min(n, int(top) if top >= 1 else max(1, math.ceil(top * n))) if n else 0


def select(store: Store, p: SelectParams, progress: Progress = no_progress) -> dict:
    """Score (or resume scoring) the iteration's kept candidates and select the top."""
    cands = store.candidates(iteration=p.iteration, status="kept")
    if p.limit:
        cands = cands[:p.limit]
    if not cands:
        raise ValueError(f"iteration {p.iteration} has no kept candidates: run "
                         "`sei synthesize` first")
    needs_model = p.method in ("oneshot", "proxy")
    if needs_model and p.iteration > 1 and p.adapter is None:
        # never the base model silently: resolve.models fills the iteration's adapter
        raise ValueError(f"selection for iteration {p.iteration} needs the adapter of "
                         f"iteration {p.iteration - 1}'s model (resolve.models, or --adapter)")
    model, adapter = p.model or target_model(), p.adapter
    dev = dev_set(store, p.iteration, p.n_good, p.n_bad, p.seed,
                  adapter=adapter) if needs_model else []
    top = _how_many(store, p, cands)
    runtime = resolve_runtime(p.device, p.dtype) if needs_model and p.backend == "local" \
        else {}
    sid = _selection_id(p, cands, dev, model, adapter, runtime)
    target = _target(p, model, adapter, len(store.scored_cands(sid)) < len(cands)) \
        if needs_model else None
    manifest = {"model": model, "adapter": adapter, "n_candidates": len(cands),
                "dev": [(d["dataset"], d["split"], d["pid"], d["half"]) for d in dev],
                **runtime}
    if target is not None and p.backend == "openai":
        manifest["served_as"] = target.model_id  # the name the server answered under
    store.upsert_selection(sid, p.iteration, p.method, asdict(p), manifest)
    store.link_run(p.iteration, f"selection:{p.method}", sid)
    scorer = make_scorer(p, target)
    _score_all(store, sid, scorer, cands, dev, target, p, progress)
    scores = store.cand_scores(sid)
    chosen = rank(scores, n_keep(top, len(scores)), p.seed)
    stats = {"n_scored": len(scores), "n_selected": len(chosen),
             "score_mean": sum(s["score"] for s in scores) / len(scores)}
    stats.update(_spearman(store, p.iteration, sid, p.method))
    store.finish_selection(sid, [(cid, r) for r, cid in enumerate(chosen, 1)], stats)
    return {"selection_id": sid, **stats}


def _score_all(store: Store, sid: str, scorer: Scorer, cands: list[dict], dev: list[dict],
               target, p: SelectParams, progress: Progress) -> None:
    """Score the candidates not scored yet, each stored (all or nothing) as soon as its last
    dev answer is in, not when its chunk ends: a cancel re-does only those in flight.
    Progress is in dev answers ("120 of 320"), reported at every decoding step inside a
    batch (answers finished, and the tokens of those still being written in answers'
    worth), so a long batch moves even while no answer has ended, and its ETA comes from
    the measured rate; a random or all selection counts candidates."""
    done = store.scored_cands(sid)
    todo = [c for c in cands if c["cand_id"] not in done]
    per_cand = max(1, len(dev))
    unit = "dev answers" if dev else "candidates"
    total = len(cands) * per_cand if dev else len(cands)
    n_done = (len(cands) - len(todo)) * (per_cand if dev else 1)
    step = f"select:{p.method}"
    progress(n_done, total, step, f"{len(todo)} of {len(cands)} candidates to score"
             + (f" on {len(dev)} dev problems" if dev else ""))
    # as many candidates per batch as its rows hold (a decoding step costs about the same
    # for 20 rows as for 80 on a CPU); each candidate is still stored all or nothing
    per = max(1, p.batch_size // per_cand)
    for i in range(0, len(todo), per):
        chunk, base = todo[i:i + per], n_done

        def rows(n, base=base):
            rate = target.throughput() if target is not None else ""
            progress(base + n, total, step, f"{base + n} of {total} {unit}"
                     + (f" ({rate})" if rate else ""))
        kept: set = set()

        def keep(s, gens, kept=kept):  # stored as soon as scored: a cancel keeps it
            store.record_scores(sid, [s], gens)
            kept.add(s["cand_id"])
        for s, gens in scorer.score_many(chunk, dev, on_rows=rows if dev else None,
                                         on_scored=keep):
            if s["cand_id"] not in kept:
                keep(s, gens)
            n_done += per_cand if dev else 1
        progress(n_done, total, step, f"cand {chunk[-1]['cand_id']}: "
                 f"{s['score']:.2f} · {n_done} of {total} {unit}")


def _target(p: SelectParams, model: str, adapter: str | None, to_do: bool):
    """The target that scores. Over a server with candidates left to score, the server
    must serve the adapter (and, for the proxy, give prompt log-probabilities), or the
    selection is refused here, before it is recorded."""
    target = make_target(p.backend, model, adapter, p.base_url,
                         served_adapter=p.served_adapter, **p.backend_kw())
    if p.backend == "openai" and to_do:
        target.load()
        if p.method == "proxy":
            target.require_logliks()
    return target


def make_scorer(p: SelectParams, target=None) -> Scorer:
    """The scorer of a selection method (one factory: a new method is one class here)."""
    if p.method == "random":
        return RandomPick(p.seed)
    if p.method == "all":
        return AllPick()
    return (OneShot if p.method == "oneshot" else Proxy)(target, p)


def _how_many(store: Store, p: SelectParams, cands: list[dict]) -> float:
    """The `top` a selection keeps: every candidate for `all`; for a paired baseline
    (`size_of`) exactly as many as its pair selected, from exactly the same pool."""
    if p.method == "all":
        return len(cands)
    if not p.size_of:
        return p.top
    other = store.selection(p.size_of)
    if other is None or other["status"] != "finished":
        raise ValueError(f"selection {p.size_of} (the one this baseline pairs with) "
                         "is not finished")
    pool = (other["manifest"] or {}).get("n_candidates")
    if pool != len(cands):
        raise ValueError(f"selection {p.size_of} scored {pool} candidates, this pool "
                         f"has {len(cands)}: a paired baseline draws from the same pool")
    return max(1, len(store.cand_scores(p.size_of, selected_only=True)))


def rank(scores: list[dict], k: int, seed: int) -> list[int]:
    """Top k candidate ids by score, ties broken by a seeded shuffle."""
    rng = random.Random(seed)
    tie = {s["cand_id"]: rng.random() for s in sorted(scores, key=lambda s: s["cand_id"])}
    order = sorted(scores, key=lambda s: (-s["score"], tie[s["cand_id"]]))
    return [s["cand_id"] for s in order[:k]]


def _selection_id(p: SelectParams, cands, dev, model, adapter, runtime: dict | None = None
                  ) -> str:
    # model and adapter are in the key as resolved, whoever resolved them
    d = {k: v for k, v in asdict(p).items()
         if k not in ("batch_size", "top", "model", "adapter") and k not in BackendParams.names()}
    if d.get("served_adapter") is None:  # selections from before the option keep their ids
        d.pop("served_adapter", None)
    d.update(runtime_key(runtime or {}))  # the CPU in float32 (as before the option): none
    key = json.dumps([d, [c["cand_id"] for c in cands],
                      [(x["dataset"], x["split"], x["pid"]) for x in dev], model, adapter],
                     sort_keys=True)
    return f"sel-{p.iteration}-{p.method}-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _spearman(store: Store, iteration: int, sid: str, method: str) -> dict:
    """Spearman of proxy vs one-shot scores over the candidates both scored."""
    if method == "random":
        return {}
    other = "oneshot" if method == "proxy" else "proxy"
    sels = [s for s in store.selections(iteration) if s["method"] == other]
    if not sels:
        return {}
    from scipy.stats import spearmanr

    mine = {s["cand_id"]: s["score"] for s in store.cand_scores(sid)}
    theirs = {s["cand_id"]: s["score"] for s in store.cand_scores(sels[-1]["selection_id"])}
    common = sorted(set(mine) & set(theirs))
    if len(common) < 3:
        return {}
    rho = spearmanr([mine[c] for c in common], [theirs[c] for c in common]).statistic
    return {"spearman_proxy_oneshot": float(rho), "spearman_n": len(common),
            "spearman_with": sels[-1]["selection_id"]}


def training_set(store: Store, selection_ids: list[str]) -> list[dict]:
    """The selected candidates of these selections as chat examples (user: question,
    assistant: solution in the solve prompt's format), with score and method."""
    out, seen = [], set()
    tmpl = prompt_template(DEFAULT_PROMPT)
    for sid in selection_ids:
        sel = store.selection(sid)
        for s in store.cand_scores(sid, selected_only=True):
            if s["cand_id"] in seen:
                continue
            seen.add(s["cand_id"])
            out.append({"cand_id": s["cand_id"], "type_id": s["type_id"],
                        "score": s["score"], "method": sel["method"], "selection_id": sid,
                        "messages": render(tmpl, s["question"]) + [
                            {"role": "assistant", "content": chat_solution(s["solution"])}]})
    return out


def estimate(store: Store, p: SelectParams) -> dict:
    """Minutes to score the iteration's kept candidates here (2-core CPU figures from
    benchmarks/selection.py: ~6.5 s per candidate on 20 dev rows one-shot, 8 candidates
    per batch; ~2.5 s for the proxy)."""
    n = len(store.candidates(iteration=p.iteration, status="kept"))
    if p.limit:
        n = min(n, p.limit)
    per = {"oneshot": (p.n_good + p.n_bad) * 0.3 + 0.5,
           "proxy": (p.n_good + p.n_bad) * 0.12 + 0.1, "random": 0.0, "all": 0.0}[p.method]
    return {"n_candidates": n, "minutes": round(n * per / 60, 1),
            "n_selected": n_keep(p.top, n)}
