"""The read side, one module: what the CLI, the app's pages and the exports show of the
loop. Per iteration its lineage and accuracy per evaluation set with paired intervals,
arms side by side, candidates with provenance as records; for the pages, lookups that
join what the stages stored, threshold previews and time estimates (from pipeline/loop/costs.py).
Nothing here writes; no SQL (the Store does that)."""

from __future__ import annotations

import json

from pipeline.core.stats import pair_runs, paired_diff, paired_macro
from pipeline.loop import resolve
from pipeline.loop.costs import (
    TRAIN_TOKENS_PER_EXAMPLE,
    TRAIN_TOKENS_PER_S,
    measured_rates,
    s_per_problem,
)
from pipeline.problems.demo import N_TRAIN
from pipeline.problems.sets import in_domain as in_domain_sets
from pipeline.stages.evaluate import accuracy_table, eval_runs
from pipeline.storage.store import Store

CAND_STATUSES = ("kept", "rejected", "near_duplicate", "contaminated")


def is_empty(store: Store) -> bool:
    """Nothing of the loop yet: no iteration, no evaluation, no training run."""
    return not store.iterations() and not store.iteration_links() and not store.train_runs()


def iteration_choices(store: Store) -> list[int]:
    """Iterations the pages can show: the stored ones, else iteration 1 (to be made)."""
    return [it["iteration"] for it in store.iterations()] or [1]


# -- synthesis ---------------------------------------------------------------------------------


def batches(store: Store, iteration: int | None = None) -> list[dict]:
    """Synthesis batches (newest first), optionally of one iteration."""
    out = [b for b in store.synth_batches() if iteration is None or b["iteration"] == iteration]
    return list(reversed(out))


def type_candidates(store: Store, batch_id: str, type_id: int,
                    status: str | None = None) -> list[dict]:
    """One type's candidates of a batch, each with `sources`: the bad cases it came from
    (question, reference answer, the model's wrong output and answer)."""
    cands = [c for c in store.candidates(batch_id=batch_id, status=status)
             if c["type_id"] == type_id]
    ids = sorted({int(i) for c in cands for i in (c["source_cases"] or [])})
    by_id = {c["case_id"]: c for c in store.cases_by_id(ids)}
    for c in cands:
        c["sources"] = [by_id[int(i)] for i in (c["source_cases"] or []) if int(i) in by_id]
    return cands


# -- selection ---------------------------------------------------------------------------------


def cut_preview(scores: list[dict], tops: list[float], seed: int = 0) -> list[dict]:
    """Per type: candidates scored, selected (stored), and how many each top fraction (or
    count) would keep, ranked exactly as selection ranks (ties broken by the seed)."""
    from pipeline.stages.select import n_keep, rank

    per: dict = {}
    for s in scores:
        d = per.setdefault(s["type_id"], {"type_id": s["type_id"], "title": s["type_title"],
                                          "scored": 0, "selected": 0})
        d["scored"] += 1
        d["selected"] += bool(s["selected"])
    by_cand = {s["cand_id"]: s["type_id"] for s in scores}
    for top in tops:
        col = cut_label(top)
        for d in per.values():
            d[col] = 0
        for cid in rank(scores, n_keep(top, len(scores)), seed):
            per[by_cand[cid]][col] += 1
    return sorted(per.values(), key=lambda d: (-d["scored"], d["type_id"] or 0))


def cut_label(top: float) -> str:
    """A threshold as people read it: 'top 5%' or 'top 20'."""
    return f"top {top:g}" if top >= 1 else f"top {100 * top:g}%"


def cut_score(scores: list[dict], top: float, seed: int = 0) -> float | None:
    """The lowest score a top-`top` cut keeps."""
    from pipeline.stages.select import n_keep, rank

    keep = rank(scores, n_keep(top, len(scores)), seed)
    sc = {s["cand_id"]: s["score"] for s in scores}
    return min(sc[c] for c in keep) if keep else None


def dev_changes(store: Store, selection_id: str, iteration: int, cand: dict) -> list[dict]:
    """The dev problems a scored candidate fixed (bad half, now right) or broke (good half,
    now wrong), with the question, the zero-shot output and the one-shot output."""
    dev = {d["pid"]: d for d in store.dev_set(iteration)}
    gens = {g["pid"]: g for g in store.score_generations(selection_id, cand["cand_id"])}
    out = []
    for change in ("fixed", "broken"):
        for pid in cand.get(change) or []:
            d, g = dev.get(pid, {}), gens.get(pid, {})
            out.append({"change": change, "pid": pid, "half": d.get("half"),
                        "question": d.get("question"), "answer": d.get("answer"),
                        "zero_shot_output": d.get("zero_output"),
                        "one_shot_output": g.get("output"), "one_shot_pred": g.get("pred")})
    return out


