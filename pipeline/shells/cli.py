"""`sei`: the command line of SEI Studio."""

from __future__ import annotations

import json
import os
import sys

import click

from pipeline.core.options import params_options
from pipeline.loop.registry import ExtractParams, QuickstartParams
from pipeline.problems import demo
from pipeline.shells.cli_base import (
    TqdmProgress,
    _run_or_submit,
    _store,
    background_option,
    cli,
    export,
    format_option,
    json_option,
    limit_option,
    out_option,
    seed_option,
    write_export,
)
from pipeline.stages.cluster import ClusterParams

# -- data ----------------------------------------------------------------------------------


@cli.group()
def data():
    """Import and list problem sets.

    Example: sei data list
    """


@data.command("import")
@click.argument("path", type=click.Path())
@click.option("--format", "fmt", required=True,
              type=click.Choice(["gsm8k", "math", "math500", "svamp", "college_math",
                                 "gaokao2023en", "sat_math", "generic"]),
              help="The file's layout: one of the shared benchmarks' by name, or generic "
                   "with --map.")
@click.option("--dataset", required=True, help="Name to store it under, e.g. gsm8k.")
@click.option("--split", required=True, help="train, test, dev ...")
@click.option("--map", "mapping", default="",
              help="generic: question=FIELD[+FIELD..],answer=FIELD[,solution=..,pid=FIELD,"
                   "options=FIELD,meta=FIELD+..]; text fields are joined with a space, a list "
                   "of options (or options=FIELD, also a text 'A) .. B) ..') is appended as "
                   "(A) .. lines, meta fields are kept with the problem")
@click.option("--exclude", "exclude", multiple=True, metavar="DATASET:SPLIT",
              help="Leave out problems already in this imported split (same problem text, "
                   "ignoring spacing and case); repeatable. The count left out is reported.")
@click.pass_context
def data_import(ctx, path, fmt, dataset, split, mapping, exclude):
    """Import a JSONL file (all or nothing; skipped rows are reported).

    Every reference answer is judged against itself written as a model would ("The
    answer is X."); any that cannot match are reported by file:line (and imported).

    Example: sei data import test.jsonl --format gsm8k --dataset gsm8k --split test

    MATH as a train pool (MATH test minus the MATH-500 test problems, 4,500 left):

    \b
      sei data import math500/test.jsonl --format math500 --dataset math500 --split test
      sei data import math/test.jsonl --format math --dataset math --split train \\
          --exclude math500:test
    """
    from pipeline.problems.data import DataFileError, import_file, parse_exclude, parse_mapping

    try:
        rep = import_file(_store(ctx, create=True), path, fmt, dataset, split,
                          parse_mapping(mapping) if mapping else None,
                          exclude=[parse_exclude(e) for e in exclude])
    except (DataFileError, ValueError) as e:
        raise click.ClickException(f"{e}\n(nothing was imported)") from e
    click.echo(f"{path}: {rep.summary()} in {dataset}/{split}")
    for kind, msgs in (("same content already present", rep.same), ("id clash", rep.clash),
                       ("references that cannot match themselves", rep.unmatched)):
        for m in msgs[:10]:
            click.echo(f"  {m}")
        if len(msgs) > 10:
            click.echo(f"  ... and {len(msgs) - 10} more ({kind})")


@data.command("demo")
@click.option("--n", "n_train", default=demo.N_TRAIN, show_default=True, help="Train problems.")
@click.option("--n-test", default=demo.N_TEST, show_default=True, help="Test problems.")
@seed_option
@click.pass_context
def data_demo(ctx, n_train, n_test, seed):
    """Generate the embedded demo dataset (GSM8K-style, exact answers).

    Example: sei data demo --n 400 --n-test 200
    """
    from pipeline.problems.data import import_demo

    added = import_demo(_store(ctx, create=True), n_train, n_test, seed)
    click.echo(f"demo: {added.get('train', 0)} train and {added.get('test', 0)} test "
               "problems added")


@data.command("list")
@click.pass_context
def data_list(ctx):
    """Datasets and splits in the store.

    Example: sei data list
    """
    for r in _store(ctx).datasets():
        click.echo(f"{r['dataset']:12} {r['split']:8} {r['n']:6}  {r['source_file']}")


