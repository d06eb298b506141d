"""What every `sei` command shares: the `cli` and `export` groups, the store they open,
the shared options, and running a stage in the foreground or as a job. The commands live
in cli.py and cli_loop.py, which both import this (and never each other)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipeline.storage.store import Store


def _store(ctx, create: bool = False) -> Store:
    """The store the command runs on (from --db or SEI_DB). A command reading a store that
    does not exist says so; one that makes a store (create=True) makes it."""
    store = ctx.find_root().obj["store"]
    if create:
        store.create = True
    return store


# -- options several commands share: one definition each, so a flag reads the same
# everywhere; what differs between commands (default, help) is an argument.

seed_option = click.option("--seed", default=0, show_default=True)
json_option = click.option("--json", "as_json", is_flag=True)


def _owned(store: Store) -> list[Path]:
    """What the store owns: its file and WAL, and the folders of its jobs, adapters and
    models. An export never writes there."""
    from pipeline.core import config

    db = store.path.resolve()
    return [db, Path(f"{db}.wal"), config.jobs_dir(store.path).resolve(),
            config.adapters_dir(store.path).resolve(), config.models_dir().resolve(),
            db.parent / "models"]


def _export_path(ctx, param, value: str | None) -> str | None:
    """--out of an export, checked before anything is written: never onto the store or
    what it owns, never over an existing file without --force; a missing folder is made."""
    if value is None:
        return value
    out = Path(value)
    target = out.resolve()
    store = _store(ctx)
    db, wal, *folders = _owned(store)
    for owned in (db, wal, *folders):
        if target == owned or owned in target.parents or \
                (out.exists() and owned.exists() and os.path.samefile(out, owned)):
            what = ("the store itself" if owned == db else "the store's write-ahead log"
                    if owned == wal else f"inside {owned}, which the store owns")
            raise click.ClickException(f"{value} is {what} ({store.path}): refusing to "
                                       "write there; export somewhere else")
    if out.exists() and not ctx.meta.get("sei_export_force"):
        raise click.ClickException(f"{value} exists; pass --force to overwrite it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.ClickException(f"cannot make the folder {out.parent} for {value}: "
                                   f"{e.strerror}") from None
    return value


def _force_flag(ctx, param, value: bool) -> bool:
    ctx.meta["sei_export_force"] = value  # read by --out's check (this option is eager)
    return value


def out_option(fn):
    """--out/-o of an export (checked: see _export_path), with its --force."""
    fn = click.option("--out", "-o", "out", type=click.Path(dir_okay=False), required=True,
                      callback=_export_path,
                      help="The file to write (its folder is made if missing).")(fn)
    return click.option("--force", is_flag=True, is_eager=True, expose_value=False,
                        callback=_force_flag, help="Overwrite --out if it exists.")(fn)
def write_export(out: str, write) -> None:
    """Write an export: `write(f)` fills a binary file. It goes to a temporary file beside
    `out`, reaches the disk, and only then is renamed onto `out`: a write that fails (a full
    disk, /dev/full, a folder of /proc) is one line and leaves nothing at `out` (a file
    that was there, under --force, stays as it was). A target that is not a regular file
    (/dev/stdout, a pipe, a device) is written in place: a rename would replace it."""
    import secrets
    import stat

    target = Path(os.path.realpath(out))  # a link: the file it points to
    try:
        old = target.stat()
    except OSError:
        old = None
    tmp = None
    special = old is not None and not stat.S_ISREG(old.st_mode)
    try:
        if special:
            with open(target, "wb") as f:
                write(f)
            return
        tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk can refuse the data only now
            if old is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        kept = "" if special else " (nothing was written there)" if old is None else \
            f" ({out} is as it was)"
        raise click.ClickException(f"cannot write {out}: {e.strerror or e}{kept}") from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass


format_option = click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]),
                             default="jsonl")


def background_option(help: str | None = None):
    """--background: hand the stage to the job runner instead of running it here."""
    return click.option("--background", is_flag=True, help=help)


def iteration_option(help: str | None = None):
    """--iteration N of the SEI loop (the command says what none means)."""
    return click.option("--iteration", default=None, type=int, help=help)


def limit_option(default: int | None = None, help: str | None = None):
    """--limit: how many items; a number default is shown in --help, None means all."""
    if default is None:
        return click.option("--limit", type=int, default=None, help=help)
    return click.option("--limit", default=default, show_default=True, help=help)


class TqdmProgress:
    """A progress callback drawing a tqdm bar per step."""

    def __init__(self):
        self.bars = {}

    def __call__(self, done, total, step, message):
        from tqdm import tqdm

        bar = self.bars.get(step)
        if bar is None:
            bar = self.bars[step] = tqdm(total=total, desc=step, unit="item", file=sys.stderr)
        bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()

    def close(self):
        """Close every bar (the progress of a finished or failed stage)."""
        for b in self.bars.values():
            b.close()


def _run_or_submit(ctx, kind: str, params: dict, background: bool):
    """Run a stage here with a progress bar, or hand it to the job runner."""
    from pipeline.loop import jobs
    from pipeline.loop import registry as stages

    store = _store(ctx)
    # before any lock or file: a read-only or missing store is one line, not a traceback
    store.check_writable()
    if background:
        jid = jobs.submit(store, kind, params)
        click.echo(f"submitted job {jid} ({kind}); follow it with `sei jobs show {jid}`")
        return None
    from pipeline.storage.store_process import StoreProcess

    if stages.is_heavy(kind, params):  # as a job does: DuckDB heap trims stay out of here
        store = StoreProcess(store.path)
    bar = TqdmProgress()
    try:
        return stages.run_stage(store, kind, params, bar)
    finally:
        bar.close()
        if isinstance(store, StoreProcess):
            store.close()


class _Cli(click.Group):
    """Errors end as one clean line, never with a secret in it: a store that is busy or
    read-only, and every message, scrubbed of the API key and URL passwords."""

    def invoke(self, ctx):
        from pipeline.core.redact import scrub
        from pipeline.storage.store import StoreBusy, StoreReadOnly, StoreUnusable, StoreWriteFailed

        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.message = scrub(e.message)
            raise
        except (StoreBusy, StoreReadOnly, StoreUnusable, StoreWriteFailed) as e:
            raise click.ClickException(scrub(str(e))) from None
        except PermissionError as e:  # a file or folder this user cannot write
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(scrub(f"{where}{e.strerror or e} (read-only for this "
                                             "user? use a copy, or --db/SEI_DB elsewhere)")) \
                from None


@click.group(cls=_Cli)
@click.option("--db", type=click.Path(dir_okay=False), envvar="SEI_DB",
              help="DuckDB store (default data/sei.duckdb; env SEI_DB).")
@click.pass_context
def cli(ctx, db):
    """SEI Studio: Self-Error-Instruct on math reasoning.

    Example: sei --db data/sei.duckdb runs
    """
    if db:
        os.environ["SEI_DB"] = str(Path(db).resolve())  # job subprocesses inherit it
    ctx.obj = {"store": Store(db, create=False)}  # a read never makes a store


@cli.group()
def export():
    """Export curated data.

    Example: sei export types -o types.jsonl
    """
