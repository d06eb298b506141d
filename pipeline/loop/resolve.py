"""Which model each iteration's work runs with: the base model and which adapter. The
loop, the CLI (from `--iteration`) and the job runner resolve a stage's model and adapter
here, once, into the stage's parameters; stages never look it up themselves."""

from __future__ import annotations

from pipeline.storage.store import Store

# an arm of the loop -> the selection method its training data comes from
ARMS = {"sei": "oneshot", "random": "random", "all": "all"}


def arm_of(method: str) -> str:
    """The arm a selection method's adapter belongs to (oneshot: the SEI arm)."""
    return {m: a for a, m in ARMS.items()}.get(method, method)


def trained_methods(store: Store, iteration: int) -> set[str]:
    """Selection methods that iteration has a finished adapter for."""
    return {(r["params"] or {}).get("method", "oneshot") for r in store.train_runs(iteration)
            if r["status"] == "finished"}


def every_arm_evaluated(store: Store, iteration: int) -> bool:
    """Whether each arm that iteration trained an adapter for has an evaluation run."""
    from pipeline.stages.evaluate import parse_eval_role

    trained = {arm_of(m) for m in trained_methods(store, iteration)}
    evaluated = {r[0] for lk in store.iteration_links(iteration)
                 if (r := parse_eval_role(lk["role"]))}
    return bool(trained) and trained <= evaluated


def adapter_of(store: Store, iteration: int, method: str = "oneshot") -> str | None:
    """The adapter directory that iteration's finished training run on `method`'s
    selections wrote (oneshot: the SEI arm, the model the next iteration works on)."""
    runs = [r for r in store.train_runs(iteration) if r["status"] == "finished"
            and (r["params"] or {}).get("method", "oneshot") == method]
    return runs[-1]["adapter_dir"] if runs else None


def model_for(store: Store, iteration: int) -> tuple[str, str | None]:
    """(base model, adapter) of the model whose errors iteration n works on: the base
    model for iteration 1, else the model iteration n-1 trained (its SEI arm)."""
    from pipeline.models.settings import target_model

    base = target_model()
    if iteration <= 1:
        return base, None
    adapter = adapter_of(store, iteration - 1)
    if adapter is None:
        raise ValueError(f"iteration {iteration} works on iteration {iteration - 1}'s model, "
                         f"which has no finished training on one-shot selections: "
                         f"`sei train --iteration {iteration - 1}` first")
    return base, adapter


def arm_adapter(store: Store, iteration: int, arm: str) -> str:
    """The adapter an arm of an iteration trained; refused, naming the arms that have
    one, when it has none (never the base model in its place)."""
    method = ARMS.get(arm, arm)
    adapter = adapter_of(store, iteration, method)
    if adapter is None:
        arms = sorted(arm_of(m) for m in trained_methods(store, iteration))
        hint = (f"; it has one for --arm {' / '.join(arms)}" if arms
                else ": train it first (or evaluate iteration 0, the base model)")
        raise ValueError(f"iteration {iteration} has no adapter trained on {method} "
                         f"selections (arm {arm}){hint}")
    return adapter


def models(store: Store, kind: str, p):
    """Stage parameters with the model and adapter they run with filled in (those given
    are kept): selection scores with the iteration's model, evaluation answers with the
    arm's adapter, iterative training starts from the previous iteration's adapter."""
    if kind == "select" and p.method in ("oneshot", "proxy") and p.adapter is None:
        model, adapter = model_for(store, p.iteration)
        return p.replace(model=p.model or model, adapter=adapter)
    if kind == "evaluate" and p.iteration > 0 and p.adapter is None:
        return p.replace(adapter=arm_adapter(store, p.iteration, p.arm))
    if kind == "train" and p.mode == "iterative" and p.iteration > 1 and p.init_adapter is None:
        return p.replace(init_adapter=model_for(store, p.iteration)[1])
    return p


def latest(store: Store) -> int:
    """The latest iteration's number (0 when there is none)."""
    its = store.iterations()
    return its[-1]["iteration"] if its else 0
