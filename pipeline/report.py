"""Read-side views of the loop for the CLI, the app and exports: per iteration its
lineage and accuracy per evaluation set, candidates with provenance as records."""

from __future__ import annotations

import json

from pipeline.evaluate import accuracy_table
from pipeline.store import Store


def iteration_table(store: Store) -> list[dict]:
    """Per iteration (0 = base): adapter, counts, and per evaluation set the accuracy
    with the paired change against the base model."""
    acc = accuracy_table(store)
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
                                   if t["status"] == "finished"), None),
                  "eval": {}}
    for r in acc:
        its.setdefault(r["iteration"], {"iteration": r["iteration"], "eval": {}})
        its[r["iteration"]]["eval"][r["set"]] = {k: v for k, v in r.items()
                                                 if k not in ("iteration", "set")}
    return [its[k] for k in sorted(its)]


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
