"""Synthesis (SEI step 4): new training problems per curated error type.

For each visible, non-excluded type of an iteration's frozen taxonomy, k of its bad cases
go to a synthesizer, which proposes new problems (question, step-by-step solution,
answer). Each proposal is then
  1. verified: its stated answer must agree with its own solution (the project's judge),
     and an annotated `<<expr=value>>` chain must re-execute exactly;
  2. checked for contamination against every imported test split (Rouge-L or a shared
     13-gram);
  3. filtered for novelty: dropped if its Rouge-L F against any train problem or earlier
     kept candidate (of any iteration, and of this batch in order) is >= 0.7.
Every proposal is stored with its provenance and outcome, so the counts per type are
queries. The unit of work is one synthesizer call; its rows are written in one
transaction under stable slot keys, so a killed run re-run writes nothing twice.

Synthesizers sit behind one small interface (`propose`): the offline one (the default
with no instructor) and the instructor one (any OpenAI-compatible endpoint).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from pipeline.analysis import taxonomy
from pipeline.core.params import Params, param
from pipeline.core.progress import Progress, no_progress
from pipeline.problems.answers import judge
from pipeline.storage.store import Store

PROMPT = "synthesize_v1"
PRICES = Path(__file__).parents[1] / "prices.json"


@dataclass
class SynthParams(Params):
    # Demo defaults, sized so that one iteration fits ~10 min on a 2-core CPU; the paper's
    # values are the `paper` preset (pipeline/loop/presets.py).
    iteration: int = param(1, "The iteration whose frozen error types are used.", cli=False)
    budget: int = param(64, "Proposals this iteration, split equally across the train "
                            "datasets, then across types (the paper: 10,000).")
    per_call: int = param(16, "Problems asked for per synthesizer call (the paper: 20).")
    k: int = param(3, "Bad cases shown per call (the paper's code: 8).")
    allocation: str = param("share", "Budget split across types: by share of bad cases, "
                                     "or equally.", choices=("share", "equal"))
    types: list[int] | None = param(None, "Only these type ids (default: every visible "
                                          "type).", cli=False)
    synthesizer: str = param("auto", "auto: the instructor if one is configured, else "
                                     "offline.", choices=("auto", "offline", "instructor"))
    parallel: int = param(4, "Instructor calls in flight (vLLM, OpenAI API).")
    verify_samples: int = param(0, "Instructor only: extra solutions that must agree.")
    novelty: float = param(0.7, "Rouge-L F at or above which a candidate is a "
                                "near-duplicate.")
    contamination_rouge: float = param(0.7, "Rouge-L F against a test problem that "
                                            "counts as contamination.")
    contamination_ngram: int = param(13, "A shared n-gram of this length with a test "
                                         "problem counts as contamination.")
    seed: int = param(0, "Seed of every draw.")


@dataclass
class Proposal:
    """One proposed problem, or the reason a slot produced none."""
    question: str | None
    solution: str | None
    answer: str | None
    source_cases: list[int]
    meta: dict = field(default_factory=dict)
    raw: str | None = None
    error: str | None = None


class Synthesizer(Protocol):
    name: str          # recorded on every candidate
    model: str | None  # None: no model is called (no tokens, no cost)
    prompt_version: str | None
    concurrent: bool   # calls may run in parallel (an endpoint), `parallel` at a time
    verify_samples: int  # extra independent solutions that must agree (`agree`)

    def propose(self, store: Store, type_: dict, cases: list[dict], n: int,
                rng: random.Random) -> tuple[list[Proposal], str | None]:
        """n proposals for one type from its sampled bad cases; and the call's key."""


# -- synthesizers ------------------------------------------------------------------------------


