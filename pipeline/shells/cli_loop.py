"""`sei synthesize | select | train | evaluate | iterate | iterations` and the loop's
exports: the SEI loop from the command line. Each command runs its stage here with a
progress bar, or as a background job with --background (the same stage code)."""

from __future__ import annotations

import json

import click

from pipeline.core.options import params_options
from pipeline.loop.iterate import LoopParams
from pipeline.loop.presets import PRESETS
from pipeline.shells.cli_base import (
    _run_or_submit,
    _store,
    background_option,
    cli,
    export,
    format_option,
    iteration_option,
    json_option,
    limit_option,
    out_option,
    write_export,
)
from pipeline.stages.evaluate import EvalParams
from pipeline.stages.select import SelectParams
from pipeline.stages.synthesize import SynthParams
from pipeline.stages.train import TrainParams


def _fail(e: Exception):
    """End the command with the error as one clean line."""
    raise click.ClickException(str(e))


def _int_list(s: str | None) -> list[int] | None:
    """'3,5' as [3, 5]; nothing as None (all)."""
    return [int(x) for x in s.split(",") if x.strip()] if s else None


def _latest_or_first(ctx, iteration: int | None) -> int:
    """The iteration a loop command works on: the one given, else the latest, else 1."""
    from pipeline.loop import resolve

    return iteration or max(1, resolve.latest(_store(ctx)))


def _run_and_echo(ctx, kind: str, params: dict, background: bool,
                  indent: int | None = None) -> dict | None:
    """Run (or submit) the stage; print its result as JSON, or its ValueError or an
    instructor's failure cleanly. Returns the result (None for a job)."""
    from pipeline.models.instructor import InstructorError, failure_line

    try:
        out = _run_or_submit(ctx, kind, params, background)
    except ValueError as e:
        _fail(e)
    except InstructorError as e:  # e.g. the loop's analysis or LLM clustering
        raise click.ClickException(failure_line(e, ctx.command_path)) from None
    if out:
        click.echo(json.dumps(out, default=str, indent=indent))
    return out


@cli.command()
@iteration_option(help="Default: the latest, or 1.")
@params_options(SynthParams)
@click.option("--types", "types_", default=None, help="Comma-separated type ids (default all).")
@click.option("--yes", is_flag=True, help="Skip the confirmation of the estimate.")
@background_option()
@click.pass_context
def synthesize(ctx, iteration, types_, yes, background, **kw):
    """New problems per error type, verified and filtered (resumable).

    Example: sei synthesize --budget 400 --yes
    """
    from pipeline.stages.synthesize import estimate, summary

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
    from pipeline.models.instructor import InstructorError, failure_line

    try:
        out = _run_or_submit(ctx, "synthesize", kw, background)
    except ValueError as e:
        _fail(e)
    except InstructorError as e:
        raise click.ClickException(failure_line(e, ctx.command_path)) from None
    if out:
        _print_counts(summary(store, out["batch_id"]))
        un = out.get("unreached") or {}
        if un.get("n"):
            click.echo(f"cannot reach {un['n']} bad cases: " + "; ".join(un["why"]))
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
@params_options(SelectParams)
@background_option()
@click.pass_context
def select_cmd(ctx, iteration, background, **kw):
    """Score kept candidates on the dev set and keep the top (resumable).

    Example: sei select --method oneshot --top 0.05 --n-good 50 --n-bad 50
    """
    from pipeline.stages.select import estimate

    kw["iteration"] = _latest_or_first(ctx, iteration)
    kw = {k: v for k, v in kw.items() if v is not None}
    click.echo("estimate: " + json.dumps(estimate(_store(ctx), SelectParams.from_dict(kw))))
    _run_and_echo(ctx, "select", kw, background)


@cli.command("train")
@iteration_option()
@params_options(TrainParams)
@background_option()
@click.pass_context
def train_cmd(ctx, iteration, background, **kw):
    """LoRA on the selected data (resumable from its last checkpoint).

    Example: sei train --mode scratch --epochs 3

    On several processes: accelerate launch --num_processes N -m pipeline.shells.cli train ...
    (rank 0 alone opens the store; the global batch stays --batch-size).
    """
    from pipeline.stages.train import launched_ranks, rows_per_rank, train

    rank, world = launched_ranks()
    try:
        rows_per_rank(TrainParams.from_dict(kw).batch_size, world)  # before the store
        if world > 1 and background:
            raise ValueError("--background runs one process; launch several without it")
        if rank:  # another rank of a launch: never opens the store; rank 0 tells it the rest
            train(None, TrainParams.from_dict(kw))
            return
    except ValueError as e:
        _fail(e)
    kw["iteration"] = _latest_or_first(ctx, iteration)
    _run_and_echo(ctx, "train", kw, background)


@cli.command("evaluate")
@iteration_option(help="0 is the base model.")
@click.option("--set", "sets", multiple=True, help="dataset/split (repeat); default: every "
              "test split.")