def proxy_vs_oneshot(store: Store, iteration: int) -> list[dict]:
    """Per candidate scored by both the latest one-shot and the latest proxy selection of
    an iteration: both scores (for a scatter beside the stored Spearman)."""
    latest = {}
    for s in store.selections(iteration):
        latest[s["method"]] = s["selection_id"]
    if "oneshot" not in latest or "proxy" not in latest:
        return []
    one = {s["cand_id"]: s for s in store.cand_scores(latest["oneshot"])}
    out = []
    for s in store.cand_scores(latest["proxy"]):
        if s["cand_id"] in one:
            out.append({"cand_id": s["cand_id"], "type_id": s["type_id"],
                        "type_title": s["type_title"], "oneshot": one[s["cand_id"]]["score"],
                        "proxy": s["score"]})
    return out


# -- estimates ----------------------------------------------------------------------------------


def train_estimate(store: Store, p) -> dict:
    """Examples, optimizer steps, tokens and seconds of a training run (TrainParams):
    examples x epochs x ~150 tokens at ~170 tokens/s. `error` when there is nothing to
    train on yet."""
    import math

    from pipeline.stages.train import selections_for

    try:
        sel_ids = selections_for(store, p)
    except ValueError as e:
        return {"error": str(e)}
    cands = {s["cand_id"] for sid in sel_ids
             for s in store.cand_scores(sid, selected_only=True)}
    n = len(cands)
    tokens = n * p.epochs * TRAIN_TOKENS_PER_EXAMPLE
    return {"selection_ids": sel_ids, "n_examples": n,
            "steps": math.ceil(n / p.batch_size) * p.epochs if n else 0, "tokens": tokens,
            "seconds": tokens / TRAIN_TOKENS_PER_S}


def baseline_by_type(store: Store, sid: str, pair: str | None) -> list[dict]:
    """Per error type, how many candidates a baseline selection kept, beside the
    selection it is paired with (same pool): what the ablation changes."""
    def counts(x):
        out: dict = {}
        for c in store.cand_scores(x, selected_only=True):
            key = f"{c['type_id']}: {c['type_title']}"
            out[key] = out.get(key, 0) + 1
        return out
    mine, theirs = counts(sid), counts(pair) if pair else {}
    return [{"type": t, "baseline kept": mine.get(t, 0), "paired selection kept": theirs.get(t, 0)}
            for t in sorted(set(mine) | set(theirs))]


def trained_models(store: Store) -> dict[str, tuple[int, str]]:
    """The models an evaluation can run, by label: the base model (iteration 0) and
    each iteration's finished adapter per arm, oldest first."""
    out = {"base model (iteration 0)": (0, "sei")}
    for it in sorted({r["iteration"] for r in store.train_runs()}):
        for m in sorted(resolve.trained_methods(store, it)):
            arm = resolve.arm_of(m)
            out[f"iteration {it}, {arm} arm"] = (it, arm)
    return out


def eval_estimate(store: Store, p, assume: dict[str, int] | None = None) -> dict:
    """Problems per evaluation set (EvalParams: the first `limit` of each) plus the train
    check, and seconds: problems x ~80 tokens at ~200 tokens/s. `assume`: sizes of sets
    not imported yet."""
    from pipeline.stages.evaluate import base_train_run

    sizes = dict(assume or {})
    sizes.update({f"{d['dataset']}/{d['split']}": d["n"] for d in store.datasets()})
    per = {}
    for s in p.sets:
        n = sizes.get(s, 0)
        per[s] = min(n, p.limit) if p.limit else n
    if p.train_check and p.iteration > 0:
        base = base_train_run(store)
        if base:
            per["train_check"] = base["n_items"] or base["n_done"] or 0
    n = sum(per.values())
    rates = measured_rates(store)
    base = base_train_run(store) if "train_check" in per else None
    sec = sum(k * s_per_problem(rates, base["dataset"] if name == "train_check" and base
                                else name) for name, k in per.items())
    return {"problems": per, "n_problems": n, "seconds": sec,
            "s_per_problem": sec / n if n else s_per_problem(rates, "*"),
            "measured": bool(rates)}


