"""The one module that talks SQL at run time: every query on the DuckDB store. The schema
is built by the named steps in pipeline/storage/migrations.py, which `Store.migrate` applies.

Concurrency pattern (documented in the README, tested in tests/test_concurrency.py):
DuckDB lets one process hold a file open for writing, and while it does, no other
process may open the file at all. So nobody holds a connection: every read and every
write opens the file, does its work in one transaction and closes it again. A process
that meets the lock of another backs off with jitter and retries for up to
`LOCK_TIMEOUT` seconds; lock errors never reach a caller unless that deadline passes.
Writes are whole transactions, so a killed process leaves whole items or nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pipeline.core import config
from pipeline.core.redact import scrub
from pipeline.storage import migrations

LOCK_TIMEOUT = float(os.environ.get("SEI_LOCK_TIMEOUT", "60"))

# Messages DuckDB raises when another process (or another connection of this process
# with another configuration) holds the file. They are transient by construction here.
_TRANSIENT = (
    "Could not set lock",
    "Conflicting lock",
    "different configuration",
    "database is locked",
)

SCHEMA_VERSION = len(migrations.MIGRATIONS)  # a current store has had every migration


class StoreBusy(RuntimeError):
    """The store stayed locked by another process for longer than LOCK_TIMEOUT."""


class StoreReadOnly(RuntimeError):
    """The store cannot be written by this user; reading it still works."""


class StoreUnusable(RuntimeError):
    """The store file cannot be used: missing (for a read), not a DuckDB file, not a SEI
    store, or corrupt. The message names the file and what to do, in one line."""


class StoreWriteFailed(RuntimeError):
    """A write could not be saved (its COMMIT failed: a full disk, an I/O error); nothing
    of it was kept. The message carries the real cause, in one line."""


class StoreCloseFailed(StoreWriteFailed):
    """A write was saved (its COMMIT succeeded, so the write-ahead log holds it), but
    closing the store then failed (its checkpoint: a full disk). The write stands."""


# Messages DuckDB raises on a file that is not a database, or a damaged one.
_BROKEN = (
    "not a valid DuckDB database file",
    "Corrupt database file",
    "Could not read enough bytes",
    "does not match stored checksum",
)
BROKEN_RETRY_S = 5.0  # a short read seen once under heavy load; a truncated file stays short


def _transient(exc: Exception) -> bool:
    return any(m in str(exc) for m in _TRANSIENT)


def _broken(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(m in str(exc) for m in _BROKEN)


def _cause(exc: BaseException) -> str:
    """A DuckDB error's first line without its class prefix ('IO Error: ...')."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for prefix in ("IO Error: ", "TransactionContext Error: ", "Failed to commit: "):
        line = line.removeprefix(prefix)
    return line


_migrated: set[str] = set()
_lock = threading.Lock()
_write_lock = threading.RLock()
_local = threading.local()
_held: dict[str, Any] = {}  # run locks this process holds (hold_run), by lock path
_closed: str | None = None  # why no store may be opened in this process (close_to_this_process)

# DuckDB never installs or loads an extension at run time (a SQLite file at --db made it
# try a download); every connection of this process has the same configuration.
DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}

# Whether a store file is whole, checked before DuckDB opens it (Store._check_whole), by
# its path and (size, mtime, ctime, inode): a verdict holds until the file changes.
_verdicts: dict[str, tuple[tuple, str | None]] = {}
# Connections this process holds on each store file. DuckDB locks the file with POSIX
# record locks, which the kernel drops when this process closes ANY descriptor of the
# file: the check reads the file only while no connection of this process is open on it
# (under _fd_lock, which every connect and close of a store takes).
_in_use: dict[str, int] = {}
_fd_lock = threading.Lock()

_HEADER = 4096  # DuckDB: a main header, then two database headers, then the blocks
_BLOCKS_START = 3 * _HEADER


def _looks_like(head: bytes) -> tuple[str, bool]:
    """What a file that is not a DuckDB database seems to be, by its first bytes, and
    whether it is a data file `sei data import` reads."""
    if head.startswith(b"SQLite format 3\0"):
        return "a SQLite database", False
    if head.startswith(b"PAR1"):
        return "a Parquet file", True
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file", False
    if head.startswith(b"PK\x03\x04"):
        return "a zip file", False
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] in (b"{", b"["):
        return "JSON or JSON Lines", True
    try:
        first = head.decode().splitlines()[0] if head else ""
    except UnicodeDecodeError:
        return "binary data of another kind", False
    if "," in first or "\t" in first:
        return "a CSV file", True
    return "a text file", False