@cli.group()
def model():
    """The target model.

    Example: sei model prepare
    """


@model.command("prepare")
def model_prepare():
    """Dequantize the bundled SmolLM2 GGUF once and cache it as safetensors.

    Example: sei model prepare
    """
    from pipeline.models.target import ModelError, ensure_default_model

    try:
        click.echo(f"embedded default ready at {ensure_default_model()}")
    except ModelError as e:
        raise click.ClickException(str(e)) from e


@cli.command()
@params_options(QuickstartParams, "limit", "max_new_tokens", "batch_size")
@background_option()
@click.pass_context
def quickstart(ctx, background, **params):
    """Demo data -> extraction -> analysis -> clustering on the embedded default.

    Example: sei quickstart --limit 96
    """
    from pipeline.models.instructor import InstructorError, failure_line

    _store(ctx, create=True)  # quickstart makes the store it needs
    try:  # its analysis asks a configured instructor
        out = _run_or_submit(ctx, "quickstart", params, background)
    except InstructorError as e:
        raise click.ClickException(failure_line(e, ctx.command_path)) from None
    if out:
        click.echo(json.dumps(out, default=str))


# -- extraction ------------------------------------------------------------------------------


@cli.command()
@params_options(ExtractParams)
@background_option(help="Run as a background job.")
@click.pass_context
def extract(ctx, background, **kw):
    """Run the target model, judge answers, keep the wrong ones (resumable).

    Example: sei extract --dataset demo --split train --limit 64
    """
    from pipeline.models.target import ModelError

    params = {k: v for k, v in kw.items() if v is not None}
    try:
        out = _run_or_submit(ctx, "extract", params, background)
    except (ModelError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if out:
        r = next(r for r in _store(ctx).runs() if r["run_id"] == out["run_id"])
        acc = f"{r['accuracy']:.1%}" if r["accuracy"] is not None else "-"
        click.echo(f"run {r['run_id']}: {r['n_done']}/{r['n_items']} done, accuracy {acc}, "
                   f"{r['n_done'] - r['n_correct'] - r['n_errors']} bad cases, "
                   f"{r['n_errors']} errors")


@cli.command()
@json_option
@click.pass_context
def runs(ctx, as_json):
    """Runs with their accuracy.

    Example: sei runs --json
    """
    rows = _store(ctx).runs()
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=1))
        return
    click.echo(f"{'run':18} {'model':24} {'data':14} {'done':>9} {'acc':>6} {'err':>4}  status")
    for r in rows:
        acc = f"{r['accuracy']:.1%}" if r["accuracy"] is not None else "-"
        click.echo(f"{r['run_id']:18} {(r['model_id'] or '')[:24]:24} "
                   f"{r['dataset'] + '/' + r['split']:14} {r['n_done']:>4}/{r['n_items']:<4} "
                   f"{acc:>6} {r['n_errors']:>4}  {r['status']}")


@cli.command("bad-cases")
@click.option("--run", "run_id", default=None)
@limit_option(20)
@click.option("--full", is_flag=True, help="Show whole outputs.")
@click.pass_context
def bad_cases(ctx, run_id, limit, full):
    """List bad cases (wrong answers).

    Example: sei bad-cases --limit 5
    """
    for b in _store(ctx).bad_cases(run_id, limit):
        out = b["output"] if full else (b["output"] or "").replace("\n", " ")[:100]
        click.echo(f"#{b['case_id']} {b['dataset']}/{b['pid']}: expected {b['answer']}, "
                   f"got {b['pred']}\n   Q: {b['question'][:100]}\n   A: {out}")


# -- error analysis -------------------------------------------------------------------------


@cli.command()
@click.option("--run", "run_ids", multiple=True,
              help="A train-split extraction run whose bad cases are analysed (repeat: "
                   "analysed together). Default: the base model's train-split runs; an "
                   "evaluation run or a test split is refused.")
@limit_option()
@click.option("--instructor-model", default=None, envvar="SEI_INSTRUCTOR_MODEL",
              help="Instructor model (env SEI_INSTRUCTOR_MODEL); none: the offline analyzer.")