class OfflineSynthesizer:
    """New problems that exercise the skills behind the bad cases, without a model:
    demo problems are redrawn from the same template and tier (new numbers, names,
    phrasing and context); problems with `<<expr=value>>` steps (GSM8K) get new given
    quantities with the step chain re-executed exactly. It cannot invent a new skill,
    and says so: a problem with neither gets a rejected slot with the reason."""

    name = "offline"
    model = None
    prompt_version = None
    concurrent = False
    verify_samples = 0

    def propose(self, store, type_, cases, n, rng):
        """n new problems for a type without a model, each from one of its bad
        cases: a redrawn demo problem, or a GSM8K step chain with new quantities."""
        from pipeline.problems import demo, variants

        out = []
        for j in range(n):
            c = cases[j % len(cases)]
            meta = c["meta"] if isinstance(c["meta"], dict) else json.loads(c["meta"] or "{}")
            src = [c["case_id"]]
            if meta.get("template"):
                p = demo.redraw(meta, rng)
                if p is None:
                    out.append(Proposal(None, None, None, src,
                                        error=f"unknown demo template {meta['template']!r}"))
                    continue
                out.append(Proposal(p["question"], p["solution"], p["answer"], src,
                                    meta={"recipe": "demo redraw", **p["meta"]}))
            elif "<<" in (c["solution"] or ""):
                v = variants.make_variant(c["question"], c["solution"], rng)
                if isinstance(v, variants.Dropped):
                    out.append(Proposal(None, None, None, src, error=f"variant: {v.reason}"))
                    continue
                out.append(Proposal(v.question, v.solution, v.answer, src,
                                    meta={"recipe": "step chain re-executed",
                                          "changes": v.changes}))
            else:
                out.append(Proposal(None, None, None, src, error=(
                    f"no offline recipe for {c['dataset']}/{c['pid']}: not a demo template "
                    "and no <<expr=value>> steps (an instructor can synthesize it)")))
        return out, None


class InstructorSynthesizer:
    """The paper's recipe: the instructor sees k bad cases of a type (question, reference,
    wrong output, keyphrases) and writes `n` new problems in one JSON reply, through
    the project's instructor client (schema check with a repair turn, retries, cache,
    every call logged in llm_calls)."""

    prompt_version = PROMPT
    concurrent = True

    def __init__(self, instructor, verify_samples: int = 0, max_tokens: int = 6000):
        # the default leaves room for 20 problems with solutions in one reply
        self.ins = replace(instructor, max_tokens=max_tokens)
        self.name = self.ins.name
        self.model = self.ins.model
        self.verify_samples = verify_samples

    def prompt(self, type_: dict, cases: list[dict], n: int) -> str:
        """The synthesis prompt: the type's title, description and
        keyphrases, and k bad cases as examples."""
        from pipeline.models.instructor import load_prompt

        template, _ = load_prompt(PROMPT)
        kps = list(dict.fromkeys(type_.get("keyphrases", {}).values()))[:6]
        ex = []
        for i, c in enumerate(cases, 1):
            ex.append(f"Example {i}\nProblem: {c['question']}\nReference solution: "
                      f"{c['solution'] or '(none)'}\nCorrect answer: {c['answer']}\n"
                      f"Model's output: {(c['output'] or '')[:1500]}\n"
                      f"Model's answer: {c['pred']}")
        return template.format(title=type_["title"], description=type_.get("description") or "",
                               keyphrases="\n".join(f"- {k}" for k in kps),
                               k=len(cases), examples="\n\n".join(ex), n=n)

    def propose(self, store, type_, cases, n, rng):
        """n new problems for a type from the instructor model."""
        from pipeline.models.instructor import load_prompt

        _, schema = load_prompt(PROMPT)
        prompt = self.prompt(type_, cases, n)
        src = [c["case_id"] for c in cases]
        key = self.ins.cache_key([{"role": "user", "content": prompt}], schema)
        reply = self.ins.ask_json(store, prompt, schema,
                                  purpose=f"synthesize type {type_['type_id']}")
        out = []
        for item in reply["problems"][:n]:
            out.append(Proposal(str(item["question"]).strip(), str(item["solution"]).strip(),
                                str(item["answer"]).strip(), src,
                                raw=json.dumps(item, ensure_ascii=False)))
        return out, key

    def agree(self, store, p: Proposal) -> dict:
        """k more instructor solutions of p's question; all must match p's answer."""
        from pipeline.models.instructor import InstructorError

        schema = {"type": "object", "required": ["answer"],
                  "properties": {"answer": {"type": ["string", "number"]}}}
        votes = []
        for i in range(self.verify_samples):
            prompt = (f"Solve this problem (independent check {i + 1}). Reply with only a JSON "
                      f'object {{"answer": "..."}}.\n\n{p.question}')
            try:
                a = str(self.ins.ask_json(store, prompt, schema, purpose="verify")["answer"])
            except InstructorError as e:
                votes.append({"answer": None, "error": str(e)[:200], "agrees": False})
                continue
            votes.append({"answer": a, "agrees": bool(judge(a, p.answer)["correct"])})
        return {"samples": votes, "ok": all(v["agrees"] for v in votes)}


