"""`sei synthesize | select | train | evaluate | iterate | iterations` and the loop's
exports: the SEI loop from the command line. Each command runs its stage here with a
progress bar, or as a background job with --background (the same stage code)."""

from __future__ import annotations

import json

import click

from pipeline.cli import (
    _run_or_submit,
    _store,
    background_option,
    cli,
    export,
    format_option,
    iteration_option,
    json_option,
    limit_option,
    max_new_tokens_option,
    out_option,
    seed_option,
)


def _fail(e: Exception):
    """End the command with the error as one clean line."""
    raise click.ClickException(str(e))


def _int_list(s: str | None) -> list[int] | None:
    """'3,5' as [3, 5]; nothing as None (all)."""
    return [int(x) for x in s.split(",") if x.strip()] if s else None


def _latest_or_first(ctx, iteration: int | None) -> int:
    """The iteration a loop command works on: the one given, else the latest, else 1."""
    from pipeline import iterations

    return iteration or max(1, iterations.latest(_store(ctx)))


def _run_and_echo(ctx, kind: str, params: dict, background: bool,
                  indent: int | None = None) -> None:
    """Run (or submit) the stage; print its result as JSON, or its ValueError cleanly."""
    try:
        out = _run_or_submit(ctx, kind, params, background)
    except ValueError as e:
        _fail(e)
    if out:
        click.echo(json.dumps(out, default=str, indent=indent))


# --mode: train from the base model (scratch) or further on the last adapter (iterative)
mode_option = click.option("--mode", type=click.Choice(["scratch", "iterative"]),
                           default="scratch", show_default=True)


def method_option(help: str | None = None):
    """--method of selection: oneshot | proxy | random."""
    return click.option("--method", type=click.Choice(["oneshot", "proxy", "random"]),
                        default="oneshot", show_default=True, help=help)


@cli.command()
@iteration_option(help="Default: the latest, or 1.")
@click.option("--budget", default=64, show_default=True,
              help="Proposals this iteration (the paper: 10,000).")
@click.option("--per-call", default=16, show_default=True, help="Problems per call (paper 20).")
@click.option("--k", default=3, show_default=True, help="Bad cases shown per call.")
@click.option("--allocation", type=click.Choice(["share", "equal"]), default="share",
              show_default=True, help="Budget split across types.")
@click.option("--types", "types_", default=None, help="Comma-separated type ids (default all).")
@click.option("--synthesizer", type=click.Choice(["auto", "offline", "instructor"]),
              default="auto", show_default=True)
@click.option("--parallel", default=4, show_default=True, help="Instructor calls in flight.")
@click.option("--verify-samples", default=0, show_default=True,
              help="Instructor only: extra solutions that must agree.")
@seed_option
@click.option("--yes", is_flag=True, help="Skip the confirmation of the estimate.")
@background_option()
@click.pass_context
def synthesize(ctx, iteration, types_, yes, background, **kw):
    """New problems per error type, verified and filtered (resumable).

    Example: sei synthesize --budget 400 --yes
    """
    from pipeline.synthesize import SynthParams, estimate, summary

    store = _store(ctx)
    kw["iteration"] = _latest_or_first(ctx, iteration)
    kw["types"] = _int_list(types_)
    try:
        est = estimate(store, SynthParams.from_dict(kw))
    except ValueError as e:
        _fail(e)
    click.echo("estimate: " + json.dumps(est))
    if not yes and est.get("cost_usd") and not click.confirm("launch?", default=True):
        return
    try:
        out = _run_or_submit(ctx, "synthesize", kw, background)
    except ValueError as e:
        _fail(e)
    if out:
        _print_counts(summary(store, out["batch_id"]))
        if out["failed_calls"]:
            for f in out["failed_calls"]:
                click.echo(f"failed: {f}", err=True)
            raise click.ClickException(f"{len(out['failed_calls'])} calls failed; "
                                       "re-run to retry them")