@click.option("--base-url", default=None, envvar="OPENAI_BASE_URL")
@click.option("--offline", is_flag=True, help="Use the offline analyzer even if configured.")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="Seconds per instructor request (env SEI_INSTRUCTOR_TIMEOUT_S, 60).")
@click.option("--case-time-limit", "case_time_s", type=float, default=None,
              help="Seconds per bad case, all retries included (env SEI_INSTRUCTOR_CASE_S, 300).")
@click.option("--breaker-after", type=int, default=None,
              help="Stop after this many bad cases fail in a row (default 5).")
@background_option()
@click.pass_context
def analyze_cmd(ctx, run_ids, limit, instructor_model, base_url, offline, background, **limits):
    """Write error keyphrases for bad cases (resumable; a rerun retries failed cases).

    Exits non-zero, saying how many, when some bad cases failed.

    Example: sei analyze --offline --limit 50
    """
    from pipeline.models.instructor import InstructorError, failure_line

    params = {"run_ids": list(run_ids) or None, "limit": limit}
    if instructor_model and not offline:
        params["instructor"] = dict({"model": instructor_model},
                                    **{k: v for k, v in limits.items() if v is not None})
        if base_url and base_url != os.environ.get("OPENAI_BASE_URL"):
            params["instructor"]["base_url"] = base_url  # else read from the environment
    elif offline:
        params["instructor"] = "offline"
    try:
        out = _run_or_submit(ctx, "analyze", params, background)
    except InstructorError as e:
        raise click.ClickException(failure_line(e, ctx.command_path)) from None
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if out:
        a = next(a for a in _store(ctx).analyses() if a["analysis_id"] == out["analysis_id"])
        click.echo(f"analysis {a['analysis_id']} ({a['analyzer']}): {a['n_cases']} bad cases, "
                   f"{a['n_keyphrases']} keyphrases")


@cli.command("cluster")
@params_options(ClusterParams)
@click.option("--analysis", "analysis_id", default=None)
@background_option()
@click.pass_context
def cluster_cmd(ctx, background, analysis_id, **kw):
    """Embed keyphrases, map with UMAP, cluster into error types.

    Example: sei cluster --min-cluster-size 5
    """
    from pipeline.models.instructor import InstructorError, failure_line

    params = dict(kw, analysis_id=analysis_id)
    try:
        out = _run_or_submit(ctx, "cluster", params, background)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    except InstructorError as e:  # --method llm: one line with the reason, not a traceback
        raise click.ClickException(failure_line(e, ctx.command_path)) from None
    if out:
        d = out["diff"]
        click.echo(f"clustering {out['clustering_id']}: kept {len(d['kept'])}, "
                   f"new {len(d['new'])}, gone {len(d['gone'])}, split {len(d['split'])}, "
                   f"merged {len(d['merged'])}")
        if d.get("held"):
            h = d["held"]
            click.echo(f"held: it covers {h['n_cases']} bad cases, the current {h['current']} "
                       f"covers {h['current_cases']}; `sei types use {out['clustering_id']}` "
                       "makes it current")


@cli.group()
def types():
    """Error types: list, show and curate (every edit is logged and undoable).

    Example: sei types list
    """


def _tax(ctx):
    from pipeline.analysis import taxonomy

    return taxonomy.current(_store(ctx))


def _edit(ctx, op: str, *args) -> int:
    """Make the taxonomy edit `op` (rename, merge, undo ...) as author 'cli'; an edit the
    taxonomy refuses ends the command with its reason."""
    from pipeline.analysis import taxonomy

    try:
        return getattr(taxonomy, op)(_store(ctx), *args, author="cli")
    except ValueError as e:
        raise click.ClickException(str(e)) from e


@types.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include excluded types.")
@click.pass_context
def types_list(ctx, show_all):
    """The current error types with their share of bad cases.

    Example: sei types list --all
    """
    tax = _tax(ctx)
    if tax.clustering is None:
        raise click.ClickException("no clustering yet: run `sei cluster`")
    from pipeline.analysis.taxonomy import noise

    nz = noise(tax)
    click.echo(f"clustering {tax.clustering['clustering_id']}: {len(tax.points)} keyphrases, "
               f"{tax.n_cases} bad cases, {len(nz['kp_ids'])} unassigned keyphrases in "
               f"{len(nz['case_ids'])} bad cases ({len(nz['only_noise'])} reached by no type;"
               " `sei types noise` lists them)")
    for t in tax.visible_types():
        if t.excluded and not show_all:
            continue
        flag = " [excluded]" if t.excluded else (" [edited]" if t.edited else "")
        click.echo(f"{t.type_id:>4} {t.share:6.1%} {len(t.members):>5} kp  {t.title}{flag}")