def make_synthesizer(name: str = "auto", verify_samples: int = 0) -> Synthesizer:
    """The synthesizer by name; 'auto' is the instructor when one is configured."""
    from pipeline.models.instructor import from_env

    if name == "offline":
        return OfflineSynthesizer()
    ins = from_env()
    if name == "instructor" and ins is None:
        raise ValueError("no instructor configured: set SEI_INSTRUCTOR_MODEL (and "
                         "OPENAI_BASE_URL), or use --synthesizer offline")
    return InstructorSynthesizer(ins, verify_samples) if ins else OfflineSynthesizer()


# -- verification --------------------------------------------------------------------------------


def chat_solution(solution: str) -> str:
    """A solution as the target model is asked to write it: calculator annotations
    dropped and a GSM8K `#### x` line turned into "The answer is x." (the solve prompt's
    own ending), so demonstrations and training targets match what is judged."""
    s = re.sub(r"<<[^<>]*>>", "", solution or "").strip()
    m = re.search(r"\n?\s*####\s*(.+?)\s*$", s)
    if m:
        s = s[:m.start()].rstrip() + f"\nThe answer is {m.group(1)}."
    return s


def verify(p: Proposal) -> tuple[bool, dict]:
    """Whether p's stated answer agrees with its own solution (and its chain re-executes)."""
    from pipeline.problems import variants

    checks: dict = {}
    if "<<" in p.solution:
        problems = variants.check_chain(p.solution)
        checks["chain"] = problems or "ok"
        if problems:
            return False, checks
    v = judge(p.solution, p.answer)
    checks["solution_answer"] = v["pred"]
    checks["agrees"] = bool(v["correct"])
    return bool(v["correct"]), checks


# -- the stage ---------------------------------------------------------------------------------


def allocate(types: list[dict], budget: int, how: str = "share") -> dict[int, int]:
    """Budget per type, by share of bad cases (largest remainder) or equally."""
    if not types:
        return {}
    w = [t["share"] if how == "share" else 1.0 for t in types]
    if sum(w) <= 0:
        w = [1.0] * len(types)
    raw = [budget * x / sum(w) for x in w]
    n = [math.floor(r) for r in raw]
    order = sorted(range(len(types)), key=lambda i: (-(raw[i] - n[i]), types[i]["type_id"]))
    for i in order[:budget - sum(n)]:
        n[i] += 1
    return {t["type_id"]: k for t, k in zip(types, n)}


def plan_calls(types: list[dict], p: SynthParams,
               case_ds: dict[int, str] | None = None) -> list[dict]:
    """Every synthesizer call of a batch: type, call index, how many problems, which cases.
    With bad cases from several datasets (`case_ds`: case id -> dataset) the budget is
    split equally across the datasets first (the paper: 5,000 each), then across each
    dataset's types by their share of its cases, and a call shows one dataset's cases."""
    datasets = sorted({case_ds[c] for t in types for c in t["case_ids"] if c in case_ds}) \
        if case_ds else []
    if len(datasets) <= 1:
        return _calls(types, allocate(types, p.budget, p.allocation), p, None)
    per_ds = allocate([{"type_id": k, "share": 1.0} for k in range(len(datasets))],
                      p.budget, "equal")
    calls = []
    for k, ds in enumerate(datasets):
        sub = [dict(t, case_ids=[c for c in t["case_ids"] if case_ds.get(c) == ds])
               for t in types]
        sub = [dict(t, share=len(t["case_ids"])) for t in sub if t["case_ids"]]
        calls += _calls(sub, allocate(sub, per_ds[k], p.allocation), p, ds)
    return calls


def _calls(types: list[dict], alloc: dict[int, int], p: SynthParams,
           ds: str | None) -> list[dict]:
    calls = []
    for t in types:
        n_t = alloc[t["type_id"]]
        for ci in range(math.ceil(n_t / p.per_call)):
            call = ci if ds is None else f"{ds}.{ci}"
            seed = f"{p.seed}/{t['type_id']}/{call}"
            cases = random.Random(seed).sample(t["case_ids"], min(p.k, len(t["case_ids"])))
            calls.append({"type": t, "call": call, "n": min(p.per_call, n_t - ci * p.per_call),
                          "case_ids": cases, "seed": seed, "dataset": ds})
    return calls