def _sig(st: os.stat_result) -> tuple:
    """What tells one state of a file from another: a verdict on it holds while this does."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _ident(name: str) -> str:
    """A quoted SQL identifier, inside a single-quoted string."""
    return '"' + name.replace('"', '""').replace("'", "''") + '"'


_ASK = object()  # (a header's verdict: only DuckDB can tell)


def _busy(path: Path) -> duckdb.Error:
    """A lock of another process on the file, as DuckDB itself reports one: retried."""
    return duckdb.IOException(f'Could not set lock on file "{path}": another process is '
                              "writing it (checked before opening)")


def close_to_this_process(why: str) -> None:
    """From now on every store this process tries to open raises, saying why: a training
    rank other than 0, whose store rank 0 alone opens (DuckDB admits one writing process)."""
    global _closed
    _closed = why


@dataclass
class Store:
    path: Path

    def __init__(self, path: str | Path | None = None, create: bool = True):
        self.path = Path(path) if path else config.db_path()
        # create=False: a store that does not exist is an error, not a new empty store
        # (the CLI's reads; the commands that make a store set it back to True)
        self.create = create

    # -- connections -------------------------------------------------------------

    def _writable(self) -> bool:
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # a folder still to be made: its first existing ancestor
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return False
        return os.access(folder, os.W_OK)

    def _missing(self) -> StoreUnusable:
        return StoreUnusable(f"no store at {self.path} (nothing was created): point --db/SEI_DB "
                             "at an existing store, or make one with `sei data demo`, "
                             "`sei data import` or `sei quickstart`")

    def _unusable(self, exc: BaseException) -> StoreUnusable:
        return StoreUnusable(f"{self.path} is not a usable store ({_cause(exc)}): restore it "
                             "from a copy, or point --db/SEI_DB at another store")

    def check_writable(self) -> None:
        """Raise, in one line, unless this user can write the store, its folder and its jobs
        folder (run locks and logs); called before a command takes a lock or makes a file."""
        if not self.path.exists() and not self.create:
            raise self._missing()
        jobs = config.jobs_dir(self.path)
        while not jobs.exists() and jobs != jobs.parent:
            jobs = jobs.parent
        if not self._writable() or not os.access(jobs, os.W_OK):
            raise StoreReadOnly(f"{self.path} is read-only for this user (the file, its folder "
                                f"or {config.jobs_dir(self.path)}); reading works, but this "
                                "needs to write (use a copy, or --db/SEI_DB elsewhere)")

    def _damaged(self, why: str) -> str:
        return (f"{self.path} is damaged ({why}); nothing was read from or written to it: "
                "restore it from a copy, or point --db/SEI_DB at another store")

    def _key(self) -> str:
        return str(self.path.resolve())

    def _check_whole(self, key: str) -> bool:
        """Refuse, in one line, a file that is not a DuckDB database (by its header: a
        DuckDB file has "DUCK" at byte 8) before DuckDB touches it, and a DuckDB file cut
        short (a failed copy, a full disk), whose blocks in use reach past its end: DuckDB
        opens such a file, and writes into it, and fails on a read much later.

        Cheap: a stat and the 12 KiB of headers, under a shared lock on the file (no other
        process writes it meanwhile). The verdict is cached by (size, mtime, ctime, inode).
        True when only DuckDB can tell: the file is shorter than the block count of its
        header, as a whole file often is (DuckDB trims the free blocks at its end after
        writing the header); the caller then asks DuckDB (_check_blocks). Called under
        _fd_lock, with no connection of this process open on the file (closing this
        descriptor drops every lock this process holds on the file)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False  # none (a new store; a read's missing-store error) or unreadable
        try:
            sig = _sig(os.fstat(fd))
            cached = _verdicts.get(key)
            if cached is None or cached[0] != sig:
                head = os.pread(fd, 16, 0)
                if len(head) >= 12 and head[8:12] != b"DUCK":  # no lock needed: never a store
                    cached = _verdicts[key] = (sig, self._foreign(os.pread(fd, 4096, 0)))
                else:
                    try:
                        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    except OSError as e:
                        if e.errno in (errno.EAGAIN, errno.EACCES):
                            raise _busy(self.path) from None  # a writer: retried
                        return False  # no locks on this file system: DuckDB's own checks
                    sig = _sig(os.fstat(fd))
                    verdict = self._header_verdict(fd, sig[0])
                    if verdict is _ASK:
                        return True
                    cached = _verdicts[key] = (sig, verdict)
            if cached[1]:
                raise StoreUnusable(cached[1])
            return False
        finally:
            os.close(fd)

    def _foreign(self, head: bytes) -> str:
        """The refusal of a file that is not a DuckDB database."""
        if not head:
            return (f"{self.path} is an empty file, not a SEI store: point --db/SEI_DB at a "
                    "store, delete the file (a store is made where none is), or restore it "
                    "from a copy")
        what, data = _looks_like(head)
        hint = f"; `sei data import {self.path.name}` loads problems from it" if data else ""
        return (f"{self.path} is not a SEI store: it is {what}, not a DuckDB database, and "
                f"was left untouched{hint}; point --db/SEI_DB at a store, or restore it from "
                "a copy")

    def _header_verdict(self, fd: int, size: int):
        """What the headers of the file behind fd tell: None (whole), why not, or _ASK."""
        head = os.pread(fd, _BLOCKS_START, 0)
        if len(head) < 12 or head[8:12] != b"DUCK":
            return self._foreign(head)
        if size < _BLOCKS_START:
            return self._damaged(f"its headers are cut short: the file is {size} bytes")
        # each database header: checksum, iteration, meta block, free list, block count,
        # block size, ...; the one with the higher iteration is in force
        _, _, _, count, alloc = max(struct.unpack_from("<5Q", head, off + 8)
                                    for off in (_HEADER, 2 * _HEADER))
        alloc = alloc or 262144  # (older files leave it 0: the default)
        if alloc & (alloc - 1) == 0 and 4096 <= alloc <= 2 ** 30 and \
                count <= (size - _BLOCKS_START) // alloc:
            return None  # every block the header counts is in the file
        return _ASK

    def _check_blocks(self, con, key: str) -> None:
        """Refuse the file if a block in use lies past its end, by DuckDB's account on `con`
        (whose lock keeps the file as it is meanwhile): the blocks of every table's column
        segments and of the metadata, and the count of blocks in use."""
        verdict = None
        try:
            st = os.stat(self.path)
            tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                                 "WHERE database_name = current_database()").fetchall()
            parts = ["SELECT block_id AS b FROM pragma_metadata_info()"] + [
                f"SELECT greatest(block_id, list_max(additional_block_ids)) AS b FROM "
                f"pragma_storage_info('{_ident(sch)}.{_ident(tab)}')" for sch, tab in tables]
            top = con.execute(f"SELECT max(b) FROM ({' UNION ALL '.join(parts)})").fetchall()[0][0]
            alloc, used = con.execute("SELECT block_size, used_blocks "
                                      "FROM pragma_database_size()").fetchall()[0]
            need = max(used or 0, (top if top is not None else -1) + 1)
            if _BLOCKS_START + need * alloc > st.st_size:
                verdict = self._damaged(
                    f"cut short: the file ends at byte {st.st_size}, but the blocks it uses "
                    f"reach byte {_BLOCKS_START + need * alloc}; a failed copy or a full disk?")
        except duckdb.Error as e:
            if not _broken(e):
                raise
            verdict = self._damaged(_cause(e))
        _verdicts[key] = (_sig(st), verdict)
        if verdict:
            raise StoreUnusable(verdict)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection, once the file is known whole (unless this process holds one
        on it already: then it was, and no other process can have written it since)."""
        key = self._key()
        with _fd_lock:
            ask = not _in_use.get(key) and self._check_whole(key)
            if ask and not read_only:  # a file is opened for writing only once known whole
                try:
                    probe = duckdb.connect(str(self.path), read_only=True, config=DUCKDB_CONFIG)
                except duckdb.Error as e:
                    if _broken(e):
                        _verdicts.pop(key, None)
                        raise StoreUnusable(self._damaged(_cause(e))) from None
                    raise
                try:
                    self._check_blocks(probe, key)
                finally:
                    probe.close()
                ask = False
            con = duckdb.connect(str(self.path), read_only=read_only, config=DUCKDB_CONFIG)
            _in_use[key] = _in_use.get(key, 0) + 1
        if ask:  # a read: asked on its own connection
            try:
                self._check_blocks(con, key)
            except BaseException:
                self._close(con)
                raise
        return con

    def _close(self, con, saved: bool = False) -> None:
        """Close a connection of _connect. After a saved write the file is whole as this
        process left it: its new size and time are remembered so (no check on the next
        open)."""
        key = self._key()
        closed = False
        try:
            con.close()
            closed = True
        finally:
            with _fd_lock:
                n = _in_use.get(key, 1) - 1
                if n > 0:
                    _in_use[key] = n
                else:
                    _in_use.pop(key, None)
                if closed and saved:
                    try:
                        _verdicts[key] = (_sig(os.stat(self.path)), None)
                    except OSError:
                        pass

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if _closed:
            raise StoreUnusable(f"{self.path} is closed to this process: {_closed}")
        deadline = time.monotonic() + LOCK_TIMEOUT
        short = time.monotonic() + min(LOCK_TIMEOUT, BROKEN_RETRY_S)
        delay = 0.005
        if not read_only and not self._writable():
            raise StoreReadOnly(f"{self.path} is read-only for this user; reading works, but "
                                "this needs to write (use a copy, or --db/SEI_DB elsewhere)")
        while True:
            try:
                return self._connect(read_only)
            except duckdb.Error as e:  # (a damaged block comes as a plain duckdb.Error)
                if _broken(e):
                    # a short read, seen once under heavy load, is retried a moment;
                    # a truncated or damaged file stays so
                    if "Could not read enough bytes" not in str(e) or time.monotonic() > short:
                        raise self._unusable(e) from None
                elif not _transient(e) or time.monotonic() > deadline:
                    if _transient(e):
                        raise StoreBusy(f"{self.path} stayed locked for {LOCK_TIMEOUT:.0f}s "
                                        f"(a hung process? kill the pid named here): {e}") from e
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.6, 0.25)

    def migrate(self) -> int:
        """Apply the pending migrations. Idempotent; returns how many the store has had (its
        schema version). A store that is current is only opened read-only (so one the user
        cannot write still opens)."""
        if self.path.exists():
            con = self._open(read_only=True)
            try:
                current = len(self._applied(con))
            except duckdb.Error as e:
                if _broken(e):
                    raise self._unusable(e) from None
                raise
            finally:
                self._close(con)
            if current == SCHEMA_VERSION:
                return current
            if not self._writable():
                raise StoreReadOnly(f"{self.path} has schema v{current} and needs migrating to "
                                    f"v{SCHEMA_VERSION}, but it is read-only for this user")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only=False)
        saved = False
        try:
            self._applied(con)  # a store newer than this code is refused before any write
            migrations.migrate(con)
            n = len(self._applied(con))
            saved = True
            return n
        finally:
            self._close(con, saved)

    def _applied(self, con) -> list[str]:
        """The migrations this store has had; a store newer than this code, or a DuckDB
        file with tables but none of a store's, is an error."""
        try:
            done = migrations.applied(con)
        except migrations.NewerStore as e:
            raise RuntimeError(f"{self.path} {e}") from None
        if not done:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY 1 LIMIT 4").fetchall()]
            if tables:
                raise StoreUnusable(
                    f"{self.path} is a DuckDB file but not a SEI store (it has tables "
                    f"{', '.join(tables)}, and no migrations): point --db/SEI_DB at a store, "
                    "or at a new path to make one")
        return done

    def _ensure(self) -> None:
        if not self.create and not self.path.exists():
            raise self._missing()
        key = str(self.path.resolve())
        if key in _migrated:
            if self.path.exists():
                return
            _migrated.discard(key)  # deleted since: a new empty store, as one never seen
        with _lock:
            if key not in _migrated:
                self.migrate()
                _migrated.add(key)

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short read-only connection. Opening costs ~30 ms, so nested reads (and the
        store methods called inside a `with store.read():` block) share one."""
        con = getattr(_local, "con", None)
        if con is not None and _local.path == self.path:
            yield con
            return
        self._ensure()
        con = self._open(read_only=True)
        _local.con, _local.path = con, self.path
        try:
            yield con
        except duckdb.Error as e:
            if _broken(e) and "Could not read enough bytes" not in str(e):
                raise self._unusable(e) from None
            raise
        finally:
            _local.con = None
            self._close(con)

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short read-write connection inside one transaction: all or nothing.
        Writes of one process are serialised (a heartbeat thread and the worker
        would otherwise conflict on the same row)."""
        con = getattr(_local, "con", None)
        if con is not None and _local.path == self.path:
            if getattr(_local, "writing", False):
                yield con  # nested write: part of the outer transaction
                return
            raise RuntimeError("write inside a read block")
        self._ensure()
        with _write_lock:
            con = self._open(read_only=False)
            _local.con, _local.path, _local.writing = con, self.path, True
            failed = True
            try:
                con.execute("BEGIN")
                try:
                    yield con
                except BaseException:
                    _rollback(con)
                    raise
                try:
                    con.execute("COMMIT")
                except duckdb.Error as e:
                    _rollback(con)  # (a failed COMMIT has usually ended the transaction)
                    if _broken(e):
                        raise self._unusable(e) from None
                    raise StoreWriteFailed(f"could not save to {self.path}: {_cause(e)} "
                                           "(nothing of this write was kept)") from None
                failed = False
            except duckdb.Error as e:
                if _broken(e):
                    raise self._unusable(e) from None
                raise
            finally:
                _local.con, _local.writing = None, False
                try:
                    self._close(con, saved=not failed)
                except duckdb.Error as e:
                    if not failed:  # else the error on its way out is the one to tell
                        raise StoreCloseFailed(f"{self.path}: the write was saved, but closing "
                                               f"the store failed: {_cause(e)}") from None

    def _reading(self, fn):
        """fn(con) in a read block. A read that finds the file shorter than its header
        says ('Could not read enough bytes', seen once under heavy load while job
        processes wrote) is retried on a fresh connection: reads have no side effects."""
        nested = getattr(_local, "con", None) is not None and _local.path == self.path
        deadline = time.monotonic() + min(LOCK_TIMEOUT, BROKEN_RETRY_S)
        while True:
            try:
                with self.read() as con:
                    return fn(con)
            except duckdb.IOException as e:
                if nested or "Could not read enough bytes" not in str(e):
                    raise
                if time.monotonic() > deadline:  # it stays short: a truncated file
                    raise self._unusable(e) from None
                time.sleep(0.05 + 0.05 * random.random())

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """Query results as dicts (column name -> value)."""
        def run(con):
            cur = con.execute(sql, list(params))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]
        return self._reading(run)

    def df(self, sql: str, params: Sequence[Any] = ()):
        """Query results as a pandas DataFrame."""
        return self._reading(lambda con: con.execute(sql, list(params)).df())

    def one(self, sql: str, params: Sequence[Any] = ()):
        """The first row of a query as a dict, or None."""
        r = self.rows(sql, params)
        return r[0] if r else None

    def scalar(self, sql: str, params: Sequence[Any] = ()):
        """The first value of a query's first row, or None."""
        # the whole result: DuckDB 2 forbids a half-read one
        rows = self._reading(lambda con: con.execute(sql, list(params)).fetchall())
        return rows[0][0] if rows else None

    def version(self) -> int:
        """How many migrations the store has had: its schema version."""
        return self._reading(lambda con: len(self._applied(con)))

    # -- problems -----------------------------------------------------------------

    def insert_problems(self, rows: Iterable[dict], replace: bool = False) -> int:
        """Insert problems in one transaction. Returns how many rows are new."""
        rows = list(rows)
        cols = ["dataset", "split", "pid", "question", "solution", "answer", "meta",
                "source_file", "source_line"]
        vals = [[r.get(c) if c != "meta" else json.dumps(r.get("meta") or {}) for c in cols]
                for r in rows]
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self.write() as con:
            before = con.execute("SELECT count(*) FROM problems").fetchall()[0][0]
            if vals:
                # executemany is row by row in DuckDB; a registered frame is one statement.
                con.register("incoming", _frame({c: [v[i] for v in vals]
                                                 for i, c in enumerate(cols)}))
                con.execute(f"{verb} INTO problems ({', '.join(cols)}) "
                            f"SELECT {', '.join(cols)} FROM incoming")
            after = con.execute("SELECT count(*) FROM problems").fetchall()[0][0]
        return after - before

    def import_problems(self, rows: list[dict]) -> dict:
        """Insert the rows that are new, in one transaction. A row is skipped when its
        dataset/split already holds the same question and answer ('same'), or when its id
        already names a different problem there ('clash'); both come back with the row
        they met (file and line), earlier rows of the same batch included."""
        cols = ["dataset", "split", "pid", "question", "solution", "answer", "meta",
                "source_file", "source_line"]
        with self.write() as con:
            seen_pid: dict[tuple, dict] = {}
            seen_qa: dict[tuple, dict] = {}
            for d, s in {(r["dataset"], r["split"]) for r in rows}:
                for pid, q, a, f, n in con.execute(
                        "SELECT pid, question, answer, source_file, source_line FROM problems "
                        "WHERE dataset = ? AND split = ?", [d, s]).fetchall():
                    p = {"pid": pid, "source_file": f, "source_line": n}
                    seen_pid[(d, s, pid)] = p
                    seen_qa.setdefault((d, s, q, a), p)
            new, same, clash = [], [], []
            for r in rows:
                kq, kp = (r["dataset"], r["split"], r["question"], r["answer"]), \
                    (r["dataset"], r["split"], r["pid"])
                if kq in seen_qa:
                    same.append((r, seen_qa[kq]))
                elif kp in seen_pid:
                    clash.append((r, seen_pid[kp]))
                else:
                    new.append(r)
                    seen_qa[kq] = seen_pid[kp] = r
            if new:
                con.register("incoming", _frame({c: [
                    json.dumps(r.get("meta") or {}) if c == "meta" else r.get(c) for r in new]
                    for c in cols}))
                con.execute(f"INSERT INTO problems ({', '.join(cols)}) "
                            f"SELECT {', '.join(cols)} FROM incoming")
                con.unregister("incoming")
        return {"added": len(new), "same": same, "clash": clash}

    def problems(self, dataset: str, split: str, limit: int | None = None,
                 offset: int = 0) -> list[dict]:
        """Problems of one dataset split in file order, `limit` of them from `offset`."""
        sql = ("SELECT * FROM problems WHERE dataset = ? AND split = ? "
               "ORDER BY source_line NULLS LAST, pid LIMIT ? OFFSET ?")
        return self.rows(sql, [dataset, split, limit if limit is not None else 2**62, offset])

    def problem_count(self, dataset: str) -> int:
        """How many problems a dataset holds, over all its splits."""
        return self.scalar("SELECT count(*) FROM problems WHERE dataset = ?", [dataset])

    def datasets(self) -> list[dict]:
        """Each dataset split with its problem count and source file."""
        return self.rows(
            "SELECT dataset, split, count(*) AS n, any_value(source_file) AS source_file "
            "FROM problems GROUP BY ALL ORDER BY dataset, split")

    # -- runs and generations ------------------------------------------------------

    def upsert_run(self, manifest: dict) -> None:
        """Record a run from its manifest; a rerun of the same id is running again."""
        cols = ["run_id", "kind", "model_id", "weights_hash", "adapter", "backend", "dataset",
                "split", "data_hash", "n_items", "prompt_template", "gen_params", "seed",
                "code_version"]
        vals = [manifest.get(c) for c in cols]
        vals[cols.index("gen_params")] = json.dumps(manifest.get("gen_params") or {})
        with self.write() as con:
            con.execute(
                f"INSERT INTO runs ({', '.join(cols)}, manifest) VALUES "
                f"({', '.join('?' * len(cols))}, ?) ON CONFLICT (run_id) DO UPDATE SET "
                "status = 'running', finished_at = NULL",
                vals + [json.dumps(manifest, default=str)])

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Mark a run finished (or another final status)."""
        with self.write() as con:
            con.execute("UPDATE runs SET status = ?, finished_at = current_timestamp "
                        "WHERE run_id = ?", [status, run_id])

    def done_pids(self, run_id: str) -> set[str]:
        """Items of a run that finished without error (errored items are retried)."""
        return {r["pid"] for r in self.rows(
            "SELECT pid FROM generations WHERE run_id = ? AND error IS NULL", [run_id])}

    def record_generations(self, run_id: str, items: list[dict]) -> None:
        """Write a batch of generations and their bad cases in one transaction."""
        cols = ["run_id", "dataset", "split", "pid", "output", "pred", "correct", "judge",
                "prompt_tokens", "completion_tokens", "latency_s", "error"]
        vals = []
        for it in items:
            row = dict(it, run_id=run_id, judge=json.dumps(it.get("judge") or {}),
                       error=scrub(it.get("error")))
            vals.append([row.get(c) for c in cols])
        with self.write() as con:
            con.executemany(
                f"INSERT OR REPLACE INTO generations ({', '.join(cols)}) "
                f"VALUES ({', '.join('?' * len(cols))})", vals)
            bad = [[run_id, it["dataset"], it["split"], it["pid"]] for it in items
                   if it.get("error") is None and it.get("correct") is False]
            if bad:
                con.executemany(
                    "INSERT INTO bad_cases (run_id, dataset, split, pid) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING", bad)

    def runs(self, kind: str | None = None) -> list[dict]:
        """Runs with their counts and accuracy, optionally of one kind."""
        sql = """
            SELECT r.run_id, r.kind, r.model_id, r.adapter, r.backend, r.dataset, r.split,
                   r.n_items, r.seed, r.status, r.created_at, r.data_hash, r.weights_hash,
                   count(g.pid) AS n_done,
                   count(g.pid) FILTER (WHERE g.error IS NOT NULL) AS n_errors,
                   count(g.pid) FILTER (WHERE g.correct) AS n_correct,
                   avg(CASE WHEN g.correct THEN 1.0 ELSE 0.0 END)
                       FILTER (WHERE g.pid IS NOT NULL AND g.error IS NULL) AS accuracy
            FROM runs r LEFT JOIN generations g USING (run_id)
            WHERE (? IS NULL OR r.kind = ?)
            GROUP BY ALL ORDER BY r.created_at"""
        rows = self.rows(sql, [kind, kind])
        for r in rows:  # 'running' with nobody working on it: killed or crashed mid-way
            if r["status"] == "running" and not self.run_held(r["run_id"]):
                r["status"] = "interrupted"
        return rows

    def run_lock_path(self, run_id: str) -> Path:
        """The lock file a process holds while it works on a run."""
        return config.jobs_dir(self.path) / self.path.stem / "runs" / f"{run_id}.lock"

    @contextmanager
    def holding_run(self, run_id: str) -> Iterator[None]:
        """Held (an flock) while a process works on a run, so that a run left 'running'
        by a killed process shows as interrupted, and two processes never run one run."""
        import fcntl

        p = self.run_lock_path(run_id)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"run {run_id} is already running in another process") \
                    from None
            yield

    def hold_run(self, run_id: str) -> None:
        """Take the run's lock (as holding_run does) until release_run or this process's
        end: for a run whose work does not sit in one `with` block (training). Holding it
        already in this process is fine."""
        import fcntl

        p = self.run_lock_path(run_id)
        if str(p) in _held:
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        fh = open(p, "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ValueError(f"run {run_id} is already running in another process") from None
        _held[str(p)] = fh

    def release_run(self, run_id: str) -> None:
        """Let go of a lock taken by hold_run (nothing if this process does not hold it)."""
        fh = _held.pop(str(self.run_lock_path(run_id)), None)
        if fh is not None:
            fh.close()

    def run_held(self, run_id: str) -> bool:
        """Whether some process holds the run's lock (it is running now)."""
        import fcntl

        try:
            with open(self.run_lock_path(run_id)) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                return False
        except OSError:  # no lock file: nobody ever held it here
            return False

    def run(self, run_id: str) -> dict | None:
        """One run's row, or None."""
        return self.one("SELECT * FROM runs WHERE run_id = ?", [run_id])

    def run_errors(self, run_id: str) -> int:
        """How many of a run's generations failed."""
        return self.scalar("SELECT count(*) FROM generations WHERE run_id = ? "
                           "AND error IS NOT NULL", [run_id])

    def runs_gen_params(self) -> dict[str, dict]:
        """Each run's generation parameters, by run id."""
        return {r["run_id"]: json.loads(r["gen_params"] or "{}")
                for r in self.rows("SELECT run_id, gen_params FROM runs")}

    def generation_rates(self) -> list[dict]:
        """Measured generation time per problem of this store's local runs, by dataset
        and model (base or adapter): seconds (the batch's time shared by its rows) and how
        many rows they were measured on."""
        return self.rows("""
            SELECT g.dataset, r.model_id, r.adapter IS NOT NULL AS adapted,
                   sum(g.latency_s) / count(*) AS s_per_problem, count(*) AS n
            FROM generations g JOIN runs r USING (run_id)
            WHERE coalesce(r.backend, 'local') = 'local' AND g.latency_s IS NOT NULL
              AND g.error IS NULL
            GROUP BY ALL ORDER BY g.dataset""")

    # A bad case with its problem, output and grading: the rows of bad_cases and bad_case.
    _BAD_CASES = """
            SELECT b.case_id, b.run_id, b.dataset, b.split, b.pid, p.question, p.solution,
                   p.answer, g.output, g.pred, g.judge, g.completion_tokens, r.model_id
            FROM bad_cases b
            JOIN problems p USING (dataset, split, pid)
            JOIN generations g USING (run_id, dataset, split, pid)
            JOIN runs r USING (run_id)"""

    def bad_cases(self, run_id: str | None = None, limit: int | None = None) -> list[dict]:
        """Bad cases (of one run, or all) in case-id order, at most `limit`."""
        sql = self._BAD_CASES + """
            WHERE (? IS NULL OR b.run_id = ?)
            ORDER BY b.case_id LIMIT ?"""
        return self.rows(sql, [run_id, run_id, limit if limit is not None else 2**62])

    def bad_cases_of(self, run_ids: list[str], limit: int | None = None,
                     verdicts: dict[tuple, bool] | None = None) -> list[dict]:
        """Bad cases of these runs in case-id order, at most `limit`: the generations whose
        verdict is wrong, where `verdicts` ((run_id, dataset, split, pid) -> correct: the
        decisions of a review in force, pipeline/analysis/review.py) wins over the judge's."""
        keys = {True: [], False: []}
        for k, ok in (verdicts or {}).items():
            keys[bool(ok)].append("/".join(k))
        sql = self._BAD_CASES + """
            WHERE list_contains(?, b.run_id)
              AND CASE WHEN list_contains(?::VARCHAR[], b.run_id || '/' || b.dataset || '/' ||
                                          b.split || '/' || b.pid) THEN false
                       WHEN list_contains(?::VARCHAR[], b.run_id || '/' || b.dataset || '/' ||
                                          b.split || '/' || b.pid) THEN true
                       ELSE NOT coalesce(g.correct, false) END
            ORDER BY b.case_id LIMIT ?"""
        return self.rows(sql, [list(run_ids), keys[True], keys[False],
                               limit if limit is not None else 2**62])

    def ensure_bad_case(self, run_id: str, dataset: str, split: str, pid: str) -> int:
        """The bad-case id of a generation, made if it has none (a reviewer judged a right
        answer wrong: analysis keys its keyphrases on this id). Kept when the verdict is
        undone, so the id and its keyphrases stay stable; bad_cases_of reads the verdict."""
        with self.write() as con:
            con.execute("INSERT INTO bad_cases (run_id, dataset, split, pid) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING", [run_id, dataset, split, pid])
            return con.execute("SELECT case_id FROM bad_cases WHERE run_id = ? AND dataset = ? "
                               "AND split = ? AND pid = ?",
                               [run_id, dataset, split, pid]).fetchall()[0][0]

    def generations_view(self, run_id: str | None = None) -> list[dict]:
        """Every judged generation with its problem and, when wrong, its bad-case id."""
        sql = """
            SELECT g.run_id, g.dataset, g.split, g.pid, g.correct, g.pred, g.output, g.judge,
                   g.completion_tokens, g.error, p.question, p.solution, p.answer,
                   b.case_id, r.model_id, r.kind AS run_kind, r.adapter
            FROM generations g
            JOIN problems p USING (dataset, split, pid)
            JOIN runs r USING (run_id)
            LEFT JOIN bad_cases b USING (run_id, dataset, split, pid)
            WHERE (? IS NULL OR g.run_id = ?)
            ORDER BY g.run_id, g.dataset, g.split, g.pid"""
        return self.rows(sql, [run_id, run_id])

    def search_keyphrases(self, needle: str, clustering_id: str,
                          limit: int = 20) -> list[dict]:
        """Keyphrases of a clustering whose text holds `needle` (any case), shortest first."""
        return self.rows("""
            SELECT k.kp_id, k.case_id, k.text FROM cluster_points c JOIN keyphrases k
            USING (kp_id) WHERE c.clustering_id = ? AND contains(lower(k.text), lower(?))
            ORDER BY length(k.text), k.kp_id LIMIT ?""", [clustering_id, needle, limit])

    def search_cases(self, needle: str, limit: int = 20) -> list[dict]:
        """Bad cases whose question or model output holds `needle` (any case), with where
        it was found."""
        return self.rows("""
            SELECT b.case_id, b.dataset, b.pid, p.question,
                   CASE WHEN contains(lower(p.question), lower(?)) THEN 'question'
                        ELSE 'output' END AS found_in
            FROM bad_cases b JOIN problems p USING (dataset, split, pid)
            JOIN generations g USING (run_id, dataset, split, pid)
            WHERE contains(lower(p.question), lower(?))
               OR contains(lower(coalesce(g.output, '')), lower(?))
            ORDER BY b.case_id LIMIT ?""", [needle, needle, needle, limit])

    def case_keyphrases(self, case_id: int) -> list[dict]:
        """A bad case's keyphrases from every analysis."""
        return self.rows("SELECT kp_id, analysis_id, rank, text, evidence, analyzer "
                         "FROM keyphrases WHERE case_id = ? ORDER BY analysis_id, rank", [case_id])

    def count(self, table: str) -> int:
        """Rows in a table."""
        if not table.isidentifier():
            raise ValueError(table)
        return self.scalar(f"SELECT count(*) FROM {table}")

    def find_text(self, needle: str) -> list[str]:
        """Every table.column whose text holds `needle` (for checking that no secret
        reached the store)."""
        with self.read() as con:
            cols = con.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE data_type IN ('VARCHAR', 'JSON') AND table_schema = 'main'").fetchall()
            return [f"{t}.{c}" for t, c in cols if con.execute(
                f'SELECT count(*) FROM "{t}" WHERE contains("{c}"::VARCHAR, ?)',
                [needle]).fetchall()[0][0]]

    # -- jobs ------------------------------------------------------------------------------

    JOB_FIELDS = ("kind", "params", "heavy", "status", "done", "total", "step", "message",
                  "eta_s", "pid", "pid_start", "heartbeat", "log_file", "error", "result",
                  "cancel_requested", "cancel_at", "attempts", "started_at", "finished_at")

    def job_insert(self, kind: str, params: dict, heavy: bool) -> int:
        """A new queued job; returns its id."""
        with self.write() as con:
            return con.execute(
                "INSERT INTO jobs (kind, params, heavy, status) VALUES (?, ?, ?, 'queued') "
                "RETURNING job_id", [kind, json.dumps(params), heavy]).fetchall()[0][0]

    def job_update(self, job_id: int, _when_status: Sequence[str] | None = None,
                   **fields) -> bool:
        """Set fields of a job; with `_when_status`, only if its status is one of those
        (a compare-and-set, so that a late heartbeat cannot undo a cancel). Values of
        'now' become current_timestamp. Returns whether a row changed."""
        bad = set(fields) - set(self.JOB_FIELDS)
        if bad:
            raise ValueError(f"unknown job fields {bad}")
        sets, vals = [], []
        for k, v in fields.items():
            if v == "now":
                sets.append(f"{k} = current_timestamp")
                continue
            sets.append(f"{k} = ?")
            if k in ("error", "message"):  # error texts never carry a secret
                v = scrub(v)
            vals.append(json.dumps(v) if k in ("params", "result") else v)
        sql = f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?"
        vals.append(job_id)
        if _when_status:
            sql += f" AND status IN ({', '.join('?' * len(_when_status))})"
            vals.extend(_when_status)
        with self.write() as con:
            return bool(con.execute(sql + " RETURNING job_id", vals).fetchall())

    def _job_row(self, r: dict) -> dict:
        for k in ("params", "result"):
            if isinstance(r.get(k), str):
                r[k] = json.loads(r[k])
        return r

    def job_cancel_age(self, job_id: int) -> float | None:
        """Seconds since a cancel of the job was asked (None if none was)."""
        return self.scalar("SELECT epoch(current_timestamp - cancel_at) FROM jobs "
                           "WHERE job_id = ?", [job_id])

    def job(self, job_id: int) -> dict | None:
        """One job's row, or None."""
        r = self.one("SELECT *, epoch(current_timestamp - heartbeat) AS heartbeat_age_s "
                     "FROM jobs WHERE job_id = ?", [job_id])
        return self._job_row(r) if r else None

    def jobs(self, statuses: Sequence[str] | None = None, limit: int = 200) -> list[dict]:
        """Jobs, newest first (at most `limit`), optionally of some statuses."""
        sql = "SELECT *, epoch(current_timestamp - heartbeat) AS heartbeat_age_s FROM jobs"
        vals: list = []
        if statuses:
            sql += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            vals = list(statuses)
        rows = self.rows(sql + " ORDER BY job_id DESC LIMIT ?", vals + [limit])
        return [self._job_row(r) for r in rows]

    def add_tick(self, tag: str, i: int) -> None:
        """One row of the 'ticks' test stage."""
        with self.write() as con:
            con.execute("INSERT INTO ticks (tag, i, pid) VALUES (?, ?, ?)", [tag, i, os.getpid()])

    def ticks_done(self, tag: str) -> set[int]:
        """Which ticks of a tag were written."""
        return {r["i"] for r in self.rows("SELECT i FROM ticks WHERE tag = ?", [tag])}

    # -- instructor log and cache ---------------------------------------------------------

    def log_llm_call(self, cache_key, model, base_url, purpose, messages, params, reply,
                     parsed, prompt_tokens, completion_tokens, latency_s, error,
                     cached: bool = False) -> None:
        """Log one instructor call (secrets scrubbed)."""
        with self.write() as con:
            con.execute(
                "INSERT INTO llm_calls (cache_key, model, base_url, purpose, messages, params, "
                "reply, parsed, prompt_tokens, completion_tokens, latency_s, error, cached) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [cache_key, model, scrub(base_url), purpose, scrub(json.dumps(messages)),
                 json.dumps(params), scrub(reply),
                 json.dumps(parsed) if parsed is not None else None, prompt_tokens,
                 completion_tokens, latency_s, scrub(error), cached])

    def llm_cache_get(self, key: str) -> dict | None:
        """A cached instructor reply by key, or None."""
        r = self.one("SELECT reply, parsed FROM llm_cache WHERE cache_key = ?", [key])
        if r:
            r["parsed"] = json.loads(r["parsed"])
        return r

    def llm_cache_put(self, key: str, model: str, reply: str, parsed: dict) -> None:
        """Cache an instructor reply under its key."""
        with self.write() as con:
            con.execute("INSERT OR REPLACE INTO llm_cache (cache_key, model, reply, parsed) "
                        "VALUES (?, ?, ?, ?)", [key, model, reply, json.dumps(parsed)])

    def llm_calls(self, limit: int = 100) -> list[dict]:
        """The latest instructor calls, newest first."""
        return self.rows("SELECT * FROM llm_calls ORDER BY call_id DESC LIMIT ?", [limit])

    # -- analyses and keyphrases ------------------------------------------------------------

    def upsert_analysis(self, analysis_id: str, analyzer: str, prompt_version: str | None,
                        manifest: dict) -> None:
        """Record an analysis and its manifest."""
        with self.write() as con:
            con.execute("INSERT INTO analyses (analysis_id, analyzer, prompt_version, manifest) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [analysis_id, analyzer, prompt_version, json.dumps(manifest)])

    def analyses(self) -> list[dict]:
        """Analyses with their counts of cases and keyphrases."""
        return self.rows("""
            SELECT a.*,
                   (SELECT count(*) FROM keyphrases k WHERE k.analysis_id = a.analysis_id)
                   AS n_keyphrases,
                   (SELECT count(*) FROM analysis_done d WHERE d.analysis_id = a.analysis_id
                                                         AND d.error IS NULL) AS n_cases
            FROM analyses a ORDER BY created_at""")

    def analysis_done(self, analysis_id: str) -> set[int]:
        """Bad cases an analysis has finished (to resume it)."""
        return {r["case_id"] for r in self.rows(
            "SELECT case_id FROM analysis_done WHERE analysis_id = ? AND error IS NULL",
            [analysis_id])}

    def record_keyphrases(self, analysis_id: str, case_id: int, analyzer: str,
                          phrases: list[dict], error: str | None = None) -> None:
        """One bad case's keyphrases, all or nothing."""
        with self.write() as con:
            con.execute("DELETE FROM keyphrases WHERE analysis_id = ? AND case_id = ?",
                        [analysis_id, case_id])
            for rank, p in enumerate(phrases):
                con.execute("INSERT INTO keyphrases (case_id, analysis_id, rank, text, evidence, "
                            "analyzer) VALUES (?, ?, ?, ?, ?, ?)",
                            [case_id, analysis_id, rank, p["text"], p.get("evidence"), analyzer])
            con.execute("INSERT OR REPLACE INTO analysis_done VALUES (?, ?, ?)",
                        [analysis_id, case_id, scrub(error)])

    def record_keyphrases_bulk(self, analysis_id: str, analyzer: str,
                               items: list[tuple[int, list[dict]]]) -> None:
        """Many bad cases' keyphrases in one transaction (one statement per table)."""
        cases = [c for c, _ in items]
        rows = [(c, analysis_id, r, p["text"], p.get("evidence"), analyzer)
                for c, phrases in items for r, p in enumerate(phrases)]
        with self.write() as con:
            con.register("done_cases", _frame({"case_id": cases}))
            con.execute("DELETE FROM keyphrases WHERE analysis_id = ? AND case_id IN "
                        "(SELECT case_id FROM done_cases)", [analysis_id])
            if rows:
                con.register("incoming", _frame({k: [r[i] for r in rows] for i, k in enumerate(
                    ["case_id", "analysis_id", "rank", "text", "evidence", "analyzer"])}))
                con.execute("INSERT INTO keyphrases (case_id, analysis_id, rank, text, evidence, "
                            "analyzer) SELECT * FROM incoming")
            con.execute("INSERT OR REPLACE INTO analysis_done SELECT ?, case_id, NULL "
                        "FROM done_cases", [analysis_id])

    def keyphrases(self, analysis_id: str) -> list[dict]:
        """An analysis's keyphrases with their bad cases, in id order."""
        return self.rows("SELECT kp_id, case_id, text, evidence, analyzer FROM keyphrases "
                         "WHERE analysis_id = ? ORDER BY kp_id", [analysis_id])

    def latest_analysis(self) -> str | None:
        """The newest analysis's id, or None."""
        return self.scalar("SELECT analysis_id FROM analyses ORDER BY created_at DESC LIMIT 1")

    # -- embeddings ---------------------------------------------------------------------------

    def embeddings_get(self, model: str, texts: list[str]) -> dict[str, list[float]]:
        """Cached embeddings of these texts under a model, by text."""
        if not texts:
            return {}
        with self.read() as con:
            con.register("wanted", _frame({"text": texts}))
            rows = con.execute("SELECT e.text, e.vector FROM embeddings e JOIN wanted w "
                               "USING (text) WHERE e.model = ?", [model]).fetchall()
        return {t: v for t, v in rows}

    def embeddings_put(self, model: str, items: dict[str, list[float]]) -> None:
        """Cache embeddings by text under a model."""
        if not items:
            return
        with self.write() as con:
            con.register("new", _frame({"text": list(items), "vector": list(items.values())}))
            con.execute("INSERT OR IGNORE INTO embeddings SELECT ?, text, vector::FLOAT[] FROM new",
                        [model])

    # -- clusterings and error types ------------------------------------------------------------

    def bad_case(self, case_id: int) -> dict | None:
        """One bad case with its problem, output and grading."""
        rows = self.rows(self._BAD_CASES + """
            WHERE b.case_id = ?""", [case_id])
        return rows[0] if rows else None

    def save_clustering(self, meta: dict, points: list[dict], new_types: list[dict]) -> None:
        """A clustering with its points and the error types it created, all or nothing."""
        with self.write() as con:
            for t in new_types:
                con.execute("INSERT INTO error_types (type_id, origin_clustering, title, "
                            "description, titled_by) VALUES (?, ?, ?, ?, ?)",
                            [t["type_id"], meta["clustering_id"], t["title"],
                             t.get("description"), t.get("titled_by")])
            con.execute(
                "INSERT INTO clusterings (clustering_id, analysis_id, method, params, seed, "
                "embed_model, n_points, n_clusters, timings, diff, code_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [meta["clustering_id"], meta["analysis_id"], meta["method"],
                 json.dumps(meta["params"]), meta["seed"], meta["embed_model"],
                 meta["n_points"], meta["n_clusters"], json.dumps(meta["timings"]),
                 json.dumps(meta["diff"]), meta["code_version"]])
            con.register("pts", _frame({k: [p[k] for p in points] for k in
                                        ("kp_id", "x", "y", "cluster", "type_id", "prob")}))
            con.execute("INSERT INTO cluster_points SELECT ?, kp_id, x, y, cluster, type_id, prob "
                        "FROM pts", [meta["clustering_id"]])

    def next_type_ids(self, n: int) -> list[int]:
        """n fresh error-type ids."""
        with self.write() as con:
            return [con.execute("SELECT nextval('type_seq')").fetchall()[0][0] for _ in range(n)]

    def clusterings(self) -> list[dict]:
        """Every clustering, oldest first."""
        rows = self.rows("SELECT * FROM clusterings ORDER BY created_at")
        for r in rows:
            for k in ("params", "timings", "diff"):
                r[k] = json.loads(r[k]) if r[k] else None
        return rows

    def latest_clustering(self) -> dict | None:
        """The newest clustering, or None."""
        rows = self.clusterings()
        return rows[-1] if rows else None

    def cluster_points(self, clustering_id: str) -> list[dict]:
        """Points of a clustering joined with their keyphrase and bad case."""
        return self.rows("""
            SELECT c.kp_id, c.x, c.y, c.cluster, c.type_id, c.prob, k.text, k.case_id, k.analyzer,
                   b.dataset, b.pid, p.question
            FROM cluster_points c JOIN keyphrases k USING (kp_id)
            JOIN bad_cases b USING (case_id) JOIN problems p USING (dataset, split, pid)
            WHERE c.clustering_id = ? ORDER BY c.kp_id""", [clustering_id])

    def keyphrases_version(self) -> tuple:
        """Changes whenever keyphrases are added or replaced (ids only grow)."""
        return tuple(self.rows("SELECT count(*) AS n, max(kp_id) AS m FROM keyphrases")[0].values())

    def error_types(self) -> dict[int, dict]:
        """Stored title, description and titler of every error type, by id."""
        return {r["type_id"]: r for r in self.rows("SELECT * FROM error_types")}

    def set_type_title(self, type_id: int, title: str, description: str | None,
                       titled_by: str) -> None:
        """Store a type's computed title and description."""
        with self.write() as con:
            con.execute("UPDATE error_types SET title = ?, description = ?, titled_by = ? "
                        "WHERE type_id = ?", [title, description, titled_by, type_id])

    def new_type(self, title: str, description: str | None, titled_by: str,
                 origin: str | None = None) -> int:
        """A new error type (a split's); returns its id."""
        with self.write() as con:
            return con.execute("INSERT INTO error_types (origin_clustering, title, description, "
                               "titled_by) VALUES (?, ?, ?, ?) RETURNING type_id",
                               [origin, title, description, titled_by]).fetchall()[0][0]

    def add_edit(self, op: str, payload: dict, author: str | None = None) -> int:
        """Append an edit to the curation log; returns its id."""
        with self.write() as con:
            return con.execute("INSERT INTO type_edits (op, payload, author) VALUES (?, ?, ?) "
                               "RETURNING edit_id",
                               [op, json.dumps(payload), author]).fetchall()[0][0]

    def edits(self) -> list[dict]:
        """The curation log, oldest first."""
        rows = self.rows("SELECT * FROM type_edits ORDER BY edit_id")
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    # -- the SEI loop: iterations ----------------------------------------------------------------

    def iteration(self, n: int) -> dict | None:
        """One iteration's row, or None."""
        r = self.one("SELECT * FROM iterations WHERE iteration = ?", [n])
        return _json_cols(r, ("taxonomy", "params")) if r else None

    def iterations(self) -> list[dict]:
        """Every iteration, in order."""
        return [_json_cols(r, ("taxonomy", "params"))
                for r in self.rows("SELECT * FROM iterations ORDER BY iteration")]

    def create_iteration(self, n: int, mode: str, parent: int | None, taxonomy: dict,
                         clustering_id: str | None, params: dict) -> None:
        """Freeze iteration n's taxonomy; a second call leaves the first snapshot as it is."""
        with self.write() as con:
            con.execute("INSERT INTO iterations (iteration, mode, parent, taxonomy, "
                        "clustering_id, params) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        [n, mode, parent, json.dumps(taxonomy), clustering_id,
                         json.dumps(params)])

    def set_iteration_status(self, n: int, status: str) -> None:
        """Set an iteration's status ('done' records when it finished)."""
        with self.write() as con:
            con.execute("UPDATE iterations SET status = ?, finished_at = CASE WHEN ? = 'done' "
                        "THEN current_timestamp END WHERE iteration = ?", [status, status, n])

    def link_run(self, iteration: int, role: str, ref: str) -> None:
        """Record that `ref` (a run, batch, selection or training id) plays `role` in n."""
        with self.write() as con:
            con.execute("INSERT INTO iteration_runs VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                        [iteration, role, ref])

    def iteration_links(self, iteration: int | None = None) -> list[dict]:
        """Which runs belong to which iteration, in what role."""
        return self.rows("SELECT * FROM iteration_runs WHERE (? IS NULL OR iteration = ?) "
                         "ORDER BY iteration, role, ref", [iteration, iteration])

    # -- synthesis ---------------------------------------------------------------------------

    def upsert_synth_batch(self, batch_id: str, iteration: int, synthesizer: str,
                           params: dict, manifest: dict) -> None:
        """Record a synthesis batch with its parameters."""
        with self.write() as con:
            con.execute("INSERT INTO synth_batches (batch_id, iteration, synthesizer, params, "
                        "manifest) VALUES (?, ?, ?, ?, ?) ON CONFLICT (batch_id) DO UPDATE SET "
                        "status = 'running', finished_at = NULL",
                        [batch_id, iteration, synthesizer, json.dumps(params),
                         json.dumps(manifest, default=str)])

    def finish_synth_batch(self, batch_id: str, status: str = "finished") -> None:
        """Mark a synthesis batch finished (or another final status)."""
        with self.write() as con:
            con.execute("UPDATE synth_batches SET status = ?, finished_at = current_timestamp "
                        "WHERE batch_id = ?", [status, batch_id])

    def synth_batches(self) -> list[dict]:
        """Every synthesis batch, oldest first."""
        return [_json_cols(r, ("params", "manifest"))
                for r in self.rows("SELECT * FROM synth_batches ORDER BY created_at")]

    CAND_COLS = ("slot", "batch_id", "iteration", "type_id", "type_title", "source_cases",
                 "synthesizer", "model", "prompt_version", "call_key", "question", "solution",
                 "answer", "raw", "meta", "status", "reason", "verification", "nearest",
                 "nearest_score", "contamination")
    _CAND_JSON = ("source_cases", "meta", "verification", "contamination")

    def add_candidates(self, rows: list[dict]) -> int:
        """One call's candidates, all or nothing; slots already written are left alone
        (a killed synthesis re-run rewrites nothing). Returns how many are new."""
        if not rows:
            return 0
        cols = self.CAND_COLS
        data = {c: [json.dumps(r.get(c)) if c in self._CAND_JSON else r.get(c) for r in rows]
                for c in cols}
        with self.write() as con:
            before = con.execute("SELECT count(*) FROM candidates").fetchall()[0][0]
            con.register("incoming", _frame(data))
            con.execute(f"INSERT INTO candidates ({', '.join(cols)}) SELECT {', '.join(cols)} "
                        "FROM incoming ON CONFLICT (slot) DO NOTHING")
            return con.execute("SELECT count(*) FROM candidates").fetchall()[0][0] - before

    def candidate_slots(self, batch_id: str) -> set[str]:
        """The slots of a batch already filled (to resume it)."""
        return {r["slot"] for r in self.rows("SELECT slot FROM candidates WHERE batch_id = ?",
                                             [batch_id])}

    def candidates(self, batch_id: str | None = None, iteration: int | None = None,
                   status: str | None = None, before_iteration: int | None = None) -> list[dict]:
        """Candidates, filtered by batch, iteration and status."""
        rows = self.rows(
            "SELECT * FROM candidates WHERE (? IS NULL OR batch_id = ?) "
            "AND (? IS NULL OR iteration = ?) AND (? IS NULL OR status = ?) "
            "AND (? IS NULL OR iteration < ?) ORDER BY cand_id",
            [batch_id, batch_id, iteration, iteration, status, status,
             before_iteration, before_iteration])
        return [_json_cols(r, self._CAND_JSON) for r in rows]

    def candidate_counts(self, batch_id: str | None = None) -> list[dict]:
        """How many candidates per type and status, optionally of one batch."""
        return self.rows("SELECT type_id, any_value(type_title) AS type_title, status, "
                         "count(*) AS n FROM candidates WHERE (? IS NULL OR batch_id = ?) "
                         "GROUP BY type_id, status ORDER BY type_id, status",
                         [batch_id, batch_id])

    def problem_texts(self, split: str | None = None, dataset: str | None = None,
                      not_split: str | None = None) -> list[dict]:
        """Problem questions by split and dataset, or outside a split (for novelty and
        contamination checks)."""
        return self.rows("SELECT dataset, split, pid, question FROM problems "
                         "WHERE (? IS NULL OR split = ?) AND (? IS NULL OR dataset = ?) "
                         "AND (? IS NULL OR split <> ?) ORDER BY dataset, split, pid",
                         [split, split, dataset, dataset, not_split, not_split])

    def cases_by_id(self, case_ids: list[int]) -> list[dict]:
        """Bad cases with their problem, output and problem meta."""
        if not case_ids:
            return []
        marks = ", ".join("?" * len(case_ids))
        return self.rows(f"""
            SELECT b.case_id, b.run_id, b.dataset, b.split, b.pid, p.question, p.solution,
                   p.answer, p.meta, g.output, g.pred
            FROM bad_cases b JOIN problems p USING (dataset, split, pid)
            JOIN generations g USING (run_id, dataset, split, pid)
            WHERE b.case_id IN ({marks}) ORDER BY b.case_id""", list(case_ids))

    # -- dev sets and selections ---------------------------------------------------------------

    def save_dev_set(self, iteration: int, rows: list[dict]) -> None:
        """Store an iteration's dev set (drawn once, reused by every selection)."""
        with self.write() as con:
            con.execute("DELETE FROM dev_sets WHERE iteration = ?", [iteration])
            con.executemany("INSERT INTO dev_sets VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [[iteration, r["run_id"], r["dataset"], r["split"], r["pid"],
                              r["half"], r["seed"]] for r in rows])

    def dev_set(self, iteration: int) -> list[dict]:
        """An iteration's dev set with its problems and the base run's verdicts: the verdict
        each problem was drawn by (its half: the judge's, or a review's in force then)."""
        return self.rows("""
            SELECT d.*, p.question, p.solution, p.answer, g.output AS zero_output,
                   d.half = 'good' AS zero_correct
            FROM dev_sets d JOIN problems p USING (dataset, split, pid)
            JOIN generations g ON g.run_id = d.run_id AND g.dataset = d.dataset
                 AND g.split = d.split AND g.pid = d.pid
            WHERE d.iteration = ? ORDER BY d.half DESC, d.pid""", [iteration])

    def upsert_selection(self, selection_id: str, iteration: int, method: str, params: dict,
                         manifest: dict) -> None:
        """Record a selection with its parameters."""
        with self.write() as con:
            con.execute("INSERT INTO selections (selection_id, iteration, method, params, "
                        "manifest) VALUES (?, ?, ?, ?, ?) ON CONFLICT (selection_id) DO UPDATE "
                        "SET status = 'running', finished_at = NULL",
                        [selection_id, iteration, method, json.dumps(params),
                         json.dumps(manifest, default=str)])

    def record_scores(self, selection_id: str, scores: list[dict], gens: list[dict]) -> None:
        """Candidates' scores with the generations behind them, all or nothing."""
        with self.write() as con:
            for g in gens:
                con.execute("INSERT OR REPLACE INTO score_generations VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [selection_id, g["cand_id"], g["dataset"], g["split"], g["pid"],
                             g.get("output"), g.get("pred"), g.get("correct"), g.get("value"),
                             g.get("completion_tokens")])
            for s in scores:
                con.execute("INSERT OR REPLACE INTO cand_scores (selection_id, cand_id, score, "
                            "good_acc, bad_acc, fixed, broken, detail) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [selection_id, s["cand_id"], s["score"], s.get("good_acc"),
                             s.get("bad_acc"), json.dumps(s.get("fixed")),
                             json.dumps(s.get("broken")), json.dumps(s.get("detail"))])

    def scored_cands(self, selection_id: str) -> set[int]:
        """Candidates a selection has scored (to resume it)."""
        return {r["cand_id"] for r in self.rows(
            "SELECT cand_id FROM cand_scores WHERE selection_id = ?", [selection_id])}

    def finish_selection(self, selection_id: str, chosen: list[tuple[int, int]],
                         stats: dict) -> None:
        """Mark the chosen (cand_id, rank) pairs, store the stats, close the selection."""
        with self.write() as con:
            con.execute("UPDATE cand_scores SET selected = false, rank = NULL "
                        "WHERE selection_id = ?", [selection_id])
            con.executemany("UPDATE cand_scores SET selected = true, rank = ? "
                            "WHERE selection_id = ? AND cand_id = ?",
                            [[rank, selection_id, cid] for cid, rank in chosen])
            con.execute("UPDATE selections SET status = 'finished', stats = ?, "
                        "finished_at = current_timestamp WHERE selection_id = ?",
                        [json.dumps(stats), selection_id])

    def selections(self, iteration: int | None = None) -> list[dict]:
        """Selections with their counts, optionally of one iteration."""
        rows = self.rows("""
            SELECT s.*, (SELECT count(*) FROM cand_scores c WHERE c.selection_id = s.selection_id)
                       AS n_scored,
                   (SELECT count(*) FROM cand_scores c WHERE c.selection_id = s.selection_id
                                                        AND c.selected) AS n_selected
            FROM selections s WHERE (? IS NULL OR iteration = ?) ORDER BY created_at""",
                         [iteration, iteration])
        return [_json_cols(r, ("params", "manifest", "stats")) for r in rows]

    def selection(self, selection_id: str) -> dict | None:
        """One selection's row, or None."""
        r = self.one("SELECT * FROM selections WHERE selection_id = ?", [selection_id])
        return _json_cols(r, ("params", "manifest", "stats")) if r else None

    def cand_scores(self, selection_id: str, selected_only: bool = False) -> list[dict]:
        """A selection's scores with their candidates, by rank then score."""
        rows = self.rows("""
            SELECT s.*, c.type_id, c.type_title, c.question, c.solution, c.answer,
                   c.synthesizer, c.iteration AS cand_iteration
            FROM cand_scores s JOIN candidates c USING (cand_id)
            WHERE s.selection_id = ? AND (NOT ? OR s.selected)
            ORDER BY s.rank NULLS LAST, s.score DESC, s.cand_id""",
                         [selection_id, selected_only])
        return [_json_cols(r, ("fixed", "broken", "detail")) for r in rows]

    def score_generations(self, selection_id: str, cand_id: int) -> list[dict]:
        """The dev generations behind one candidate's score."""
        return self.rows("SELECT * FROM score_generations WHERE selection_id = ? AND cand_id = ? "
                         "ORDER BY dataset, split, pid", [selection_id, cand_id])

    # -- training ---------------------------------------------------------------------------------

    def upsert_train_run(self, row: dict) -> None:
        """Record a training run (a rerun of the same id is running again)."""
        cols = ["train_id", "iteration", "mode", "base_model", "init_adapter", "selection_ids",
                "data_hash", "n_examples", "params", "adapter_dir", "total_steps"]
        vals = [json.dumps(row[c]) if c in ("selection_ids", "params") else row.get(c)
                for c in cols]
        with self.write() as con:
            con.execute(f"INSERT INTO train_runs ({', '.join(cols)}) VALUES "
                        f"({', '.join('?' * len(cols))}) ON CONFLICT (train_id) DO UPDATE SET "
                        "status = 'running', finished_at = NULL", vals)

    def record_train_steps(self, train_id: str, steps: list[dict], step: int) -> None:
        """Loss rows of the steps since the last checkpoint, with the checkpointed step."""
        with self.write() as con:
            for s in steps:
                con.execute("INSERT OR REPLACE INTO train_steps VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [train_id, s["step"], s["epoch"], s["loss"], s["lr"], s["tokens"],
                             s["seconds"]])
            con.execute("UPDATE train_runs SET step = ? WHERE train_id = ?", [step, train_id])

    def finish_train_run(self, train_id: str, status: str, adapter_hash: str | None,
                         timings: dict | None) -> None:
        """Mark a training run finished with its adapter hash and timings."""
        with self.write() as con:
            con.execute("UPDATE train_runs SET status = ?, adapter_hash = ?, timings = ?, "
                        "finished_at = current_timestamp WHERE train_id = ?",
                        [status, adapter_hash, json.dumps(timings), train_id])

    def train_runs(self, iteration: int | None = None) -> list[dict]:
        """Training runs, optionally of one iteration, oldest first."""
        rows = self.rows("SELECT * FROM train_runs WHERE (? IS NULL OR iteration = ?) "
                         "ORDER BY created_at", [iteration, iteration])
        return [self._train_status(_json_cols(r, ("selection_ids", "params", "timings")))
                for r in rows]

    def _train_status(self, r: dict) -> dict:
        """'running' with nobody holding the run's lock: killed or crashed mid-way, so
        'interrupted' (as extraction runs read)."""
        if r["status"] == "running" and not self.run_held(r["train_id"]):
            r["status"] = "interrupted"
        return r

    def train_run(self, train_id: str) -> dict | None:
        """One training run's row, or None."""
        r = self.one("SELECT * FROM train_runs WHERE train_id = ?", [train_id])
        return self._train_status(_json_cols(r, ("selection_ids", "params", "timings"))) \
            if r else None

    def train_steps(self, train_id: str) -> list[dict]:
        """A training run's loss curve, step by step."""
        return self.rows("SELECT * FROM train_steps WHERE train_id = ? ORDER BY step",
                         [train_id])

    def run_items(self, run_id: str) -> list[dict]:
        """Judged items of a run (errors excluded) for paired comparisons."""
        return self.rows("SELECT dataset, split, pid, correct, pred, output FROM generations "
                         "WHERE run_id = ? AND error IS NULL ORDER BY dataset, split, pid",
                         [run_id])


def _rollback(con) -> None:
    """End a failed transaction; never raises (the error that got here is the one to
    report, and after a failed COMMIT DuckDB has no transaction left to roll back)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _json_cols(row: dict, cols: Sequence[str]) -> dict:
    for c in cols:
        if isinstance(row.get(c), str):
            row[c] = json.loads(row[c])
    return row


def _frame(cols: dict):
    import pandas as pd

    return pd.DataFrame(cols)