@types.command("show")
@click.argument("type_id", type=int)
@click.pass_context
def types_show(ctx, type_id):
    """One error type: title, description and example keyphrases.

    Example: sei types show 3
    """
    tax = _tax(ctx)
    t = tax.types.get(type_id)
    if t is None:
        raise click.ClickException(f"no type {type_id}")
    by = tax.by_kp()
    click.echo(f"{t.type_id}: {t.title}  ({t.share:.1%} of bad cases, {len(t.members)} keyphrases,"
               f" titled by {t.titled_by})")
    if t.merged_into:
        click.echo(f"merged into {t.merged_into}")
    if t.description:
        click.echo(t.description)
    for k in t.examples:
        click.echo(f"  - [{k}] {by[k]['text']}   "
                   f"(case {by[k]['case_id']}: {by[k]['question'][:60]})")


@types.command("rename")
@click.argument("type_id", type=int)
@click.argument("title")
@click.pass_context
def types_rename(ctx, type_id, title):
    """Give an error type a new title (an undoable edit).

    Example: sei types rename 3 "Unit conversion slips"
    """
    click.echo(f"edit {_edit(ctx, 'rename', type_id, title)}")


@types.command("describe")
@click.argument("type_id", type=int)
@click.argument("description")
@click.pass_context
def types_describe(ctx, type_id, description):
    """Give an error type a new description (an undoable edit).

    Example: sei types describe 3 "Converts minutes to hours the wrong way"
    """
    click.echo(f"edit {_edit(ctx, 'describe', type_id, description)}")


@types.command("merge")
@click.argument("type_ids", type=int, nargs=-1, required=True)
@click.option("--into", type=int, default=None)
@click.option("--title", default=None)
@click.pass_context
def types_merge(ctx, type_ids, into, title):
    """Merge error types into one (the largest, or --into; an undoable edit).

    Example: sei types merge 3 5 --into 3 --title "Percentages"
    """
    edit_id = _edit(ctx, "merge", list(type_ids), into, title)
    click.echo(f"edit {edit_id}")


@types.command("split")
@click.argument("kp_ids", type=int, nargs=-1, required=True)
@click.option("--title", required=True)
@click.pass_context
def types_split(ctx, kp_ids, title):
    """Make the given keyphrases (ids) a new error type.

    Example: sei types split 12 15 40 --title "Off by one"
    """
    click.echo(f"new type {_edit(ctx, 'split', list(kp_ids), title)}")


@types.command("move")
@click.argument("type_id", type=int)
@click.argument("kp_ids", type=int, nargs=-1, required=True)
@click.pass_context
def types_move(ctx, type_id, kp_ids):
    """Move keyphrases (ids) into an existing error type (an undoable edit).

    Example: sei types move 3 12 15
    """
    click.echo(f"edit {_edit(ctx, 'move', list(kp_ids), type_id)}")


@types.command("exclude")
@click.argument("type_id", type=int, required=False)
@click.option("--kp", "kp_ids", type=int, multiple=True, help="Exclude members instead.")
@click.option("--include", is_flag=True, help="Reverse a previous exclusion.")
@click.pass_context
def types_exclude(ctx, type_id, kp_ids, include):
    """Exclude an error type, or with --kp some of its members (undoable).

    Example: sei types exclude 3   |   sei types exclude --kp 12 --include
    """
    edit_id = _edit(ctx, "exclude", type_id, list(kp_ids), include)
    click.echo(f"edit {edit_id}")


@types.command("noise")
@click.pass_context
def types_noise(ctx):
    """Keyphrases left as noise (in no type), with their bad cases.

    Example: sei types noise
    """
    from pipeline.analysis.taxonomy import noise

    tax = _tax(ctx)
    nz, by = noise(tax), tax.by_kp()
    only = set(nz["only_noise"])
    click.echo(f"{len(nz['kp_ids'])} unassigned keyphrases in {len(nz['case_ids'])} bad cases; "
               f"{len(only)} of those cases are reached by no type (synthesis cannot use them)")
    for k in nz["kp_ids"]:
        c = by[k]["case_id"]
        click.echo(f"  [{k}] {by[k]['text']}   (case {c}{', noise only' if c in only else ''})")