def batch_id_for(p: SynthParams, synth_name: str) -> str:
    """The id of a synthesis batch from its parameters, so a rerun resumes it."""
    d = {k: v for k, v in asdict(p).items() if k != "parallel"}
    key = json.dumps([d, synth_name], sort_keys=True)
    return f"syn-{p.iteration}-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class Filters:
    """Contamination against test splits, then novelty against the growing pool."""

    def __init__(self, store: Store, p: SynthParams):
        from pipeline.problems import novelty

        self.p = p
        self.pool = [r["question"] for r in store.problem_texts(not_split="test")]
        self.pool += [c["question"] for c in store.candidates(status="kept")]
        self.index = novelty.NoveltyIndex(self.pool, threshold=p.novelty)
        tests: dict[str, list[str]] = {}
        for r in store.problem_texts(split="test"):
            tests.setdefault(f"{r['dataset']}/{r['split']}", []).append(r["question"])
        self.tests = tests

    def apply(self, rows: list[dict]) -> list[dict]:
        """Outcomes of one call's verified rows, in order (each kept one joins the pool)."""
        from pipeline.problems import novelty

        hits = novelty.contamination([r["question"] for r in rows], self.tests,
                                     rouge_threshold=self.p.contamination_rouge,
                                     ngram=self.p.contamination_ngram) if rows else []
        out = []
        for row, hit in zip(rows, hits):
            if hit is not None:
                h = asdict(hit)
                h["text"] = self.tests[hit.test_set][hit.index][:300]
                out.append(dict(row, status="contaminated", contamination=h,
                                reason=f"{hit.reason} with {hit.test_set}"))
                continue
            m = self.index.best_match(row["question"])
            if m is not None:
                idx, score = m
                out.append(dict(row, status="near_duplicate", nearest=self.pool[idx][:300],
                                nearest_score=score,
                                reason=f"Rouge-L {score:.2f} >= {self.p.novelty}"))
                continue
            self.index.add(row["question"])
            self.pool.append(row["question"])
            out.append(dict(row, status="kept"))
        return out


def synthesize(store: Store, p: SynthParams, progress: Progress = no_progress,
               synthesizer: Synthesizer | None = None) -> dict:
    """Run (or resume) iteration p.iteration's synthesis batch. Returns its id and counts."""
    it = taxonomy.freeze(store, p.iteration)
    types = taxonomy.types_of(it, p.types)
    synth = synthesizer or make_synthesizer(p.synthesizer, p.verify_samples)
    bid = batch_id_for(p, synth.name)
    all_cases = sorted({c for t in types for c in t["case_ids"]})
    rows = store.cases_by_id(all_cases)
    from pipeline.problems.sets import is_test_split

    held_out = [c for c in rows if is_test_split(c["split"])]
    if held_out:  # the analysis refuses them; an old store may still hold such types
        c = held_out[0]
        raise ValueError(f"{len(held_out)} bad cases of iteration {p.iteration}'s types are "
                         f"test items (e.g. case {c['case_id']}, {c['dataset']}/{c['split']} "
                         f"{c['pid']}): re-analyse train-split runs only")
    case_ds = {c["case_id"]: c["dataset"] for c in rows}
    calls = plan_calls(types, p, case_ds)
    store.upsert_synth_batch(bid, p.iteration, synth.name, asdict(p),
                             {"n_calls": len(calls), "types": [t["type_id"] for t in types],
                              "prompt_version": synth.prompt_version, "model": synth.model})
    store.link_run(p.iteration, "synthesis", bid)
    done = {s.rsplit("/", 1)[0] for s in store.candidate_slots(bid)}
    todo = [c for c in calls if f"{bid}/{c['type']['type_id']}/{c['call']}" not in done]
    total = len(calls)
    progress(total - len(todo), total, "synthesize", f"{synth.name}: {len(todo)} calls to do")
    filters = Filters(store, p)
    failures: list[str] = []

    def run_call(c):
        cases = store.cases_by_id(c["case_ids"])
        try:
            props, key = synth.propose(store, c["type"], cases, c["n"], random.Random(c["seed"]))
        except Exception as e:  # one failed call is recorded; the batch goes on
            return c, None, None, f"{type(e).__name__}: {e}"
        return c, props, key, None

    par = p.parallel if synth.concurrent else 1
    with ThreadPoolExecutor(max(1, par)) as ex:
        for n_done, (c, props, key, err) in enumerate(ex.map(run_call, todo), total - len(todo)):
            t = c["type"]
            if err:
                failures.append(f"type {t['type_id']} call {c['call']}: {err}")
                progress(n_done + 1, total, "synthesize", f"{len(failures)} calls failed")
                continue
            rows = [_row(store, bid, p.iteration, t, c["call"], j, pr, synth, key)
                    for j, pr in enumerate(props)]
            passed = filters.apply([r for r in rows if r.get("status") is None])
            rows = [r if r.get("status") else passed.pop(0) for r in rows]
            store.add_candidates(rows)
            kept = sum(r["status"] == "kept" for r in rows)
            progress(n_done + 1, total, "synthesize",
                     f"type {t['type_id']}: {kept}/{len(rows)} kept")
    counts = summary(store, bid)
    store.finish_synth_batch(bid, "finished" if not failures else "finished_with_errors")
    return {"batch_id": bid, "iteration": p.iteration, "counts": counts,
            "failed_calls": failures, "unreached": unreached(it, types)}