def iterate_estimate(store: Store, p) -> dict:
    """A rough time for `sei iterate` (LoopParams) from where the store stands: the base
    evaluation if missing, then per iteration not yet done: extraction of the train
    problems, synthesis, one-shot selection (assuming the share of proposals kept so far,
    else half), training and evaluation. Minutes, with the parts."""
    from pipeline.stages import evaluate, select, synthesize

    sets = p.eval_sets or [s for s in evaluate.default_sets(store) or ["demo/test"]
                           if s not in p.train_sets]
    assume = {"demo/test": 200}  # what the loop imports into an empty store
    parts: dict[str, float] = {}
    have0 = {lk["role"][5:] for lk in store.iteration_links(0) if lk["role"].startswith("eval:")}
    missing0 = [s for s in sets if s not in have0]
    if missing0:
        e = eval_estimate(store, evaluate.EvalParams(iteration=0, sets=missing0,
                                                     limit=p.eval_limit), assume)
        parts["evaluate base"] = e["seconds"]
    done = {it["iteration"] for it in store.iterations() if it["status"] == "done"}
    all_c = store.candidates()
    kept_share = (sum(c["status"] == "kept" for c in all_c) / len(all_c)) if all_c else 0.5
    sp, tp = p.stage("select"), p.stage("train")
    for i in range(1, p.iterations + 1):
        if i in done:
            continue
        roles = {lk["role"] for lk in store.iteration_links(i)}
        if store.iteration(i) is None:
            rates = measured_rates(store)
            parts[f"{i}: extract"] = sum((p.limit_train or N_TRAIN) * s_per_problem(rates, t)
                                         for t in p.train_sets)
        # what a re-run would find done (stages resume) costs next to nothing
        synth_done = any(b["status"].startswith("finished") for b in batches(store, i))
        sel_done = any(x["method"] == "oneshot" and x["status"] == "finished"
                       for x in store.selections(i))
        train_done = resolve.adapter_of(store, i) is not None
        eval_done = all(f"eval:{x}" in roles for x in sets)
        try:
            syn = synthesize.estimate(store, p.stage("synthesize", iteration=i))
        except ValueError:
            syn = {"n_types": 0}
        if not syn.get("n_types"):  # no error types yet: the loop makes them first
            n = p.stage("synthesize").budget
            syn = {"n_proposals": n, "minutes": round(0.5 + n / 2000, 1)}
        if not synth_done:
            parts[f"{i}: synthesize"] = 60 * (syn.get("minutes") or 0)
        kept = store.candidates(iteration=i, status="kept")
        n_c = len(kept) if kept else int(syn["n_proposals"] * kept_share)
        per = (sp.n_good + sp.n_bad) * 60 / 200 + 1.0
        if not sel_done:
            parts[f"{i}: select"] = n_c * per
        n_sel = select.n_keep(sp.top, n_c)
        if not train_done:
            parts[f"{i}: train"] = (n_sel * len(p.arms) * tp.epochs
                                    * TRAIN_TOKENS_PER_EXAMPLE / TRAIN_TOKENS_PER_S)
        if not eval_done:
            e = eval_estimate(store, evaluate.EvalParams(iteration=i, sets=sets,
                                                         limit=p.eval_limit,
                                                         train_check=False), assume)
            parts[f"{i}: evaluate"] = e["seconds"] * len(p.arms)
    return {"parts": {k: round(v / 60, 1) for k, v in parts.items()},
            "minutes": round(sum(parts.values()) / 60, 1)}


# -- results -----------------------------------------------------------------------------------


def accuracy_rows(store: Store) -> list[dict]:
    """evaluate.accuracy_table with the change's interval as error bars around the
    accuracy: +(hi - diff) and -(diff - lo) (none for the base model)."""
    from pipeline.stages.evaluate import accuracy_table

    rows = accuracy_table(store)
    for r in rows:
        if r.get("diff") is not None:
            r["err_plus"], r["err_minus"] = r["hi"] - r["diff"], r["diff"] - r["lo"]
        else:
            r["err_plus"] = r["err_minus"] = 0.0
    return rows


def loss_curves(store: Store) -> list[dict]:
    """Every training run with its loss per step, and a `label` a person reads (iteration,
    arm, mode) where a legend would otherwise show run ids."""
    return [dict(t, steps=store.train_steps(t["train_id"]),
                 label=f"iteration {t['iteration']} · "
                       f"{resolve.arm_of((t['params'] or {}).get('method', 'oneshot'))} arm · "
                       f"{t['mode']}")
            for t in store.train_runs()]


def next_iteration(store: Store) -> int:
    """The iteration `run the next iteration` goes to: the first one not done."""
    its = store.iterations()
    done = [it["iteration"] for it in its if it["status"] == "done"]
    return (max(done) + 1) if done else (resolve.latest(store) or 1)


# -- the guided path: where the user is in the loop ---------------------------------------------