@types.command("assign-noise")
@click.option("--min-similarity", type=float, default=None,
              help="Leave as noise the keyphrases less similar (cosine) to every type.")
@click.pass_context
def types_assign_noise(ctx, min_similarity):
    """Assign each noise keyphrase to its nearest type by embedding (one undoable edit).

    Example: sei types assign-noise --min-similarity 0.3
    """
    from pipeline.analysis import taxonomy

    try:
        out = taxonomy.assign_noise(_store(ctx), min_similarity, author="cli")
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"assigned {out['assigned']} keyphrases to {len(out['types'])} types, left "
               f"{out['left']} as noise" + (f" (edit {out['edit_id']}; `sei types undo` takes "
                                             "it back)" if out["edit_id"] else ""))


@types.command("undo")
@click.argument("edit_id", type=int, required=False)
@click.pass_context
def types_undo(ctx, edit_id):
    """Undo the latest edit in force, or the given one.

    Example: sei types undo 7
    """
    click.echo(f"edit {_edit(ctx, 'undo', edit_id)}")


@types.command("redo")
@click.pass_context
def types_redo(ctx):
    """Take back the latest undo.

    Example: sei types redo
    """
    click.echo(f"edit {_edit(ctx, 'redo')}")


@types.command("clusterings")
@click.pass_context
def types_clusterings(ctx):
    """Every clustering, the current one marked with *.

    Held ones (made from fewer bad cases than the current one covers, waiting for `sei types use`)
    are flagged.

    Example: sei types clusterings
    """
    from pipeline.analysis import taxonomy

    s = _store(ctx)
    cur = taxonomy.current_clustering(s)
    for c in s.clusterings():
        held = (c["diff"] or {}).get("held")
        mark = "*" if cur and c["clustering_id"] == cur["clustering_id"] else " "
        note = f"  [held: {held['n_cases']} of {held['current_cases']} cases]" if held else ""
        click.echo(f"{mark} {c['clustering_id']}  {c['created_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{c['method']:8} {c['n_points']:>6} kp {c['n_clusters']:>4} clusters{note}")


@types.command("agreement")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--json", "as_json", is_flag=True, help="The comparison as JSON.")
@click.pass_context
def types_agreement(ctx, a, b, as_json):
    """Two clusterings of the same keyphrases side by side, with their agreement.

    Types, sizes, noise, adjusted Rand index and NMI. B defaults to the current clustering.

    Example: sei types agreement cl-20260101-120000-abc123 cl-20260101-130000-def456
    """
    from pipeline.analysis import taxonomy
    from pipeline.stages.cluster import agreement

    s = _store(ctx)
    if b is None:
        cur = taxonomy.current_clustering(s)
        if cur is None:
            raise click.ClickException("no clustering yet: run `sei cluster`")
        b = cur["clustering_id"]
    try:
        out = agreement(s, a, b)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for r in out["rows"]:
        sizes = ", ".join(map(str, r["sizes"][:12])) + (" ..." if len(r["sizes"]) > 12 else "")
        click.echo(f"{r['clustering']}  {r['method']:8} {r['types']:>3} types  "
                   f"noise {r['noise']:>4} of {r['keyphrases']}  sizes {sizes}")
    line = (f"agreement on {out['shared']} shared keyphrases: ARI {out['ari']:.3f}, "
            f"NMI {out['nmi']:.3f}")
    if "ari_in_types" in out:
        line += (f"; on the {out['in_types']} both put in a type: ARI "
                 f"{out['ari_in_types']:.3f}, NMI {out['nmi_in_types']:.3f}")
    click.echo(line)


@types.command("use")
@click.argument("clustering_id")
@click.pass_context
def types_use(ctx, clustering_id):
    """Make a clustering current (an edit: `sei types undo` switches back).

    Example: sei types use cl-20260101-120000-abc123
    """
    click.echo(f"edit {_edit(ctx, 'use_clustering', clustering_id)}")