def none_kept(store: Store, iteration: int) -> str | None:
    """Why an iteration's synthesis kept no candidate, in a sentence with counts by reason
    and what to do; None when it kept some (or made none)."""
    import re
    from collections import Counter

    cands = store.candidates(iteration=iteration)
    if not cands or any(c["status"] == "kept" for c in cands):
        return None
    def kind(c: dict) -> str:
        if c["status"] == "near_duplicate":
            return "near-duplicates (Rouge-L at or above the novelty filter)"
        if (c["reason"] or "").startswith("no offline recipe"):
            return "with no offline recipe (not a demo template, no <<expr=value>> steps)"
        return re.sub(r"\d[\d.,]*", "N", c["reason"] or c["status"])

    by = Counter(kind(c) for c in cands)
    parts = "; ".join(f"{n} {r}" for r, n in by.most_common(6))
    offline = all(c["synthesizer"] == "offline" for c in cands)
    hint = ("The offline synthesizer varies the numbers of a problem whose steps are "
            "annotated (<<expr=value>>): on real data such variants are near-duplicates of "
            "their source by construction, and it has no recipe for other problems (MATH). "
            "Configure an instructor (SEI_INSTRUCTOR_MODEL, OPENAI_BASE_URL; Settings page), "
            "or, for an offline trial run, lift the novelty filter "
            "(-p synthesize.novelty=0.99, recorded as a deviation)." if offline else
            "See the candidates' reasons (`sei candidates --status rejected`, or the "
            "Synthesis page).")
    return (f"iteration {iteration}: synthesis kept none of its {len(cands)} candidates "
            f"({parts}). {hint}")


def unreached(it: dict, types: list[dict]) -> dict:
    """Bad cases of the iteration's taxonomy that a batch over `types` cannot draw from,
    by reason, with a sentence each: cases whose keyphrases are all noise (HDBSCAN put them
    in no type), all excluded, or only in types not chosen."""
    un = it["taxonomy"].get("unreached")  # absent from iterations frozen before it was kept
    chosen = {c for t in types for c in t["case_ids"]}
    not_chosen = {c for t in taxonomy.types_of(it) for c in t["case_ids"]} - chosen
    by = {"noise": len(un["noise"]) if un else None,
          "excluded": len(un["excluded"]) if un else None, "not_chosen": len(not_chosen)}
    why = []
    if by["noise"]:
        why.append(f"{by['noise']} bad cases have only unassigned (noise) keyphrases: assign "
                   "them to their nearest types (`sei types assign-noise`, or the Error map) "
                   "before the iteration is frozen")
    if by["excluded"]:
        why.append(f"{by['excluded']} bad cases have only excluded keyphrases or types")
    if by["not_chosen"]:
        why.append(f"{by['not_chosen']} bad cases are only in types not chosen for this batch")
    if un is None:
        why.append(f"iteration {it['iteration']} was frozen before noise was recorded: "
                   "cases in noise only are not counted")
    return {"n": sum(v or 0 for v in by.values()), "by_reason": by, "why": why,
            "case_ids": {"noise": list(un["noise"]) if un else [],
                         "excluded": list(un["excluded"]) if un else [],
                         "not_chosen": sorted(not_chosen)}}