@params_options(EvalParams)
@click.option("--arm", type=click.Choice(["sei", "random", "all"]), default=EvalParams.arm,
              show_default=True, help=EvalParams.help("arm"))
@background_option()
@click.pass_context
def evaluate_cmd(ctx, iteration, sets, background, **kw):
    """Run an iteration's model on held-out sets.

    Example: sei evaluate --iteration 1 --set demo/test --set svamp/test --limit 100

    Through vLLM: vllm serve BASE --enable-lora --lora-modules it1=ADAPTER_DIR, then
    sei evaluate --iteration 1 --backend openai --base-url URL/v1 --served-model BASE
    --served-adapter it1 (without --served-adapter the adapter is loaded at run time
    through /v1/load_lora_adapter; a server that serves neither refuses the run)
    """
    from pipeline.loop import resolve
    from pipeline.stages.evaluate import default_sets

    store = _store(ctx)
    kw["iteration"] = resolve.latest(store) if iteration is None else iteration
    from pipeline.problems.sets import norm

    kw["sets"] = [norm(s) for s in sets] or default_sets(store)
    kw = {k: v for k, v in kw.items() if v is not None}
    _warn_unmatchable(_run_and_echo(ctx, "evaluate", kw, background))


def _warn_unmatchable(out: dict | None) -> None:
    """Beside the figures, on stderr: per set, the problems no answer can get right."""
    from pipeline.stages.evaluate import unmatchable_line

    for set_, n in ((out or {}).get("unmatchable_references") or {}).items():
        if n:
            click.echo(f"warning: {unmatchable_line(set_, n)}", err=True)


@cli.command("iterate")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Named values over the stage defaults [default: demo, or the config's].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="An experiment file (TOML or YAML): a preset, loop values and one section "
                   "per stage ([synthesize], [select], [train], ...).")
@click.option("--train", "train_sets", multiple=True,
              help="A train set, dataset:split (repeat). " + LoopParams.help("train_sets") +
              f" [default: {','.join(LoopParams.default('train_sets'))}]")
@click.option("--eval", "eval_sets", multiple=True,
              help="An evaluation set, dataset:split (repeat) [default: every test split].")
@click.option("--set", "eval_sets_old", multiple=True, hidden=True)
@params_options(LoopParams, "iterations", "mode", "review", "limit_train", "eval_limit",
                "arms", "max_new_tokens", "seed", "backend", "base_url", "served_model",
                default_none=True)
@click.option("--budget", default=None, type=int, help=SynthParams.help("budget"))
@click.option("--top", default=None, type=float, help=SelectParams.help("top"))
@click.option("--epochs", default=None, type=int, help=TrainParams.help("epochs"))
@click.option("--param", "-p", "params", multiple=True,
              help="Any stage parameter, STAGE.NAME=VALUE (repeat), e.g. -p train.lr=1e-4; "
                   "VALUE is read as JSON, else as text.")
@click.option("--dry-run", is_flag=True,
              help="Print the resolved plan (every parameter, the estimated generations, "
                   "tokens and time) and run nothing.")
@json_option
@background_option()
@click.pass_context
def iterate_cmd(ctx, preset, config_path, train_sets, eval_sets, eval_sets_old, budget, top,
                epochs, params, dry_run, as_json, background, **loop):
    """The SEI loop end to end over any train and evaluation sets (resumable).

    Each iteration: extract on every train set, analyse and cluster their bad cases
    together, synthesize, select (one-shot and the baseline arms), train and evaluate
    each arm on the same sets.

    Example: sei iterate --iterations 2 --train gsm8k:train --train math:train
    --eval gsm8k:test --eval math500:test --limit-train 64 --eval-limit 100

    \b
    sei iterate --preset paper --dry-run      # the paper's protocol, priced
    sei iterate --config exp.toml             # an experiment file
    sei iterate --backend openai --base-url http://127.0.0.1:8000/v1   # generation on vLLM
    """
    from pipeline.loop.costs import plan
    from pipeline.loop.presets import load_config, resolve

    over: dict = {k: v for k, v in loop.items() if v is not None}
    if loop.get("limit_train") == 0:
        over["limit_train"] = None
    if train_sets:
        over["train_sets"] = list(train_sets)
    if eval_sets or eval_sets_old:
        over["eval_sets"] = list(eval_sets) + list(eval_sets_old)
    for section, key, v in (("synthesize", "budget", budget), ("select", "top", top),
                            ("train", "epochs", epochs)):
        if v is not None:
            over.setdefault(section, {})[key] = v
    try:
        for spec in params:
            section, key, v = _stage_param(spec)
            over.setdefault(section, {})[key] = v
        cfg = load_config(config_path) if config_path else {}
        p = resolve(preset, cfg, over)
        if dry_run:  # reads the store if there is one, creates nothing
            st = _store(ctx)
            out = plan(st if st.path.exists() else None, p)
            click.echo(json.dumps(out, default=str, indent=1) if as_json else
                       _format_plan(out))
            return
    except ValueError as e:
        _fail(e)
    _store(ctx, create=True)  # the loop imports its sets into a new store if need be
    _warn_unmatchable(_run_and_echo(ctx, "iterate", p.resolved(), background, indent=1))