@types.command("log")
@click.pass_context
def types_log(ctx):
    """The edit log, oldest first, one sentence per edit (undone ones marked).

    Example: sei types log
    """
    from pipeline.analysis import taxonomy

    for e in reversed(taxonomy.edit_log(_store(ctx))):
        flag = "" if e["in force"] else "  [undone]"
        by = f"  ({e['by']})" if e["by"] else ""
        click.echo(f"{e['edit']:>4} {e['at']:%Y-%m-%d %H:%M:%S} {e['what']}"
                   f"{by}{flag}")


@types.command("retitle")
@click.option("--all", "everything", is_flag=True, help="Also types renamed by a person.")
@click.option("--type", "type_ids", type=int, multiple=True,
              help="Only this type (repeatable), even if a person renamed it.")
@click.pass_context
def types_retitle(ctx, everything, type_ids):
    """Recompute titles and descriptions without re-clustering.

    Example: sei types retitle --all; sei types retitle --type 3
    """
    from pipeline.stages.cluster import retitle

    try:
        n = retitle(_store(ctx), only_unedited=not everything, type_ids=list(type_ids) or None)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"retitled {n} types")


@cli.command("review")
@click.option("--run", "run_id", default=None, help="Only this extraction run.")
@click.option("--reviewed", is_flag=True, help="Also list what was decided, with the decision.")
@click.option("--confirm", "confirm_id", metavar="ID", default=None,
              help="Keep the judge's verdict of ID (it leaves the queue).")
@click.option("--override", "override_id", metavar="ID", default=None,
              help="Set the verdict of ID; with --correct or --wrong.")
@click.option("--correct/--wrong", "correct", default=None,
              help="The verdict --override sets.")
@click.option("--undo", is_flag=True, help="Undo the latest review decision in force.")
@click.option("--full", is_flag=True, help="Show whole outputs.")
@json_option
@click.pass_context
def review_cmd(ctx, run_id, reviewed, confirm_id, override_id, correct, undo, full, as_json):
    """Doubtful verdicts with their reasons; confirm or override them (undoable edits).

    Doubtful: no final answer, an output cut at the token limit, a comparison that timed
    out or failed, math-verify and the string comparison disagreeing, several different
    final answers. A decision is an edit in the log (`sei types log`), undone by --undo
    or `sei types undo EDIT`; an override moves the case into or out of the bad cases
    that analysis reads and the dev set's pools.

    Example: sei review --override 3f9a1c2d --correct
    """
    from pipeline.analysis import review

    s = _store(ctx)
    acts = [x for x in (confirm_id, override_id, undo or None) if x]
    if len(acts) > 1:
        raise click.ClickException("one of --confirm, --override, --undo at a time")
    if override_id and correct is None:
        raise click.ClickException("--override needs --correct or --wrong")
    if correct is not None and not override_id:
        raise click.ClickException("--correct/--wrong go with --override ID")
    try:
        if confirm_id:
            edit = review.confirm(s, confirm_id, author="cli")
        elif override_id:
            edit = review.override(s, override_id, correct, author="cli")
        elif undo:
            edit = review.undo(s, author="cli")
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if acts:
        from pipeline.analysis import taxonomy

        by_id = {e["edit_id"]: e for e in s.edits()}
        click.echo(f"edit {edit}: {taxonomy.describe_edit(by_id[edit], {}, by_id)}")
        return
    _review_list(review.queue(s, run_id, reviewed), full, as_json)


def _review_list(items: list[dict], full: bool, as_json: bool) -> None:
    if as_json:
        keep = ("id", "key", "case_id", "dataset", "split", "pid", "stored", "verdict",
                "decision", "edit_id", "answer", "pred", "reasons", "question", "output")
        click.echo(json.dumps([{k: r[k] for k in keep} for r in items], default=str, indent=1))
        return
    if not items:
        click.echo("no doubtful verdict waiting for review")
        return
    word = {True: "correct", False: "wrong"}
    for r in items:
        case = f"  bad case #{r['case_id']}" if r["case_id"] is not None else ""
        state = (f"  {r['decision']} as {word[r['verdict']]} (edit {r['edit_id']})"
                 if r["decision"] else "")
        out = r["output"] if full else (r["output"] or "").replace("\n", " ")[-100:]
        click.echo(f"{r['id']}  {r['dataset']}/{r['split']}/{r['pid']}  judged "
                   f"{word[r['stored']]}{case}{state}\n"
                   + "".join(f"   - {x['text']}\n" for x in r["reasons"])
                   + f"   expected {r['answer']}, got {r['pred']}\n   Q: {r['question'][:100]}\n"
                   + f"   A: {'...' if not full and len(r['output'] or '') > 100 else ''}{out}")
    pending = sum(1 for r in items if r["decision"] is None)
    click.echo(f"{pending} waiting; `sei review --confirm ID` or "
               "`sei review --override ID --correct|--wrong`")