def _row(store, bid, iteration, t, call, j, pr: Proposal, synth, key) -> dict:
    """A proposal as a candidate row: rejected with its reason, or verified (status None,
    for the filters to decide)."""
    row = {"slot": f"{bid}/{t['type_id']}/{call}/{j}", "batch_id": bid,
           "iteration": iteration, "type_id": t["type_id"], "type_title": t["title"],
           "source_cases": pr.source_cases, "synthesizer": synth.name, "model": synth.model,
           "prompt_version": synth.prompt_version, "call_key": key, "question": pr.question,
           "solution": pr.solution, "answer": pr.answer, "raw": pr.raw, "meta": pr.meta}
    if pr.error:
        return dict(row, status="rejected", reason=pr.error)
    try:
        ok, checks = verify(pr)
    except Exception as e:  # an unparsable proposal is a rejected proposal
        return dict(row, status="rejected", reason=f"verification failed: {e}")
    row["verification"] = checks
    if not ok:
        why = (f"chain does not re-execute: {checks['chain'][0]}" if checks.get("chain") not in
               (None, "ok") else f"stated answer {pr.answer!r} disagrees with its solution "
               f"({checks.get('solution_answer')!r})")
        return dict(row, status="rejected", reason=why)
    if synth.verify_samples:
        checks["samples"] = synth.agree(store, pr)
        if not checks["samples"]["ok"]:
            return dict(row, status="rejected", reason=f"{synth.verify_samples} extra "
                        "instructor solutions do not all agree with the stated answer")
    return dict(row, status=None)


def summary(store: Store, batch_id: str | None = None) -> list[dict]:
    """Per type: generated, rejected, near-duplicate, contaminated, kept."""
    per: dict[int, dict] = {}
    for r in store.candidate_counts(batch_id):
        d = per.setdefault(r["type_id"], {"type_id": r["type_id"], "title": r["type_title"],
                                          "generated": 0, "rejected": 0, "near_duplicate": 0,
                                          "contaminated": 0, "kept": 0})
        d[r["status"]] = d.get(r["status"], 0) + r["n"]
        d["generated"] += r["n"]
    return list(per.values())


# -- estimate before launch ---------------------------------------------------------------------


def estimate(store: Store, p: SynthParams) -> dict:
    """Calls, proposals, and instructor tokens and cost (or minutes, offline) of a batch."""
    it = store.iteration(p.iteration)
    if it is None:
        snap, _ = taxonomy.snapshot(store)
        it = {"iteration": p.iteration, "taxonomy": snap}
    types = taxonomy.types_of(it, p.types)
    calls = plan_calls(types, p)
    synth = make_synthesizer(p.synthesizer)
    un = unreached(it, types)
    out = {"synthesizer": synth.name, "n_types": len(types), "n_calls": len(calls),
           "n_proposals": sum(c["n"] for c in calls), "unreached": un["n"],
           "unreached_why": un["why"]}
    if synth.model:  # a model is called: tokens and their price
        prompt_tok = sum(1200 + 400 * len(c["case_ids"]) for c in calls) // 1  # ~4 chars/token
        out_tok = sum(c["n"] * 180 for c in calls)
        price = prices().get(synth.model)
        out.update(prompt_tokens=prompt_tok, completion_tokens=out_tok,
                   price_per_mtok=price,
                   cost_usd=(prompt_tok * price["input"] + out_tok * price["output"]) / 1e6
                   if price else None)
    else:
        out["minutes"] = round(0.5 + out["n_proposals"] / 2000, 1)
    return out


def prices() -> dict:
    """USD per million tokens by model: the packaged table, overridden by
    data/prices.json (edit that file; it is yours)."""
    from pipeline.core import config

    table = json.loads(PRICES.read_text())
    user = config.data_dir() / "prices.json"
    if user.exists():
        table.update(json.loads(user.read_text()))
    return table
