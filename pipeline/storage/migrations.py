"""Schema migrations as named steps, in the manner of simonw/llm's migrations.py.

Each migration is a function registered, in order, by `@migration`; `migrate(con)` applies
those whose name is not yet in the `migrations` table and records each name there, in the
same transaction as its changes. Add a step by appending a new decorated function; never
rename or edit one that has shipped.

Stores made before migrations had names kept a number in `schema_version` (version n:
the first n steps applied). `LEGACY` maps those numbers to names, so such a store is
recorded as migrated that far and is not migrated again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

MIGRATIONS: list[Callable] = []


class NewerStore(RuntimeError):
    """The store has migrations this code does not know: it was made by newer code."""


def migration(fn: Callable) -> Callable:
    """Register `fn` as the next migration step (its name is what the store records)."""
    MIGRATIONS.append(fn)
    return fn


_FOUNDATION = """
    CREATE TABLE problems (
        dataset TEXT NOT NULL, split TEXT NOT NULL, pid TEXT NOT NULL,
        question TEXT NOT NULL, solution TEXT, answer TEXT NOT NULL,
        meta JSON, source_file TEXT, source_line INTEGER,
        imported_at TIMESTAMP DEFAULT current_timestamp,
        PRIMARY KEY (dataset, split, pid)
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, kind TEXT NOT NULL,
        model_id TEXT, weights_hash TEXT, adapter TEXT, backend TEXT,
        dataset TEXT, split TEXT, data_hash TEXT, n_items INTEGER,
        prompt_template TEXT, gen_params JSON, seed INTEGER, code_version TEXT,
        manifest JSON, status TEXT DEFAULT 'running',
        created_at TIMESTAMP DEFAULT current_timestamp, finished_at TIMESTAMP
    );
    CREATE TABLE generations (
        run_id TEXT NOT NULL, dataset TEXT NOT NULL, split TEXT NOT NULL, pid TEXT NOT NULL,
        output TEXT, pred TEXT, correct BOOLEAN, judge JSON,
        prompt_tokens INTEGER, completion_tokens INTEGER, latency_s DOUBLE, error TEXT,
        created_at TIMESTAMP DEFAULT current_timestamp,
        PRIMARY KEY (run_id, dataset, split, pid)
    );
    CREATE SEQUENCE case_seq START 1;
    CREATE TABLE bad_cases (
        case_id INTEGER PRIMARY KEY DEFAULT nextval('case_seq'),
        run_id TEXT NOT NULL, dataset TEXT NOT NULL, split TEXT NOT NULL, pid TEXT NOT NULL,
        created_at TIMESTAMP DEFAULT current_timestamp,
        UNIQUE (run_id, dataset, split, pid)
    );
    """


@migration
def m001_foundation(con) -> None:
    """Problems, runs, generations and bad cases."""
    con.execute(_FOUNDATION)


_ERROR_ANALYSIS = """
    CREATE SEQUENCE call_seq START 1;
    CREATE TABLE llm_calls (
        call_id INTEGER PRIMARY KEY DEFAULT nextval('call_seq'),
        cache_key TEXT, model TEXT, base_url TEXT, purpose TEXT,
        messages JSON, params JSON, reply TEXT, parsed JSON,
        prompt_tokens INTEGER, completion_tokens INTEGER, latency_s DOUBLE,
        error TEXT, cached BOOLEAN DEFAULT false,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE llm_cache (
        cache_key TEXT PRIMARY KEY, model TEXT, reply TEXT, parsed JSON,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE SEQUENCE kp_seq START 1;
    CREATE TABLE keyphrases (
        kp_id INTEGER PRIMARY KEY DEFAULT nextval('kp_seq'),
        case_id INTEGER NOT NULL, analysis_id TEXT NOT NULL, rank INTEGER NOT NULL,
        text TEXT NOT NULL, evidence TEXT, analyzer TEXT NOT NULL,
        created_at TIMESTAMP DEFAULT current_timestamp,
        UNIQUE (analysis_id, case_id, rank)
    );
    CREATE TABLE analyses (
        analysis_id TEXT PRIMARY KEY, analyzer TEXT NOT NULL, prompt_version TEXT,
        manifest JSON, created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE analysis_done (
        analysis_id TEXT NOT NULL, case_id INTEGER NOT NULL, error TEXT,
        PRIMARY KEY (analysis_id, case_id)
    );
    CREATE TABLE embeddings (
        model TEXT NOT NULL, text TEXT NOT NULL, vector FLOAT[] NOT NULL,
        PRIMARY KEY (model, text)
    );
    CREATE TABLE clusterings (
        clustering_id TEXT PRIMARY KEY, analysis_id TEXT, method TEXT, params JSON,
        seed INTEGER, embed_model TEXT, n_points INTEGER, n_clusters INTEGER,
        timings JSON, diff JSON, code_version TEXT,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE cluster_points (
        clustering_id TEXT NOT NULL, kp_id INTEGER NOT NULL,
        x DOUBLE, y DOUBLE, cluster INTEGER, type_id INTEGER, prob DOUBLE,
        PRIMARY KEY (clustering_id, kp_id)
    );
    CREATE SEQUENCE type_seq START 1;
    CREATE TABLE error_types (
        type_id INTEGER PRIMARY KEY DEFAULT nextval('type_seq'),
        origin_clustering TEXT, title TEXT, description TEXT, titled_by TEXT,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE SEQUENCE edit_seq START 1;
    CREATE TABLE type_edits (
        edit_id INTEGER PRIMARY KEY DEFAULT nextval('edit_seq'),
        op TEXT NOT NULL, payload JSON NOT NULL, author TEXT,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    """


@migration
def m002_error_analysis(con) -> None:
    """Error analysis: the instructor's call log and cache, keyphrases, embeddings,
    clusterings, error types and the append-only curation log."""
    con.execute(_ERROR_ANALYSIS)


_JOBS = """
    CREATE SEQUENCE job_seq START 1;
    CREATE TABLE jobs (
        job_id INTEGER PRIMARY KEY DEFAULT nextval('job_seq'),
        kind TEXT NOT NULL, params JSON, heavy BOOLEAN, status TEXT NOT NULL,
        done INTEGER DEFAULT 0, total INTEGER, step TEXT, message TEXT, eta_s DOUBLE,
        pid INTEGER, pid_start TEXT, heartbeat TIMESTAMP, log_file TEXT, error TEXT,
        result JSON, cancel_requested BOOLEAN DEFAULT false, cancel_at TIMESTAMP,
        attempts INTEGER DEFAULT 0,
        created_at TIMESTAMP DEFAULT current_timestamp, started_at TIMESTAMP,
        finished_at TIMESTAMP
    );
    -- rows of the 'ticks' stage: a cheap real writer for job and concurrency tests
    CREATE TABLE ticks (tag TEXT NOT NULL, i INTEGER NOT NULL, pid INTEGER,
                        created_at TIMESTAMP DEFAULT current_timestamp, PRIMARY KEY (tag, i));
    """


@migration
def m003_jobs(con) -> None:
    """Background jobs, and the 'ticks' rows that job and concurrency tests write."""
    con.execute(_JOBS)


_SEI_LOOP = """
    CREATE TABLE iterations (
        iteration INTEGER PRIMARY KEY, mode TEXT, parent INTEGER, taxonomy JSON,
        clustering_id TEXT, params JSON, status TEXT DEFAULT 'open',
        created_at TIMESTAMP DEFAULT current_timestamp, finished_at TIMESTAMP
    );
    CREATE TABLE synth_batches (
        batch_id TEXT PRIMARY KEY, iteration INTEGER, synthesizer TEXT, params JSON,
        manifest JSON, status TEXT DEFAULT 'running',
        created_at TIMESTAMP DEFAULT current_timestamp, finished_at TIMESTAMP
    );
    CREATE SEQUENCE cand_seq START 1;
    CREATE TABLE candidates (
        cand_id INTEGER PRIMARY KEY DEFAULT nextval('cand_seq'),
        slot TEXT NOT NULL UNIQUE,  -- batch/type/index: a re-run rewrites nothing twice
        batch_id TEXT NOT NULL, iteration INTEGER, type_id INTEGER, type_title TEXT,
        source_cases JSON, synthesizer TEXT, model TEXT, prompt_version TEXT, call_key TEXT,
        question TEXT, solution TEXT, answer TEXT, raw TEXT, meta JSON,
        status TEXT NOT NULL, reason TEXT, verification JSON,
        nearest TEXT, nearest_score DOUBLE, contamination JSON,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE dev_sets (
        iteration INTEGER NOT NULL, run_id TEXT NOT NULL, dataset TEXT NOT NULL,
        split TEXT NOT NULL, pid TEXT NOT NULL, half TEXT NOT NULL, seed INTEGER,
        PRIMARY KEY (iteration, dataset, split, pid)
    );
    CREATE TABLE selections (
        selection_id TEXT PRIMARY KEY, iteration INTEGER, method TEXT, params JSON,
        manifest JSON, stats JSON, status TEXT DEFAULT 'running',
        created_at TIMESTAMP DEFAULT current_timestamp, finished_at TIMESTAMP
    );
    CREATE TABLE cand_scores (
        selection_id TEXT NOT NULL, cand_id INTEGER NOT NULL, score DOUBLE,
        good_acc DOUBLE, bad_acc DOUBLE, fixed JSON, broken JSON, detail JSON,
        selected BOOLEAN DEFAULT false, rank INTEGER,
        PRIMARY KEY (selection_id, cand_id)
    );
    CREATE TABLE score_generations (
        selection_id TEXT NOT NULL, cand_id INTEGER NOT NULL, dataset TEXT NOT NULL,
        split TEXT NOT NULL, pid TEXT NOT NULL, output TEXT, pred TEXT, correct BOOLEAN,
        value DOUBLE, completion_tokens INTEGER,
        PRIMARY KEY (selection_id, cand_id, dataset, split, pid)
    );
    CREATE TABLE train_runs (
        train_id TEXT PRIMARY KEY, iteration INTEGER, mode TEXT, base_model TEXT,
        init_adapter TEXT, selection_ids JSON, data_hash TEXT, n_examples INTEGER,
        params JSON, adapter_dir TEXT, adapter_hash TEXT, status TEXT DEFAULT 'running',
        step INTEGER DEFAULT 0, total_steps INTEGER, timings JSON,
        created_at TIMESTAMP DEFAULT current_timestamp, finished_at TIMESTAMP
    );
    CREATE TABLE train_steps (
        train_id TEXT NOT NULL, step INTEGER NOT NULL, epoch DOUBLE, loss DOUBLE,
        lr DOUBLE, tokens INTEGER, seconds DOUBLE,
        PRIMARY KEY (train_id, step)
    );
    CREATE TABLE iteration_runs (
        iteration INTEGER NOT NULL, role TEXT NOT NULL, ref TEXT NOT NULL,
        PRIMARY KEY (iteration, role, ref)
    );
    """


@migration
def m004_sei_loop(con) -> None:
    """The SEI loop: iterations (frozen taxonomy snapshots), synthesized candidates,
    dev sets, selections with their per-candidate scores and generations, LoRA training
    runs with their loss curve, and which runs evaluate which iteration."""
    con.execute(_SEI_LOOP)


# schema_version n (the numbered scheme before names) = the first n steps above.
LEGACY = {n: [fn.__name__ for fn in MIGRATIONS[:n]] for n in range(len(MIGRATIONS) + 1)}


def names() -> list[str]:
    """Every migration's name, in the order they apply."""
    return [fn.__name__ for fn in MIGRATIONS]


def _has_table(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_name = ?", [table]).fetchall()[0][0])


def _legacy_version(con) -> int:
    """The number a store of the numbered scheme was left at (0: none)."""
    if not _has_table(con, "schema_version"):
        return 0
    return con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0


def applied(con) -> list[str]:
    """Names of the migrations applied to this store, read-only: from the `migrations`
    table, else from a legacy `schema_version` number. Raises on a store newer than
    this code (NewerStore)."""
    if _has_table(con, "migrations"):
        done = [r[0] for r in con.execute(
            "SELECT name FROM migrations ORDER BY applied_at, name").fetchall()]
        unknown = sorted(set(done) - set(names()))
        if unknown:
            raise NewerStore(f"has migrations this code does not know: {unknown}")
        return done
    v = _legacy_version(con)
    if v > len(MIGRATIONS):
        raise NewerStore(f"has schema v{v}, newer than this code (v{len(MIGRATIONS)})")
    return LEGACY[v]


def pending(con) -> list[Callable]:
    """The migrations not yet applied, in order."""
    done = set(applied(con))
    return [fn for fn in MIGRATIONS if fn.__name__ not in done]


@contextmanager
def _transaction(con) -> Iterator[None]:
    con.execute("BEGIN")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def migrate(con) -> list[str]:
    """Apply every pending migration, each in its own transaction with its name recorded;
    a legacy store first has its `schema_version` number recorded as names. Returns the
    names applied now."""
    if not _has_table(con, "migrations"):
        legacy = applied(con)
        with _transaction(con):
            con.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, "
                        "applied_at TIMESTAMP DEFAULT current_timestamp)")
            for name in legacy:
                con.execute("INSERT INTO migrations (name) VALUES (?)", [name])
    now = []
    for fn in pending(con):
        with _transaction(con):
            fn(con)
            con.execute("INSERT INTO migrations (name) VALUES (?)", [fn.__name__])
        now.append(fn.__name__)
    return now
