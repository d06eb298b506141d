"""One cost model: every speed constant and every estimate before a launch lives here, so
the CLI's `--dry-run`, the app's captions and the stage estimates agree.

Rates measured on this project's reference machine (2 cores, fp32, SmolLM2-135M):
generation 0.3 s per problem in 100-row batches (evaluation of 200 demo problems: 54 s;
extraction of 96: 30 s); LoRA training ~300 tokens/s (benchmarks/training.py: 330-343).
GPU rates are assumptions, stated in every plan and overridable by environment variable:
vLLM serving a 7-8B model in bf16 on one 80 GB GPU at high concurrency generates on the
order of 2,500 tokens/s (vLLM's published throughput benchmarks report 1,500-4,000 for
Llama-class 7-8B models on A100/H100; SEI_GPU_GEN_TOKENS_PER_S); LoRA training of such
a model ~2,000 tokens/s per GPU (SEI_GPU_TRAIN_TOKENS_PER_S). Nothing here has been
measured on a GPU by this project."""

from __future__ import annotations

import math
import os

from pipeline.storage.store import Store

GEN_S_PER_PROBLEM = 0.3          # this machine, 135M, batched, stop at the final answer
TRAIN_TOKENS_PER_S = 300         # this machine, fp32 LoRA, shared prefixes once
TRAIN_TOKENS_PER_EXAMPLE = 150   # chat-formatted question + solution (demo data)
SYNTH_OFFLINE_S_PER_PROPOSAL = 0.03
REFERENCE_PARAMS = 135e6         # the model the rates above were measured with
PROMPT_TOKENS = {"zero_shot": 150, "one_shot": 350}
COMPLETION_TOKENS = 160          # typical completion when stopped at the final answer
KEEP_SHARE = 0.5                 # share of proposals kept when no batch has run yet
SYNTH_PROMPT_TOKENS = (1200, 400)   # per instructor call: base + per bad case shown
SYNTH_COMPLETION_TOKENS = 180       # per proposed problem

# The paper's one-shot selection: every candidate scored on the dev set, each iteration
PAPER_ONESHOT = {"candidates": 10_000, "dev_problems": 100, "iterations": 3}
# One-shot scoring on this machine, seconds per generation, measured side by side on the
# same 128 prompts by benchmarks/scale.py (2026-12-03; this 2-core machine, SmolLM2-135M,
# max 128 new tokens, stop at the final answer). Not used by plan() (its local rate is
# GEN_S_PER_PROBLEM); the figures docs/scale-out.md prices the paper's protocol with.
ONESHOT_S_PER_GENERATION = {
    "local batched (transformers fp32, 128 rows per batch)": 0.387,
    "llama-server -np 8 --cont-batching (Q4_1), 16 in flight": 0.662,
    "llama-server -np 8 --cont-batching (Q4_1), 8 in flight": 0.739,
    "llama-server (Q4_1), one request at a time": 0.814,
}


def gpu_rates() -> dict:
    """The stated GPU rates (tokens/s), with the environment's overrides."""
    return {"gen_tokens_per_s": float(os.environ.get("SEI_GPU_GEN_TOKENS_PER_S", 2500)),
            "train_tokens_per_s": float(os.environ.get("SEI_GPU_TRAIN_TOKENS_PER_S", 2000)),
            "model_params": float(os.environ.get("SEI_GPU_MODEL_PARAMS", 7e9))}


def gpu_s_per_generation(completion_tokens: int = COMPLETION_TOKENS) -> float:
    """Seconds per generation on the stated GPU server rate (decoding only)."""
    return completion_tokens / gpu_rates()["gen_tokens_per_s"]


def oneshot_protocol_seconds(s_per_generation: float, candidates: int | None = None,
                             dev_problems: int | None = None,
                             iterations: int | None = None) -> float:
    """Seconds of one-shot scoring for the paper's protocol (PAPER_ONESHOT, or the numbers
    given) at s_per_generation: selection only, not extraction, evaluation or training."""
    pp = PAPER_ONESHOT
    return (s_per_generation * (candidates or pp["candidates"])
            * (dev_problems or pp["dev_problems"]) * (iterations or pp["iterations"]))


def synth_tokens(n_calls: int, k: int, n_proposals: int) -> tuple[int, int]:
    """Instructor (prompt, completion) tokens of a synthesis batch."""
    return (n_calls * (SYNTH_PROMPT_TOKENS[0] + SYNTH_PROMPT_TOKENS[1] * k),
            n_proposals * SYNTH_COMPLETION_TOKENS)


def train_seconds(n_examples: int, epochs: int) -> float:
    """Seconds of LoRA training here."""
    return n_examples * epochs * TRAIN_TOKENS_PER_EXAMPLE / TRAIN_TOKENS_PER_S


