"""Shared fixtures. Everything is real: real DuckDB files, the real SmolLM2 model, a real
llama.cpp server on 127.0.0.1, real UMAP/HDBSCAN. Nothing downloads at run time."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEI_INSTRUCTOR_MODEL"):
    os.environ.pop(var, None)  # the offline analyzer is the default under test
import tempfile  # noqa: E402

# A user's saved app settings must not leak into tests.
os.environ["SEI_SETTINGS"] = os.path.join(tempfile.mkdtemp(prefix="sei-settings-"), "settings.json")

import shutil
from pathlib import Path

import pytest

from pipeline.config import ROOT
from pipeline.store import Store

BENCH = ROOT.parent / "shared" / "data" / "benchmarks"
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    db = tmp_path / "sei.duckdb"
    monkeypatch.setenv("SEI_DB", str(db))
    return Store(db)


@pytest.fixture(scope="session")
def bench() -> Path:
    assert BENCH.is_dir(), f"benchmark data missing at {BENCH} (../shared beside the clone)"
    return BENCH


@pytest.fixture(scope="session")
def target():
    from pipeline.target import LocalTarget

    return LocalTarget().load()


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """A real llama.cpp OpenAI-compatible server serving the bundled GGUF."""
    from pipeline.serve import local_server

    log = tmp_path_factory.mktemp("llama") / "server.log"
    with local_server(log_path=log) as base_url:
        yield base_url


# A store with demo data and a real extraction by the real model: the bad cases that the
# analysis, clustering and dashboard tests work on. Built once per session.
PREPARED_N = 48
PREPARED_TOKENS = 160
PREPARED_MIX = {1: 0.4, 2: 0.3, 3: 0.3}


@pytest.fixture(scope="session")
def prepared_db(tmp_path_factory) -> Path:
    from pipeline.data import import_demo
    from pipeline.extract import extract
    from pipeline.target import GenParams

    db = tmp_path_factory.mktemp("prepared") / "sei.duckdb"
    # For local iteration only: SEI_TEST_CACHE=dir reuses a prepared store between runs.
    cache = Path(os.environ["SEI_TEST_CACHE"]) / "prepared.duckdb" \
        if os.environ.get("SEI_TEST_CACHE") else None
    if cache and cache.exists():
        shutil.copy(cache, db)
        return db
    s = Store(db)
    # harder than the default mix, so that the bad cases span several error types
    import_demo(s, 200, 50, seed=0, mix=PREPARED_MIX)
    extract(s, "demo", "train", limit=PREPARED_N,
            params=GenParams(max_new_tokens=PREPARED_TOKENS, batch_size=16))
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(db, cache)
    return db


@pytest.fixture
def prepared(prepared_db, tmp_path, monkeypatch) -> Store:
    """A private copy of the prepared store, free to modify."""
    db = tmp_path / "sei.duckdb"
    shutil.copy(prepared_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    return Store(db)


@pytest.fixture(scope="session")
def clustered_db(prepared_db, tmp_path_factory) -> Path:
    """The prepared store, analysed offline and clustered (real MiniLM, UMAP, HDBSCAN)."""
    from pipeline.cluster import ClusterParams, cluster
    from pipeline.keyphrases import analyze_bad_cases

    db = tmp_path_factory.mktemp("clustered") / "sei.duckdb"
    shutil.copy(prepared_db, db)
    s = Store(db)
    analyze_bad_cases(s, instructor="offline")
    cluster(s, ClusterParams(min_cluster_size=4))
    return db


@pytest.fixture
def clustered(clustered_db, tmp_path, monkeypatch) -> Store:
    db = tmp_path / "sei.duckdb"
    shutil.copy(clustered_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    return Store(db)


@pytest.fixture(autouse=True)
def _own_settings_and_no_stray_jobs(tmp_path, monkeypatch):
    """Each test gets its own settings file, and every job process it spawned (with its
    whole session) is killed when it ends, whatever the outcome."""
    import signal

    from pipeline import jobs

    monkeypatch.setenv("SEI_SETTINGS", str(tmp_path / "settings.json"))
    before = {id(p) for p in jobs._children}
    yield
    for p in list(jobs._children):
        if id(p) in before or p.poll() is not None:
            continue
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


# Fixtures that load the real target model, start a server or build a prepared store:
# any test using one is slow (`make test-fast` runs `-m "not slow"`).
SLOW_FIXTURES = {"target", "llama_server", "prepared", "prepared_db", "clustered",
                 "clustered_db"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def looped_db(clustered_db, tmp_path_factory) -> Path:
    """The clustered store after one tiny but complete SEI iteration through `iterate`:
    base evaluation, synthesis, one-shot and random selection, LoRA training, evaluation."""
    from pipeline.loop import LoopParams, iterate

    d = tmp_path_factory.mktemp("looped")
    db = d / "sei.duckdb"
    shutil.copy(clustered_db, db)
    from pipeline import config

    old = os.environ.get("SEI_DATA_DIR")
    os.environ.setdefault("SEI_MODELS_DIR", str(config.models_dir()))  # the model stays put
    os.environ["SEI_DATA_DIR"] = str(d)  # adapters beside this store
    try:
        out = iterate(Store(db), LoopParams(
            iterations=1, limit_train=PREPARED_N, max_new_tokens=PREPARED_TOKENS,
            eval_sets=["demo/test"], eval_limit=8,
            synthesize={"budget": 24, "per_call": 8, "synthesizer": "offline"},
            select={"n_good": 2, "n_bad": 2, "limit": 6, "top": 3, "max_new_tokens": 96},
            train={"epochs": 1, "batch_size": 2, "max_length": 256}))
    finally:
        if old is None:
            os.environ.pop("SEI_DATA_DIR", None)
        else:
            os.environ["SEI_DATA_DIR"] = old
    (d / "iterate.json").write_text(__import__("json").dumps(out, default=str))
    return db


def three_types(store: Store) -> list:
    """The visible types after half of the largest is split off: three at least, whatever
    HDBSCAN makes of the prepared store (it has made two or three as answer extraction and
    the offline analyzer changed). The split is an edit like any other."""
    from pipeline import taxonomy

    big = taxonomy.current(store).visible_types()[0]
    taxonomy.split(store, big.members[:len(big.members) // 2], "split off for this test")
    ts = taxonomy.current(store).visible_types()
    assert len(ts) >= 3
    return ts