def _print_counts(rows: list[dict]) -> None:
    click.echo(f"{'type':>5} {'generated':>9} {'rejected':>8} {'near-dup':>8} "
               f"{'contam':>6} {'kept':>5}  title")
    for r in rows:
        click.echo(f"{r['type_id']:>5} {r['generated']:>9} {r['rejected']:>8} "
                   f"{r['near_duplicate']:>8} {r['contaminated']:>6} {r['kept']:>5}  "
                   f"{(r['title'] or '')[:50]}")


@cli.command("candidates")
@click.option("--batch", default=None)
@click.option("--status", default=None)
@limit_option(10)
@click.pass_context
def candidates_cmd(ctx, batch, status, limit):
    """Synthesized candidates with their outcome.

    Example: sei candidates --status near_duplicate --limit 5
    """
    for c in _store(ctx).candidates(batch_id=batch, status=status)[:limit]:
        extra = c["reason"] or ""
        click.echo(f"#{c['cand_id']} type {c['type_id']} [{c['status']}] {extra}\n"
                   f"  Q: {(c['question'] or '')[:200]}\n  A: {c['answer']}")


@cli.command("select")
@iteration_option()
@method_option()
@click.option("--n-good", default=10, show_default=True, help="Dev good cases (paper 50).")
@click.option("--n-bad", default=10, show_default=True, help="Dev bad cases (paper 50).")
@click.option("--top", default=0.5, show_default=True,
              help="Fraction kept (<1) or a count (>=1); the paper: 0.05.")
@max_new_tokens_option(128)
@click.option("--batch-size", default=160, show_default=True,
              help="Dev rows per batch; several candidates share one (8 at 10 + 10).")
@click.option("--backend", type=click.Choice(["local", "openai"]), default="local")
@click.option("--model", default=None)
@click.option("--base-url", default=None)
@limit_option(help="Score only the first N candidates.")
@seed_option
@background_option()
@click.pass_context
def select_cmd(ctx, iteration, background, **kw):
    """Score kept candidates on the dev set and keep the top (resumable).

    Example: sei select --method oneshot --top 0.05 --n-good 50 --n-bad 50
    """
    from pipeline.select import SelectParams, estimate

    kw["iteration"] = _latest_or_first(ctx, iteration)
    kw = {k: v for k, v in kw.items() if v is not None}
    click.echo("estimate: " + json.dumps(estimate(_store(ctx), SelectParams.from_dict(kw))))
    _run_and_echo(ctx, "select", kw, background)


@cli.command("train")
@iteration_option()
@mode_option
@method_option(help="Train on this selection method's picks.")
@click.option("--r", default=16, show_default=True)
@click.option("--alpha", default=32, show_default=True)
@click.option("--dropout", default=0.05, show_default=True)
@click.option("--target-modules", default=None, help="Comma-separated (default all linear).")
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--epochs", default=3, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--max-length", default=512, show_default=True)
@click.option("--checkpoint-every", default=10, show_default=True)
@seed_option
@background_option()
@click.pass_context
def train_cmd(ctx, iteration, target_modules, background, **kw):
    """LoRA on the selected data (resumable from its last checkpoint).

    Example: sei train --mode scratch --epochs 3
    """
    kw["iteration"] = _latest_or_first(ctx, iteration)
    if target_modules:
        kw["target_modules"] = [m.strip() for m in target_modules.split(",")]
    _run_and_echo(ctx, "train", kw, background)


@cli.command("evaluate")
@iteration_option(help="0 is the base model.")
@click.option("--set", "sets", multiple=True, help="dataset/split (repeat); default: every "
              "test split.")
@limit_option(200, help="Problems per set.")
@click.option("--adapter", default=None)
@max_new_tokens_option(200)
@click.option("--backend", type=click.Choice(["local", "openai"]), default="local",
              show_default=True, help="openai: an OpenAI-compatible server (vLLM) answers.")
@click.option("--base-url", default=None, help="The server's URL (openai backend).")
@click.option("--served-model", default=None,
              help="The name the server serves the model under (openai backend), e.g. the "
                   "--lora-modules name of the iteration's adapter.")