@cli.command("search")
@click.argument("text")
@click.option("--limit", type=int, default=10, show_default=True, help="Hits per kind.")
@click.option("--words-only", is_flag=True, help="Skip the search by meaning (no model).")
@json_option
@click.pass_context
def search_cmd(ctx, text, limit, words_only, as_json):
    """Find keyphrases and bad cases by words and by meaning, with their error types.

    Example: sei search "percent of the wrong base"
    """
    from dataclasses import asdict

    from pipeline.analysis.search import search

    hits = search(_store(ctx), text, limit=limit, meaning=not words_only)
    if as_json:
        click.echo(json.dumps(asdict(hits), default=str, ensure_ascii=False))
        return
    click.echo(f"keyphrases containing “{text}”: {len(hits.keyphrases)}")
    for k in hits.keyphrases:
        click.echo(f"  [{k['kp_id']}] {k['text']}   (case {k['case_id']}; type {k['type']})")
    click.echo(f"bad cases containing “{text}”: {len(hits.cases)}")
    for c in hits.cases:
        click.echo(f"  case {c['case_id']} (in {c['found_in']}): {(c['question'] or '')[:80]}")
    if not words_only:
        click.echo("keyphrases nearest in meaning:")
        for k in hits.similar:
            click.echo(f"  {k['score']:.3f} [{k['kp_id']}] {k['text']}   (case {k['case_id']}; "
                       f"type {k['type']})")


@export.command("types")
@format_option
@out_option
@click.pass_context
def export_types(ctx, fmt, out):
    """Current error types with their members, as JSONL or Parquet.

    Each type carries its keyphrases, and each bad case's question, model output and keyphrases of
    that type.

    Example: sei export types --format parquet -o types.parquet
    """
    import pandas as pd

    from pipeline.analysis import taxonomy

    s = _store(ctx)
    tax = taxonomy.current(s)
    if tax.clustering is None:
        raise click.ClickException("no clustering yet: run `sei cluster`")
    if fmt == "jsonl":
        text = taxonomy.export_jsonl(s, tax)
        write_export(out, lambda f: f.write(text.encode()))
        n = text.count("\n")
    else:
        rows = taxonomy.export_rows(s, tax)
        write_export(out, lambda f: pd.DataFrame(rows).to_parquet(f))
        n = len(rows)
    click.echo(f"{n} types -> {out}")


@cli.command("serve-local")
@click.option("--port", default=8088, show_default=True)
@click.option("--ctx", "n_ctx", default=2048, show_default=True)
def serve_local(port, n_ctx):
    """Serve the bundled SmolLM2 GGUF on an OpenAI-compatible endpoint (llama.cpp).

    Example: sei serve-local --port 8088
    """
    from pipeline.models.serve import serve_forever

    serve_forever(port, n_ctx)


# -- jobs -------------------------------------------------------------------------------------


@cli.group("jobs")
def jobs_group():
    """Background jobs: list, show, cancel, logs, resume, submit, wait.

    Example: sei jobs list
    """


def _fmt_job(j: dict) -> str:
    from pipeline.loop.jobs import job_row

    return job_row(j)


def _job_or_fail(ctx, job_id: int) -> dict:
    j = _store(ctx).job(job_id)
    if j is None:
        raise click.ClickException(f"no job {job_id} in {_store(ctx).path}")
    return j