# (step, page that does it, what it does): the loop in the order a person walks it
LOOP_STEPS = (
    ("extract", "Overview", "run the model on a train set and judge its answers"),
    ("analyze", "Error map", "write error keyphrases for the bad cases"),
    ("curate", "Error map", "cluster them into error types; rename, merge, split, exclude"),
    ("synthesize", "Synthesis", "make new problems for each error type"),
    ("select", "Selection", "score them as one-shot examples and keep the top"),
    ("train", "Iterations", "LoRA on the selected problems"),
    ("evaluate", "Iterations", "the trained model on held-out sets, against the base"),
)


def loop_steps(store: Store) -> dict:
    """Each step's state for the iteration in progress ("done" or "todo") and the next
    step to take, for the Overview's guided path."""
    from pipeline.problems.sets import is_test_split

    n = next_iteration(store)
    done = {
        "extract": any(r["n_done"] and not is_test_split(r["split"])
                       for r in store.runs("extract")),
        "analyze": store.latest_analysis() is not None,
        "curate": store.latest_clustering() is not None,
        "synthesize": any(b["iteration"] == n and b["status"] == "finished"
                          for b in store.synth_batches()),
        "select": any(x["method"] == "oneshot" and x["status"] == "finished"
                      for x in store.selections(n)),
        "train": any(r["status"] == "finished" for r in store.train_runs(n)),
        "evaluate": any(lk["role"].startswith("eval") for lk in store.iteration_links(n)),
    }
    steps = [{"step": k, "page": page, "what": what, "done": done[k]}
             for k, page, what in LOOP_STEPS]
    nxt = next((x for x in steps if not x["done"]), None)
    return {"iteration": n, "steps": steps, "next": nxt}


# -- reports: iterations, arms, exports -------------------------------------------------------


def _diff(a: list[bool], b: list[bool]) -> dict:
    d = paired_diff(a, b, seed=0)
    return {"n": d.n, "acc_a": d.acc_a, "acc_b": d.acc_b, "diff": d.diff, "lo": d.lo,
            "hi": d.hi, "fixed": d.fixed, "broken": d.broken, "mcnemar_p": d.mcnemar_p}


def compare(store: Store, runs_a: dict[str, str], runs_b: dict[str, str],
            in_domain: set[str]) -> dict:
    """Paired changes b - a on the sets both ran: per set, and averaged (micro: every
    item counts once; macro: every set counts once), overall, in-domain and
    out-of-domain, each with its 95% paired-bootstrap interval."""
    pairs = {}
    for s in sorted(set(runs_a) & set(runs_b)):
        a, b = pair_runs(store.run_items(runs_a[s]), store.run_items(runs_b[s]))
        if a:
            pairs[s] = (a, b)
    out: dict = {"sets": {s: _diff(a, b) for s, (a, b) in pairs.items()}, "averages": {}}
    groups = {"all": list(pairs), "in_domain": [s for s in pairs if s in in_domain],
              "out_of_domain": [s for s in pairs if s not in in_domain]}
    for g, names in groups.items():
        if not names:
            continue
        micro_a = [x for s in names for x in pairs[s][0]]
        micro_b = [x for s in names for x in pairs[s][1]]
        out["averages"][g] = {"sets": names, "micro": _diff(micro_a, micro_b),
                              "macro": paired_macro([pairs[s] for s in names], seed=0)}
    return out


def arms_table(store: Store) -> list[dict]:
    """Per iteration: each arm's evaluation against the base model, and SEI against each
    baseline arm on the same items, per set and averaged."""
    runs = eval_runs(store)
    base = {s: rid for (it, arm, s), rid in runs.items() if it == 0}
    out = []
    for it in store.iterations():
        n = it["iteration"]
        cfg = it.get("params") or {}
        in_domain = in_domain_sets(base, cfg.get("train_sets") or ["demo/train"])
        arms = {}
        for (i, arm, s), rid in runs.items():
            if i == n:
                arms.setdefault(arm, {})[s] = rid
        row = {"iteration": n, "arms": {}, "sei_vs": {}}
        for arm, rs in sorted(arms.items()):
            row["arms"][arm] = compare(store, base, rs, in_domain)
        for arm, rs in sorted(arms.items()):
            if arm != "sei" and "sei" in arms:
                row["sei_vs"][arm] = compare(store, rs, arms["sei"], in_domain)
        out.append(row)
    return out