@background_option()
@click.pass_context
def evaluate_cmd(ctx, iteration, sets, background, **kw):
    """Run an iteration's model on held-out sets.

    Example: sei evaluate --iteration 1 --set demo/test --set svamp/test --limit 100

    Through vLLM: vllm serve BASE --enable-lora --lora-modules it1=ADAPTER_DIR, then
    sei evaluate --iteration 1 --backend openai --base-url URL/v1 --served-model it1
    """
    from pipeline import iterations
    from pipeline.evaluate import default_sets

    store = _store(ctx)
    kw["iteration"] = iterations.latest(store) if iteration is None else iteration
    kw["sets"] = list(sets) or default_sets(store)
    kw = {k: v for k, v in kw.items() if v is not None}
    _run_and_echo(ctx, "evaluate", kw, background)


@cli.command("iterate")
@click.option("--iterations", "n", default=1, show_default=True)
@mode_option
@click.option("--review", is_flag=True, help="Pause for curation before each synthesis.")
@click.option("--train-limit", default=96, show_default=True)
@click.option("--eval-limit", default=200, show_default=True, help="Problems per test set.")
@click.option("--set", "sets", multiple=True, help="Evaluation sets (dataset/split).")
@click.option("--budget", default=None, type=int, help="Synthesis proposals per iteration.")
@click.option("--top", default=None, type=float, help="Selection: fraction or count kept.")
@click.option("--epochs", default=None, type=int)
@seed_option
@background_option()
@click.pass_context
def iterate_cmd(ctx, n, mode, review, train_limit, eval_limit, sets, budget, top, epochs,
                seed, background):
    """The SEI loop end to end for N iterations (resumable).

    Example: sei iterate --iterations 2
    """
    p = {"iterations": n, "mode": mode, "review": review, "train_limit": train_limit,
         "eval_limit": eval_limit, "eval_sets": list(sets) or None, "seed": seed,
         "synth": {"budget": budget} if budget else {},
         "select": {"top": top} if top else {}, "train": {"epochs": epochs} if epochs else {}}
    _run_and_echo(ctx, "iterate", p, background, indent=1)


@cli.command("iterations")
@json_option
@click.pass_context
def iterations_cmd(ctx, as_json):
    """Accuracy per iteration and evaluation set, with the change against the base model.

    Example: sei iterations --json
    """
    from pipeline.report import iteration_table

    rows = iteration_table(_store(ctx))
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=1))
        return
    for it in rows:
        click.echo(f"iteration {it['iteration']}: adapter {it.get('adapter') or '-'} "
                   f"candidates kept {it.get('n_kept', 0)}, selected {it.get('n_selected', 0)}")
        for s, e in it["eval"].items():
            ci = (f" change {e['diff']:+.1%} [{e['lo']:+.1%}, {e['hi']:+.1%}] "
                  f"McNemar p={e['mcnemar_p']:.3f}") if "diff" in e else ""
            click.echo(f"    {s:16} acc {e['accuracy']:.1%} (n={e['n']}){ci}")


@export.command("candidates")
@out_option
@format_option
@click.option("--all", "everything", is_flag=True, help="Every status, not only kept.")
@click.pass_context
def export_candidates(ctx, out, fmt, everything):
    """Kept candidates as chat `messages` with their provenance.

    Example: sei export candidates -o candidates.jsonl
    """
    from pipeline.report import candidate_records, write_records

    rows = candidate_records(_store(ctx), None if everything else "kept")
    write_records(rows, out, fmt)
    click.echo(f"{len(rows)} candidates -> {out}")


@export.command("selection")
@out_option
@click.option("--selection", "selection_id", default=None, help="Default: the latest one-shot.")
@format_option
@click.pass_context
def export_selection(ctx, out, selection_id, fmt):
    """Selected candidates (the training set) as chat `messages` with score and method.

    Example: sei export selection -o train.jsonl
    """
    from pipeline.report import write_records
    from pipeline.select import training_set

    store = _store(ctx)
    if selection_id is None:
        sels = [s for s in store.selections() if s["method"] == "oneshot"
                and s["status"] == "finished"]
        if not sels:
            _fail(ValueError("no finished one-shot selection; run `sei select` first"))
        selection_id = sels[-1]["selection_id"]
    rows = training_set(store, [selection_id])
    write_records(rows, out, fmt)
    click.echo(f"{len(rows)} selected candidates -> {out}")