def set_size(store: Store | None, name: str) -> int:
    """Problems in a set: imported, else the known shared file's line count (minus
    what it excludes), else 0."""
    from pipeline.problems import sets

    ds, sp = name.split("/", 1)
    have = [d["n"] for d in (store.datasets() if store else [])
            if d["dataset"] == ds and d["split"] == sp]
    if have:
        return have[0]
    if ds == "demo":
        from pipeline.problems.demo import N_TEST, N_TRAIN

        return {"train": N_TRAIN, "test": N_TEST}.get(sp, 0)
    if name in sets.KNOWN:
        rel, _, excl = sets.KNOWN[name]
        path = sets.benchmarks_dir() / rel
        if path.exists():
            with open(path, "rb") as f:
                n = sum(1 for line in f if line.strip())
            return n - sum(set_size(store, e) for e in excl)
    return 0


MIN_MEASURED = 20  # rows of a dataset before its measured rate replaces the reference


def measured_rates(store: Store | None) -> dict[str, tuple[float, int]]:
    """Seconds per problem measured in this store's local runs, by dataset (over every
    model and adapter that ran it), with the rows it rests on; "*" pools all datasets.
    Datasets differ (a MATH output runs longer than a demo one), so a plan prices each set
    at its own measured rate when it has one."""
    rows = store.generation_rates() if store else []
    by: dict[str, list[float]] = {}
    for r in rows:
        t = by.setdefault(r["dataset"], [0.0, 0])
        t[0] += r["s_per_problem"] * r["n"]
        t[1] += r["n"]
    out = {d: (t / n, n) for d, (t, n) in by.items() if n >= MIN_MEASURED}
    if out:
        n = sum(k for _, k in out.values())
        out["*"] = (sum(v * k for v, k in out.values()) / n, n)
    return out


def s_per_problem(rates: dict[str, tuple[float, int]], set_name: str) -> float:
    """The rate a plan prices a set at: its dataset's measured one, else the store's
    pooled one, else the reference machine's."""
    ds = set_name.split("/", 1)[0]
    return (rates.get(ds) or rates.get("*") or (GEN_S_PER_PROBLEM, 0))[0]


def _assumptions(g: dict, rates: dict | None = None) -> list[str]:
    """What every plan assumes, in words."""
    measured = ", ".join(f"{d} {v:.2f} s ({n} rows)" for d, (v, n) in (rates or {}).items()
                         if d != "*")
    return [
        f"{KEEP_SHARE:.0%} of proposals kept (verification, novelty, contamination)",
        (f"generation time per problem as measured in this store's runs: {measured}; other "
         "sets at the pooled rate; training " if measured else
         f"generation {GEN_S_PER_PROBLEM} s per problem (the reference demo set) and training ")
        + f"{TRAIN_TOKENS_PER_S} tokens/s here (measured, 135M, 2 cores, idle machine)",
        f"{PROMPT_TOKENS['zero_shot']} prompt tokens zero-shot, {PROMPT_TOKENS['one_shot']} "
        f"one-shot, {COMPLETION_TOKENS} completion tokens",
        f"GPU: {g['gen_tokens_per_s']:.0f} generated tokens/s (vLLM, 7-8B, one 80 GB GPU, "
        f"high concurrency) and {g['train_tokens_per_s']:.0f} training tokens/s: stated, not "
        "measured (SEI_GPU_GEN_TOKENS_PER_S, SEI_GPU_TRAIN_TOKENS_PER_S)",
        "CPU time for a 7-8B target scales the 135M rates by parameter count"]


def _generations(store: Store | None, p) -> tuple[dict, dict, dict]:
    """Per iteration: generations by stage, and the train and evaluation set sizes."""
    from pipeline.stages.evaluate import default_sets

    sel, syn = p.stage("select"), p.stage("synthesize")
    eval_sets = p.eval_sets or [s for s in ((store and default_sets(store)) or ["demo/test"])
                                if s not in p.train_sets]
    train_n = {s: min(set_size(store, s), p.limit_train or 10**12) for s in p.train_sets}
    eval_n = {s: min(set_size(store, s), p.eval_limit or 10**12) for s in eval_sets}
    gens = {"extract (train sets)": sum(train_n.values()),
            "select (one-shot: candidates x dev)":
                int(syn.budget * KEEP_SHARE) * (sel.n_good + sel.n_bad),
            "evaluate (sets x arms)": sum(eval_n.values()) * len(p.arms)}
    return gens, train_n, eval_n