def iteration_table(store: Store) -> list[dict]:
    """Per iteration (0 = base): adapter, counts, and per evaluation set the accuracy
    with the paired change against the base model."""
    from pipeline.loop.presets import deviations

    acc = accuracy_table(store)
    arms = {r["iteration"]: r for r in arms_table(store)}
    its = {0: {"iteration": 0, "adapter": None, "eval": {}}}
    for it in store.iterations():
        n = it["iteration"]
        links = store.iteration_links(n)
        trains = [store.train_run(lk["ref"]) for lk in links if lk["role"].startswith("train:")]
        trains = [t for t in trains if t]
        sels = store.selections(n)
        its[n] = {"iteration": n, "mode": it["mode"], "status": it["status"],
                  "clustering_id": it["clustering_id"],
                  "n_types": len(it["taxonomy"]["types"]),
                  "n_edits": len(it["taxonomy"]["edit_ids"]),
                  "n_kept": len(store.candidates(iteration=n, status="kept")),
                  "n_candidates": len(store.candidates(iteration=n)),
                  "selections": {s["method"]: {"selection_id": s["selection_id"],
                                               "n_scored": s["n_scored"],
                                               "n_selected": s["n_selected"],
                                               "stats": s["stats"]} for s in sels},
                  "n_selected": max([s["n_selected"] for s in sels
                                     if s["method"] == "oneshot"], default=0),
                  "trains": [{"train_id": t["train_id"], "mode": t["mode"],
                              "status": t["status"], "adapter_dir": t["adapter_dir"],
                              "adapter_hash": t["adapter_hash"], "n_examples": t["n_examples"],
                              "method": (t["params"] or {}).get("method")} for t in trains],
                  "adapter": next((t["adapter_dir"] for t in reversed(trains)
                                   if t["status"] == "finished"
                                   and (t["params"] or {}).get("method") == "oneshot"), None),
                  "extractions": [_run_summary(store, lk["ref"]) for lk in links
                                  if lk["role"] == "extract"],
                  "preset": (it["params"] or {}).get("preset"),
                  "deviations": deviations(it["params"]) if (it["params"] or {}).get(
                      "preset") else {},
                  "config": it["params"],
                  "arms": arms.get(n, {}).get("arms", {}),
                  "sei_vs": arms.get(n, {}).get("sei_vs", {}),
                  "eval": {}}
    for r in acc:
        its.setdefault(r["iteration"], {"iteration": r["iteration"], "eval": {}})
        its[r["iteration"]].setdefault("eval_by_arm", {}).setdefault(r["arm"], {})[r["set"]] = {
            k: v for k, v in r.items() if k not in ("iteration", "set", "arm")}
        if r["arm"] == "sei":
            its[r["iteration"]]["eval"][r["set"]] = {k: v for k, v in r.items()
                                                     if k not in ("iteration", "set", "arm")}
    return [its[k] for k in sorted(its)]


def _run_summary(store: Store, run_id: str) -> dict:
    """A run's identity and accuracy, as the tables show it."""
    r = next((x for x in store.runs() if x["run_id"] == run_id), None) or {}
    return {k: r.get(k) for k in ("run_id", "dataset", "split", "model_id", "adapter",
                                  "weights_hash", "data_hash", "n_done", "accuracy", "seed")}


def candidate_records(store: Store, status: str | None = "kept") -> list[dict]:
    """Candidates as chat examples with their metadata and provenance."""
    from pipeline.models.target import DEFAULT_PROMPT, prompt_template, render
    from pipeline.stages.select import chat_solution  # the training format

    tmpl = prompt_template(DEFAULT_PROMPT)
    out = []
    for c in store.candidates(status=status):
        if not c["question"]:
            rec = {"messages": None}
        else:
            rec = {"messages": render(tmpl, c["question"]) + [
                {"role": "assistant", "content": chat_solution(c["solution"])}]}
        rec.update({k: c[k] for k in ("cand_id", "iteration", "batch_id", "type_id",
                                      "type_title", "status", "reason", "synthesizer", "model",
                                      "prompt_version", "call_key", "source_cases", "answer",
                                      "verification", "nearest", "nearest_score",
                                      "contamination", "meta")})
        rec["question"], rec["solution"] = c["question"], c["solution"]
        out.append(rec)
    return out


def write_records(rows: list[dict], out: str, fmt: str = "jsonl") -> None:
    """Rows to a JSONL file, or to Parquet with nested values as JSON text."""
    with open(out, "wb") as f:
        dump_records(rows, f, fmt)


def dump_records(rows: list[dict], f, fmt: str = "jsonl") -> None:
    """Rows into an open binary file, as write_records writes them (the CLI's exports go
    through cli_base.write_export, which leaves no partial file)."""
    if fmt == "jsonl":
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False, default=str) + "\n").encode())
    else:
        import pandas as pd

        pd.DataFrame([{k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v
                       for k, v in r.items()} for r in rows]).to_parquet(f)