def _stage_param(spec: str) -> tuple[str, str, object]:
    """'train.lr=1e-4' as ('train', 'lr', 0.0001)."""
    from pipeline.loop.iterate import SECTIONS

    key, eq, raw = spec.partition("=")
    section, dot, name = key.partition(".")
    if not eq or not dot or section not in SECTIONS:
        raise ValueError(f"--param {spec!r}: expected STAGE.NAME=VALUE with STAGE one of "
                         f"{sorted(SECTIONS)}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return section, name, value


def _format_plan(out: dict) -> str:
    """The dry-run plan as text: parameters, then the estimate."""
    from pipeline.loop.presets import flat

    lines = [f"preset {out['config']['preset']}; deviations: "
             + (", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in out["deviations"].items())
                or "none")]
    lines += [f"  {k} = {v!r}" for k, v in flat(out["config"]).items()]
    lines += [f"runs: {k} with {v}" for k, v in out["pieces"].items()]
    if out["refused"]:
        lines.append(f"warning: a run would be refused: {out['refused']}")
    e = out["estimate"]
    lines.append("estimate per iteration (assumptions below):")
    for k, v in e["per_iteration"].items():
        lines.append(f"  {k:28} {v}")
    lines.append("total:")
    for k, v in e["total"].items():
        lines.append(f"  {k:28} {v}")
    lines += [f"  assumes: {a}" for a in e["assumptions"]]
    return "\n".join(lines)


@cli.command("iterations")
@json_option
@click.pass_context
def iterations_cmd(ctx, as_json):
    """Per iteration: each arm's accuracy against the base model, with its interval.

    Also the preset in force and its deviations, the train sets' extraction runs, SEI
    against random, and micro/macro averages (in-domain, out-of-domain).

    Example: sei iterations --json
    """
    from pipeline.loop.views import iteration_table

    rows = iteration_table(_store(ctx))
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=1))
        return
    for it in rows:
        click.echo(f"iteration {it['iteration']}: adapter {it.get('adapter') or '-'} "
                   f"candidates kept {it.get('n_kept', 0)}, selected {it.get('n_selected', 0)}")
        if it.get("preset"):
            dev = it.get("deviations") or {}
            click.echo(f"  preset {it['preset']}; deviations: " + (", ".join(
                f"{k} {a!r} -> {b!r}" for k, (a, b) in dev.items()) or "none"))
        for e in it.get("extractions", []):
            acc = "-" if e["accuracy"] is None else f"{e['accuracy']:.1%}"
            click.echo(f"  train {e['dataset']}/{e['split']}: run {e['run_id']} "
                       f"acc {acc} (n={e['n_done']})")
        if it["iteration"] == 0:
            for s, e in it["eval"].items():
                click.echo(f"    {s:18} acc {e['accuracy']:.1%} (n={e['n']})")
        for label, cmp_ in ([(f"{a} vs base", c) for a, c in it.get("arms", {}).items()]
                            + [(f"sei vs {a}", c) for a, c in it.get("sei_vs", {}).items()]):
            click.echo(f"  {label}:")
            for s, d in cmp_["sets"].items():
                click.echo(f"    {s:18} {d['acc_a']:.1%} -> {d['acc_b']:.1%} "
                           f"{_change(d)} McNemar p={d['mcnemar_p']:.3f} (n={d['n']})")
            for g, avg in cmp_["averages"].items():
                for how in ("micro", "macro"):
                    click.echo(f"    {how + ' ' + g.replace('_', '-'):18} "
                               f"{avg[how]['acc_a']:.1%} -> {avg[how]['acc_b']:.1%} "
                               f"{_change(avg[how])}")


def _change(d: dict) -> str:
    """A paired change with its 95% interval, in points."""
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] pts"


@export.command("candidates")
@out_option
@format_option
@click.option("--all", "everything", is_flag=True, help="Every status, not only kept.")
@click.pass_context
def export_candidates(ctx, out, fmt, everything):
    """Kept candidates as chat `messages` with their provenance.

    Example: sei export candidates -o candidates.jsonl
    """
    from pipeline.loop.views import candidate_records, dump_records

    rows = candidate_records(_store(ctx), None if everything else "kept")
    write_export(out, lambda f: dump_records(rows, f, fmt))
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
    from pipeline.loop.views import dump_records
    from pipeline.stages.select import training_set

    store = _store(ctx)
    if selection_id is None:
        sels = [s for s in store.selections() if s["method"] == "oneshot"
                and s["status"] == "finished"]
        if not sels:
            _fail(ValueError("no finished one-shot selection; run `sei select` first"))
        selection_id = sels[-1]["selection_id"]
    rows = training_set(store, [selection_id])
    write_export(out, lambda f: dump_records(rows, f, fmt))
    click.echo(f"{len(rows)} selected candidates -> {out}")