@jobs_group.command("list")
@click.pass_context
def jobs_list(ctx):
    """Every job with its status, progress and last message.

    Example: sei jobs list
    """
    from pipeline.loop import jobs

    jobs.reap(_store(ctx))
    for j in _store(ctx).jobs():
        click.echo(_fmt_job(j))


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_show(ctx, job_id):
    """One job's full record as JSON.

    Example: sei jobs show 4
    """
    from pipeline.loop import jobs

    jobs.reap(_store(ctx))
    j = _job_or_fail(ctx, job_id)
    click.echo(json.dumps(dict(j, display_status=jobs.display_status(j)), default=str, indent=1))


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
@click.option("--wait", default=10.0, show_default=True, help="Seconds before forcing.")
@click.pass_context
def jobs_cancel(ctx, job_id, wait):
    """Ask a job to stop at its next safe point; force it after --wait seconds.

    Example: sei jobs cancel 4 --wait 30
    """
    from pipeline.loop import jobs

    _job_or_fail(ctx, job_id)
    j = jobs.cancel(_store(ctx), job_id, wait=wait)
    click.echo(_fmt_job(j))


@jobs_group.command("resume")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_resume(ctx, job_id):
    """Run a failed or cancelled job again; its stage resumes where it stopped.

    Example: sei jobs resume 4
    """
    from pipeline.loop import jobs

    try:
        jobs.resume(_store(ctx), job_id)
    except (KeyError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"resumed job {job_id}")


@jobs_group.command("logs")
@click.argument("job_id", type=int)
@click.option("--tail", default=50, show_default=True)
@click.pass_context
def jobs_logs(ctx, job_id, tail):
    """The last lines of a job's log.

    Example: sei jobs logs 4 --tail 100
    """
    from pipeline.loop.jobs import log_tail

    text = log_tail(_job_or_fail(ctx, job_id)["log_file"], tail)
    if text is None:
        raise click.ClickException(f"no log for job {job_id}")
    click.echo(text)


@jobs_group.command("submit")
@click.argument("kind")
@click.argument("params", nargs=-1)
@click.pass_context
def jobs_submit(ctx, kind, params):
    """Submit KIND with key=value parameters (values parsed as JSON when they can be).

    Example: sei jobs submit extract dataset=demo split=train limit=64
    """
    from pipeline.loop import jobs

    p = {}
    for kv in params:
        k, _, v = kv.partition("=")
        try:
            p[k] = json.loads(v)
        except json.JSONDecodeError:
            p[k] = v
    try:
        jid = jobs.submit(_store(ctx, create=True), kind, p)  # e.g. a quickstart: makes it
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"submitted job {jid}")


@jobs_group.command("wait")
@click.argument("job_id", type=int)
@click.option("--timeout", default=3600.0, show_default=True,
              help="Seconds to wait; then exit 2 with the job still running.")
@click.pass_context
def jobs_wait(ctx, job_id, timeout):
    """Block until a job ends, with a progress bar.

    Exit 0 if it succeeded, 1 if it failed or was cancelled, 2 if it is still running after
    --timeout.

    Example: sei jobs wait 4 --timeout 600
    """
    from pipeline.loop import jobs

    _job_or_fail(ctx, job_id)
    bar = TqdmProgress()

    def show(j):
        if j["total"]:
            bar(j["done"] or 0, j["total"], j["step"] or j["kind"], j["message"] or "")

    j = jobs.wait(_store(ctx), job_id, timeout, on_poll=show, raise_on_timeout=False)
    bar.close()
    click.echo(_fmt_job(j))
    if j["status"] in jobs.ACTIVE:
        click.echo(f"job {job_id} still {jobs.display_status(j)} after {timeout:g}s", err=True)
        sys.exit(2)
    if j["status"] != "succeeded":
        sys.exit(1)


# The SEI loop's commands live in their own module and register on `cli` and `export`.
from pipeline.shells import cli_loop  # noqa: E402,F401  (cli_loop imports cli_base, never cli)


def main():
    """The `sei` entry point: the CLI, with tracebacks scrubbed of secrets."""
    def scrubbed_traceback(kind, exc, tb):  # an unexpected error still shows no secret
        import traceback

        from pipeline.core.redact import scrub

        sys.stderr.write(scrub("".join(traceback.format_exception(kind, exc, tb))))
    sys.excepthook = scrubbed_traceback
    from pipeline.models.instructor import InstructorError, failure_line

    try:
        cli(prog_name="sei")
    except InstructorError as e:  # a command that left it uncaught: still one line
        click.echo(f"Error: {failure_line(e)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    # run the package's module, on which cli_loop registered its commands, not __main__
    from pipeline.shells.cli import main as package_main

    package_main()
