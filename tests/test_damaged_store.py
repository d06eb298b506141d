"""Issue 38, items 1, 4, 5 and 6, each through the real command: a store cut short is
refused for reads and writes and left as it is; a file that is not a DuckDB store is
refused before DuckDB opens it (and DuckDB never fetches an extension); an export that
cannot be written is one line and leaves no partial file; `jobs submit` on a full disk
stores the job or nothing, and a job that dies there keeps its cause.

In-process (click's CliRunner) for speed, with one real `sei` process per kind of failure.
The full disk is a real tmpfs (mounted as root; skipped where that is not allowed)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store_edges import digest, one_line_error, tree  # the same checks

from pipeline.core.config import ROOT
from pipeline.loop import jobs
from pipeline.shells.cli import cli
from pipeline.storage import store as store_mod
from pipeline.storage.store import Store

BLOCKS_START = 3 * 4096  # DuckDB: three 4 KiB headers, then the blocks


# -- helpers ----------------------------------------------------------------------------------


def sei(*args, db: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`sei --db DB ARGS` as a real process."""
    return subprocess.run([sys.executable, "-m", "pipeline.shells.cli", "--db", str(db)]
                          + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def invoke(monkeypatch, db: Path, *args):
    """`sei --db DB ARGS` in this process (the CLI sets SEI_DB: monkeypatch restores it)."""
    monkeypatch.setenv("SEI_DB", str(db))
    return CliRunner().invoke(cli, ["--db", str(db)] + [str(a) for a in args])


def one_line(result) -> str:
    """An in-process command that failed in one clean line: a non-zero exit through click
    (not an exception that escaped: that is a traceback for a user), one line of output."""
    assert isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def header_blocks(db: Path) -> tuple[int, int]:
    """(blocks the active database header counts, whole blocks in the file)."""
    import struct

    head = db.read_bytes()[:BLOCKS_START]
    _, _, _, count, alloc = max(struct.unpack_from("<5Q", head, off + 8) for off in (4096, 8192))
    return count, (db.stat().st_size - BLOCKS_START) // alloc


def _clustering(s: Store) -> None:
    """A run with three bad cases, their keyphrases and one error type made of them: what
    `sei export types` exports (made through the store, no model needed)."""
    s.upsert_run({"run_id": "r", "kind": "extract", "dataset": "demo", "split": "train",
                  "n_items": 3})
    pids = [p["pid"] for p in s.problems("demo", "train", 3)]
    cases = [s.ensure_bad_case("r", "demo", "train", pid) for pid in pids]
    s.upsert_analysis("a", "offline", None, {})
    for c in cases:
        s.record_keyphrases("a", c, "offline", [{"text": f"drops a carry {c}"}])
    kps = s.keyphrases("a")
    tid = s.next_type_ids(1)[0]
    s.save_clustering(
        {"clustering_id": "c1", "analysis_id": "a", "method": "test", "params": {}, "seed": 0,
         "embed_model": "none", "n_points": len(kps), "n_clusters": 1, "timings": {},
         "diff": {}, "code_version": "test"},
        [{"kp_id": k["kp_id"], "x": 0.0, "y": 0.0, "cluster": 0, "type_id": tid, "prob": 1.0}
         for k in kps],
        [{"type_id": tid, "title": "Carry errors"}])


@pytest.fixture(scope="module")
def real_db(tmp_path_factory) -> tuple[Path, str]:
    """A real store: demo problems, 40 kept candidates with a finished random selection of
    them, and an error type. Its path and the selection's id."""
    from pipeline.problems import demo
    from pipeline.problems.data import import_demo
    from pipeline.stages.select import SelectParams, select

    db = tmp_path_factory.mktemp("real") / "sei.duckdb"
    s = Store(db)
    import_demo(s, 12, 6)
    s.create_iteration(1, "scratch", None, {"types": [], "edit_ids": [], "n_cases": 0}, None, {})
    s.upsert_synth_batch("t", 1, "offline", {}, {})
    s.add_candidates([{"slot": f"t/{i}", "batch_id": "t", "iteration": 1, "type_id": 0,
                       "question": p["question"], "solution": p["solution"],
                       "answer": p["answer"], "status": "kept", "synthesizer": "offline"}
                      for i, p in enumerate(demo.generate(40, seed=4))])
    selection = select(s, SelectParams(method="random", top=40))["selection_id"]
    _clustering(s)
    return db, selection


def copy_store(real_db, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "sei.duckdb"
    shutil.copy(real_db[0], db)
    return db


@pytest.fixture
def tiny_disk(tmp_path):
    """mount(size): a real tmpfs of that size (unmounted after the test), its folder."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = []

    def mount(size: int) -> Path:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the disk of `folder` up to `leave` bytes free (0: until it refuses a byte)."""
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as f:
        free = shutil.disk_usage(folder).free
        if free > leave:
            f.write(b"\0" * (free - leave))
        for chunk in ((65536, 4096, 1) if leave == 0 else ()):
            try:
                while f.write(b"\0" * chunk):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


# -- 1. a store cut short ---------------------------------------------------------------------


def _refused_as_damaged(line: str, db: Path) -> None:
    assert str(db) in line and "damaged" in line, line
    assert "restore it from a copy" in line and "--db" in line, line


def test_a_store_cut_to_half_is_refused_for_reads_and_writes_and_left_as_it_is(
        real_db, tmp_path, monkeypatch, scripted):
    db = copy_store(real_db, tmp_path / "cut")
    os.truncate(db, db.stat().st_size // 2)  # a copy that stopped half way
    before, files = digest(db), tree(db.parent)
    data = tmp_path / "new.jsonl"
    data.write_text(json.dumps({"question": "How many?", "answer": "Two.\n#### 2"}) + "\n")
    out = tmp_path / "out" / "types.jsonl"
    for cmd in (["data", "import", data, "--format", "gsm8k", "--dataset", "x", "--split", "t"],
                ["extract", "--limit", 2],
                ["jobs", "submit", "extract", "dataset=demo", "split=train", "limit=2"],
                ["types", "list"], ["export", "types", "-o", out], ["runs"], ["data", "list"],
                ["jobs", "list"], ["data", "demo", "--n", 2, "--n-test", 2]):
        _refused_as_damaged(one_line(invoke(monkeypatch, db, *cmd)), db)
    assert not out.exists()
    assert digest(db) == before  # nothing was written to it, not even by a failed write
    assert tree(db.parent) == files  # no write-ahead log, no jobs folder, no log
    # the same as a real process
    _refused_as_damaged(one_line_error(sei("jobs", "submit", "ticks", "n=2", db=db)), db)
    assert digest(db) == before and tree(db.parent) == files


def test_every_page_of_the_app_on_a_store_cut_to_half_says_so_in_one_line(
        real_db, tmp_path, monkeypatch):
    """The app started on a damaged store: every page says, in one line at its top, which
    file and what to do, and draws nothing else (no traceback, nothing written)."""
    from streamlit.testing.v1 import AppTest

    db = copy_store(real_db, tmp_path / "cut")
    os.truncate(db, db.stat().st_size // 2)
    before, files = digest(db), tree(db.parent)
    monkeypatch.setenv("SEI_DB", str(db))
    monkeypatch.setenv("SEI_SETTINGS", str(tmp_path / "settings.json"))
    monkeypatch.syspath_prepend(str(ROOT / "dashboard"))
    pages = [ROOT / "dashboard" / "Overview.py",
             *sorted((ROOT / "dashboard" / "pages").glob("*.py"))]
    for path in pages:
        at = AppTest.from_file(str(path), default_timeout=120).run()
        assert not at.exception, (path.name, [e.value for e in at.exception])
        [err] = [e.value for e in at.error]
        _refused_as_damaged(err, db)
    assert digest(db) == before and tree(db.parent) == files


def test_a_store_deleted_under_a_running_process_is_made_anew(tmp_path, monkeypatch):
    """The app keeps running while its store file is deleted (a user starting over): the
    next read finds a new empty store, as for a store never seen, not a DuckDB error
    saying the file does not exist (the process had it migrated once)."""
    from pipeline.problems.data import import_demo

    s = Store(tmp_path / "sei.duckdb")
    import_demo(s, 4, 2)
    assert s.count("problems") == 6
    for f in (s.path, Path(f"{s.path}.wal")):
        f.unlink(missing_ok=True)
    assert Store(s.path).runs() == [] and s.count("problems") == 0
    assert s.path.exists()


def test_a_store_cut_at_a_block_boundary_is_refused(real_db, tmp_path, monkeypatch):
    db = copy_store(real_db, tmp_path / "cut")
    count, blocks = header_blocks(db)
    assert blocks >= 4, (count, blocks)
    os.truncate(db, BLOCKS_START + 2 * 262144)  # whole blocks, but not all of them
    before, files = digest(db), tree(db.parent)
    data = tmp_path / "new.jsonl"
    data.write_text(json.dumps({"question": "How many?", "answer": "Two.\n#### 2"}) + "\n")
    for cmd in (["jobs", "submit", "ticks", "n=1"],
                ["data", "import", data, "--format", "gsm8k", "--dataset", "x", "--split", "t"],
                ["data", "list"],
                ["data", "demo", "--n", 2, "--n-test", 2]):
        _refused_as_damaged(one_line(invoke(monkeypatch, db, *cmd)), db)
    assert digest(db) == before and tree(db.parent) == files


def test_a_whole_store_shorter_than_its_header_count_opens(tmp_path, monkeypatch):
    """DuckDB trims free blocks off the end of the file after writing the header, so a
    whole store is often shorter than its header's block count: it must open."""
    db = tmp_path / "s" / "sei.duckdb"
    s = Store(db)
    for i in range(60):
        s.insert_problems([{"dataset": "d", "split": "t", "pid": f"{i}-{k}",
                            "question": f"q{i}" * (1000 + 97 * k), "answer": "1"}
                           for k in range(6)])
        with s.write() as con:
            con.execute("DELETE FROM problems WHERE dataset = 'd'")
        count, blocks = header_blocks(db)
        if count > blocks:
            break
    assert count > blocks, (count, blocks)
    store_mod._verdicts.clear()  # as a new process finds it
    r = invoke(monkeypatch, db, "data", "list")
    assert r.exit_code == 0, r.output
    r = invoke(monkeypatch, db, "data", "demo", "--n", 2, "--n-test", 2)
    assert r.exit_code == 0 and "added" in r.output, r.output
    r = sei("data", "list", db=db)
    assert r.returncode == 0 and "demo" in r.stdout, r.stderr


def test_the_verdict_is_kept_until_the_file_changes(real_db, tmp_path, monkeypatch):
    db = copy_store(real_db, tmp_path / "s")
    checks = []
    real = Store._header_verdict

    def counted(self, fd, size):
        checks.append(size)
        return real(self, fd, size)

    monkeypatch.setattr(Store, "_header_verdict", counted)
    s = Store(db)
    s.datasets()
    s.datasets()
    assert len(checks) == 1, checks  # one check for both opens
    os.utime(db, ns=(time.time_ns(), time.time_ns() + 10**9))  # changed by someone else
    s.datasets()
    assert len(checks) == 2, checks
    s.insert_problems([{"dataset": "d", "split": "t", "pid": "1", "question": "q",
                        "answer": "1"}])  # this process's own write: no check after it
    s.datasets()
    assert len(checks) == 2, checks


# -- 4. --db at a file that is not a DuckDB store -----------------------------------------------


def _foreign_files(folder: Path) -> dict[str, Path]:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": "How many?", "answer": "2"}]
    files = {"jsonl": folder / "problems.jsonl", "json": folder / "problems.json",
             "csv": folder / "problems.csv", "parquet": folder / "problems.parquet",
             "sqlite": folder / "store.sqlite", "empty": folder / "empty.duckdb",
             "text": folder / "sei.duckdb"}
    files["jsonl"].write_text(json.dumps(rows[0]) + "\n")
    files["json"].write_text(json.dumps(rows))
    files["csv"].write_text("question,answer\nHow many?,2\n")
    pd.DataFrame(rows).to_parquet(files["parquet"])
    con = sqlite3.connect(files["sqlite"])
    con.execute("CREATE TABLE problems (question TEXT, answer TEXT)")
    con.commit()
    con.close()
    files["empty"].write_bytes(b"")
    files["text"].write_text("not a store\n")
    return files


def test_a_file_that_is_not_a_store_is_refused_before_duckdb_opens_it(tmp_path, monkeypatch):
    import duckdb

    files = _foreign_files(tmp_path / "f")
    before, listing = {k: digest(p) for k, p in files.items()}, tree(tmp_path / "f")
    opened = []
    connect = duckdb.connect

    def spy(database=":memory:", *args, **kw):
        opened.append(str(database))
        return connect(database, *args, **kw)

    monkeypatch.setattr(duckdb, "connect", spy)
    for kind, path in files.items():
        for cmd in (["data", "list"], ["runs"], ["types", "list"], ["jobs", "list"],
                    ["data", "demo", "--n", 2, "--n-test", 2],
                    ["jobs", "submit", "ticks", "n=1"]):
            line = one_line(invoke(monkeypatch, path, *cmd))
            assert str(path) in line and "not a SEI store" in line, (kind, cmd, line)
            assert "--db" in line, line
    assert {k: digest(p) for k, p in files.items()} == before
    assert tree(tmp_path / "f") == listing  # no .wal, no jobs folder
    assert not [p for p in opened if Path(p).parent == tmp_path / "f"], opened
    # a real process, on the SQLite file that made DuckDB try to download an extension
    line = one_line_error(sei("data", "list", db=files["sqlite"]))
    assert "a SQLite database" in line and "extension" not in line.lower(), line
    assert digest(files["sqlite"]) == before["sqlite"]


def test_duckdb_never_installs_or_loads_an_extension(tmp_path):
    import duckdb

    files = _foreign_files(tmp_path / "f")
    s = Store(tmp_path / "sei.duckdb")
    s.migrate()
    with s.read() as con:
        assert con.execute("SELECT current_setting('autoinstall_known_extensions'), "
                           "current_setting('autoload_known_extensions')").fetchall() \
            == [(False, False)]
        with pytest.raises(duckdb.Error) as e:  # the sqlite extension: not fetched
            con.execute(f"SELECT * FROM sqlite_scan('{files['sqlite']}', 'problems')")
    assert "Could not establish connection" not in str(e.value), e.value
    assert "install" in str(e.value).lower(), e.value


# -- 5. an export that cannot be written ---------------------------------------------------------


def _exports(real_db, out: Path) -> list[list]:
    return [["export", "types", "-o", out], ["export", "candidates", "-o", out],
            ["export", "selection", "--selection", real_db[1], "-o", out],
            ["export", "candidates", "--format", "parquet", "-o", out]]


def test_an_export_to_dev_full_or_proc_is_one_line(real_db, tmp_path, monkeypatch):
    db = copy_store(real_db, tmp_path / "s")
    full = Path("/dev/full")
    assert full.exists() and stat.S_ISCHR(full.stat().st_mode)
    for cmd in _exports(real_db, full):
        line = one_line(invoke(monkeypatch, db, *cmd, "--force"))
        assert line == "Error: cannot write /dev/full: No space left on device", line
    assert stat.S_ISCHR(full.stat().st_mode)  # written in place, never renamed over
    proc = Path(f"/proc/sei-export-{os.getpid()}.jsonl")
    for cmd in _exports(real_db, proc):
        line = one_line(invoke(monkeypatch, db, *cmd))
        assert line.startswith(f"Error: cannot write {proc}: "), line
        assert not proc.exists()
    # a real process
    line = one_line_error(sei("export", "candidates", "-o", full, "--force", db=db))
    assert line == "Error: cannot write /dev/full: No space left on device", line


def test_an_export_onto_a_full_disk_leaves_no_partial_file(real_db, tmp_path, monkeypatch,
                                                            tiny_disk):
    db = copy_store(real_db, tmp_path / "s")
    mnt = tiny_disk(1 << 20)
    old = mnt / "old.jsonl"
    old.write_text("kept\n")
    fill(mnt)
    listing = tree(mnt)
    for cmd in _exports(real_db, mnt / "new.jsonl"):
        line = one_line(invoke(monkeypatch, db, *cmd))
        assert line == f"Error: cannot write {mnt / 'new.jsonl'}: No space left on device " \
                       "(nothing was written there)", line
        assert tree(mnt) == listing  # no partial file, no temporary file left beside it
    for cmd in _exports(real_db, old):
        line = one_line(invoke(monkeypatch, db, *cmd, "--force"))
        assert f"cannot write {old}: No space left on device ({old} is as it was)" in line
        assert old.read_text() == "kept\n" and tree(mnt) == listing
    # with room again, the same export writes the whole file
    (mnt / "filler").unlink()
    r = invoke(monkeypatch, db, "export", "candidates", "-o", mnt / "new.jsonl")
    assert r.exit_code == 0, r.output
    assert len((mnt / "new.jsonl").read_text().splitlines()) == 40


# -- 6. jobs on a full disk ----------------------------------------------------------------------


def test_jobs_submit_on_a_full_disk_stores_nothing_and_says_so(real_db, tmp_path, monkeypatch,
                                                               tiny_disk):
    mnt = tiny_disk(real_db[0].stat().st_size + (4 << 20))
    db = copy_store(real_db, mnt)
    fill(mnt, leave=64 * 1024)  # less than a job sets aside to record its end
    before = {id(p) for p in jobs._children}
    line = one_line(invoke(monkeypatch, db, "jobs", "submit", "ticks", "n=3", "seconds=0"))
    assert "nothing was stored" in line and "No space left on device" in line, line
    started = [p for p in jobs._children if id(p) not in before]
    assert all(p.poll() is not None for p in started), started  # its process was stopped
    # a real process
    line = one_line_error(sei("jobs", "submit", "ticks", "n=3", "seconds=0", db=db))
    assert "nothing was stored" in line and "No space left on device" in line, line
    (mnt / "filler").unlink()
    assert Store(db).jobs() == []
    assert tree(mnt) == ["sei.duckdb"] + (["sei.duckdb.wal"] if (mnt / "sei.duckdb.wal")
                                          .exists() else [])


def test_a_job_that_dies_on_a_full_disk_keeps_its_cause(real_db, tmp_path, tiny_disk):
    mnt = tiny_disk(real_db[0].stat().st_size + (8 << 20))
    db = copy_store(real_db, mnt)
    s = Store(db)
    jid = jobs.submit(s, "ticks", {"n": 400, "seconds": 0.05, "tag": "full"})
    deadline = time.monotonic() + 120
    while (s.job(jid)["done"] or 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (s.job(jid)["done"] or 0) >= 2, s.job(jid)
    fill(mnt)  # the disk fills while it runs
    j = jobs.wait(s, jid, timeout=120)
    assert j["status"] == "failed", j
    assert "No space left on device" in j["error"], j  # in its row
    log = Path(j["log_file"]).read_text()
    assert f"job {jid} failed" in log and "No space left on device" in log, log  # and its log
    assert not Path(j["log_file"]).with_suffix(".reserve").exists()