def plan(store: Store | None, p) -> dict:
    """What `sei iterate` with LoopParams p would do: every parameter (resolved), its
    deviations from the preset, and per iteration the generations, tokens and time on
    this machine, and GPU-hours for a 7-8B target at the stated rates."""
    from pipeline.loop.presets import deviations
    from pipeline.stages.select import n_keep

    cfg = p.resolved()
    syn, sel, tr = p.stage("synthesize"), p.stage("select"), p.stage("train")
    gens, train_n, eval_n = _generations(store, p)
    kinds = (("extract", "extract (train sets)", "zero_shot"),
             ("select", "select (one-shot: candidates x dev)", "one_shot"),
             ("evaluate", "evaluate (sets x arms)", "zero_shot"))
    prompt_tokens = sum(gens[g] * PROMPT_TOKENS[pk] for _, g, pk in kinds)
    out_tokens = sum(gens[g] * min(COMPLETION_TOKENS, p.stage(k).max_new_tokens)
                     for k, g, _ in kinds)
    kept = int(syn.budget * KEEP_SHARE)
    picked = {"sei": n_keep(sel.top, kept), "random": n_keep(sel.top, kept), "all": kept}
    # from scratch, iteration i trains on the selections of 1..i: the mean over i is (N+1)/2
    grow = (p.iterations + 1) / 2 if tr.mode == "scratch" else 1
    train_examples = sum(picked[a] for a in p.arms) * grow
    train_tok = train_examples * tr.epochs * TRAIN_TOKENS_PER_EXAMPLE
    n_calls = len(p.train_sets) * math.ceil(syn.budget / len(p.train_sets) / syn.per_call)
    s_prompt, s_out = synth_tokens(n_calls, syn.k, syn.budget)
    rates = measured_rates(store)
    eval_s = sum(n * s_per_problem(rates, name) for name, n in eval_n.items())
    # the dev set is drawn from the train sets: one-shot answers at their mean rate
    dev_rate = (sum(s_per_problem(rates, t) for t in train_n) / len(train_n)) if train_n \
        else s_per_problem(rates, "*")
    gen_s = (sum(n * s_per_problem(rates, name) for name, n in train_n.items())
             + gens["select (one-shot: candidates x dev)"] * dev_rate + eval_s * len(p.arms))
    here_s = gen_s + train_tok / TRAIN_TOKENS_PER_S + syn.budget * SYNTH_OFFLINE_S_PER_PROPOSAL
    g = gpu_rates()
    # decoding dominates on a GPU server (prefill runs ~10x faster per token): generated
    # tokens at the stated rate
    gpu_h = (out_tokens / g["gen_tokens_per_s"] + train_tok / g["train_tokens_per_s"]) / 3600
    per = {**{f"generations: {k}": v for k, v in gens.items()},
           "tokens: prompt / generated": f"{int(prompt_tokens):,} / {int(out_tokens):,}",
           "synthesis: proposals": syn.budget, "synthesis: instructor calls": n_calls,
           "synthesis: instructor tokens (in/out)": f"{s_prompt:,} / {s_out:,}",
           "training: examples (all arms)": int(train_examples),
           "training: tokens": int(train_tok),
           "minutes here (this CPU, 135M target)": round(here_s / 60, 1),
           "GPU-hours (7-8B target, stated rates)": round(gpu_h, 2)}
    all_s = here_s * p.iterations + eval_s  # and the base model's evaluation once
    total = {"generations": int(sum(gens.values()) * p.iterations + sum(eval_n.values())),
             "minutes here (this CPU, 135M target)": round(all_s / 60, 1),
             "hours here for a 7-8B target (scaled by parameters)":
                 round(all_s * g["model_params"] / REFERENCE_PARAMS / 3600, 1),
             "GPU-hours (7-8B target, stated rates)": round(gpu_h * p.iterations, 1)}
    return {"config": cfg, "deviations": deviations(cfg), "train_sets": train_n,
            "eval_sets": eval_n, **_pieces(p),
            "estimate": {"per_iteration": per, "total": total,
                         "assumptions": _assumptions(g, rates)}}


def _pieces(p) -> dict:
    """What will analyse, cluster and write the candidates, in words, and the one line a
    run would be refused with (an instructor asked for and none configured), or None."""
    from pipeline.loop.iterate import instructor_check
    from pipeline.models.instructor import from_env

    ins = from_env()
    who = f"the instructor {ins.name}" if ins else None
    syn = p.stage("synthesize").synthesizer
    syn = ("instructor" if ins else "offline") if syn == "auto" else syn
    try:
        instructor_check(p)
        refused = None
    except ValueError as e:
        refused = str(e)
    return {"pieces": {
        "analysis": who or "the offline analyzer (no instructor configured)",
        "clustering": p.stage("cluster").method + (f" by {who}" if who and
                                                   p.stage("cluster").method == "llm" else ""),
        "candidates": f"instructor synthesis by {who or 'an instructor (none configured)'}"
                      if syn == "instructor" else
                      "offline synthesis: template redraws of train problems with new "
                      "numbers (not instructor synthesis)"},
        "refused": refused}
