"""Iterations of the SEI loop. An iteration is a frozen snapshot of the taxonomy in
force (types, their bad cases, the edits applied) plus the ids of what was made from it:
its synthesis batch, dev set, selections, training run and evaluation runs
(`iteration_runs`). Freezing means later curation never rewrites an iteration's record."""

from __future__ import annotations

from pipeline import taxonomy
from pipeline.store import Store


def snapshot(store: Store) -> tuple[dict, str | None]:
    """The taxonomy in force as plain data: per visible type its title, share and cases."""
    tax = taxonomy.current(store)
    by_kp = tax.by_kp()
    types = []
    for t in tax.visible_types():
        cases = sorted({by_kp[k]["case_id"] for k in t.members if not by_kp[k]["excluded"]})
        kps = [k for k in t.members if not by_kp[k]["excluded"]]
        types.append({"type_id": t.type_id, "title": t.title, "description": t.description,
                      "excluded": t.excluded, "share": t.share, "n_cases": len(cases),
                      "case_ids": cases,
                      "keyphrases": {str(k): by_kp[k]["text"] for k in kps[:200]}})
    snap = {"types": types, "edit_ids": [e["edit_id"] for e in tax.edits],
            "n_cases": tax.n_cases}
    return snap, (tax.clustering or {}).get("clustering_id")


def ensure(store: Store, n: int, mode: str = "scratch", params: dict | None = None) -> dict:
    """Iteration n, frozen from the current taxonomy the first time it is asked for."""
    it = store.iteration(n)
    if it is None:
        snap, cl = snapshot(store)
        if not snap["types"]:
            raise ValueError("no error types to work from: run analysis and clustering first "
                             "(`sei quickstart`, or `sei analyze` then `sei cluster`)")
        store.create_iteration(n, mode, n - 1 if n > 1 else None, snap, cl, params or {})
        it = store.iteration(n)
    return it


def latest(store: Store) -> int:
    """The latest iteration's number (0 when there is none)."""
    its = store.iterations()
    return its[-1]["iteration"] if its else 0


def types_of(it: dict, type_ids: list[int] | None = None) -> list[dict]:
    """An iteration's non-excluded types (or the ones named)."""
    ts = [t for t in it["taxonomy"]["types"] if not t["excluded"]]
    if type_ids:
        missing = set(type_ids) - {t["type_id"] for t in ts}
        if missing:
            raise ValueError(f"types {sorted(missing)} are not visible, non-excluded types "
                             f"of iteration {it['iteration']}")
        ts = [t for t in ts if t["type_id"] in type_ids]
    return ts


def adapter_of(store: Store, iteration: int, method: str = "oneshot") -> str | None:
    """The adapter directory that iteration's finished training run on `method`'s
    selections wrote (oneshot: the SEI arm, the model the next iteration works on)."""
    runs = [r for r in store.train_runs(iteration) if r["status"] == "finished"
            and (r["params"] or {}).get("method", "oneshot") == method]
    return runs[-1]["adapter_dir"] if runs else None


def model_for(store: Store, iteration: int) -> tuple[str, str | None]:
    """(base model, adapter) of the model whose errors iteration n works on: the base
    model for iteration 1, else the model iteration n-1 trained."""
    from pipeline.settings import target_model

    base = target_model()
    if iteration <= 1:
        return base, None
    return base, adapter_of(store, iteration - 1)
