"""Read-side views of the loop for the CLI, the app and exports: per iteration its
lineage and accuracy per evaluation set, candidates with provenance as records."""

from __future__ import annotations

import json

from pipeline.evaluate import accuracy_table, eval_runs
from pipeline.stats import pair_runs, paired_diff, paired_macro
from pipeline.store import Store


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
        train_ds = {s.split("/", 1)[0] for s in cfg.get("train_sets") or ["demo/train"]}
        in_domain = {s for s in base if s.split("/", 1)[0] in train_ds}
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
    from pipeline.presets import deviations

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
    from pipeline.select import chat_solution  # the training format
    from pipeline.target import DEFAULT_PROMPT, prompt_template, render

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
    if fmt == "jsonl":
        with open(out, "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    else:
        import pandas as pd

        pd.DataFrame([{k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v
                       for k, v in r.items()} for r in rows]).to_parquet(out)
