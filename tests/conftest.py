"""Shared fixtures. Everything is real: real DuckDB files, the real SmolLM2 model, a real
llama.cpp server on 127.0.0.1, real UMAP/HDBSCAN. Nothing downloads at run time."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEI_INSTRUCTOR_MODEL"):
    os.environ.pop(var, None)  # the offline analyzer is the default under test
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: torch at one thread each (and in every process they start),
    # or each spins threads against the other
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    # the session stores' builder (below) is the suite's critical path: the workers yield
    # the CPU to it, and fill what it leaves
    os.nice(5)
import tempfile  # noqa: E402

# A user's saved app settings must not leak into tests.
os.environ["SEI_SETTINGS"] = os.path.join(tempfile.mkdtemp(prefix="sei-settings-"), "settings.json")

import shutil
from pathlib import Path

import pytest

from pipeline.core.config import ROOT
from pipeline.storage.store import Store

BENCH = ROOT.parent / "shared" / "data" / "benchmarks"
ARTIFACTS = ROOT / "artifacts"


SCRIPTED = Path(__file__).resolve().parent / "scripted_target.py"


def wait_until(cond, timeout: float = 600, poll: float = 0.2, what: str = "condition"):
    """cond()'s first true value, polled; an AssertionError naming `what` after `timeout`
    seconds (a wait on the store or a process, never a sleep a test relies on)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def scripted(monkeypatch) -> Path:
    """The tests' scripted target instead of the model, for this test and every process it
    starts (tests/scripted_target.py): instant, right on half of the problems. For tests
    whose subject is the plumbing around the model, not its answers."""
    monkeypatch.setenv("SEI_TEST_TARGET", str(SCRIPTED))
    monkeypatch.setenv("SCRIPTED_DELAY_S", "0")
    return SCRIPTED


@pytest.fixture
def scripted_slow(scripted, monkeypatch) -> Path:
    """The scripted target at 0.25 s a row: a kill or a cancel lands mid-run, reliably."""
    monkeypatch.setenv("SCRIPTED_DELAY_S", "0.25")
    return scripted


def _cache_key() -> str:
    """What a session store depends on: the pipeline's code, these fixtures, the scripted
    target and the model's files. A change to any of them builds the stores anew."""
    import hashlib

    from pipeline.core import config

    if os.environ.get("SEI_TEST_STORE_KEY"):
        # pinned by hand: a deliberate break of pipeline/ tested on the stores built before
        return os.environ["SEI_TEST_STORE_KEY"]
    from importlib.metadata import version

    h = hashlib.sha256()
    # the libraries whose numbers a store holds (generation, training, UMAP, HDBSCAN)
    for lib in ("torch", "transformers", "peft", "umap-learn", "hdbscan", "scikit-learn",
                "duckdb", "sentence-transformers"):
        try:
            h.update(f"{lib}={version(lib)}".encode())
        except Exception:  # noqa: BLE001  (not installed: its absence is the key's)
            h.update(f"{lib}=-".encode())
    # the benchmark files the looped store reads, by size and time (not their bytes: GBs)
    if BENCH.is_dir():
        for f in sorted(p for p in BENCH.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(BENCH)}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    files = sorted((ROOT / "pipeline").rglob("*.py")) + sorted(
        (ROOT / "pipeline" / "prompts").glob("*")) + [
        Path(__file__), SCRIPTED, Path(__file__).with_name("session_stores.py")]
    models = config.models_dir()
    if models.is_dir():
        files += sorted(p for p in models.rglob("*") if p.is_file() and p.suffix != ".lock")
    for f in files:
        h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
        h.update(f.read_bytes() if f.stat().st_size < 1 << 20 else
                 f"{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]


# Session stores are kept per machine, not per clone, like pip's wheel cache: a second clone
# of the same code (CI, a fresh checkout) finds them built. SEI_TEST_CACHE moves them.
STORE_CACHE = Path(os.environ.get("SEI_TEST_CACHE") or Path(
    os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sei-studio" / "test-stores")
KEEP_BUILDS = 3  # per store name: older keys (older code) are removed after a build


def cached_store(name: str, dest: Path | None = None) -> Path:
    """The session store `name` (BUILDERS): built once per key (_cache_key) on this machine
    into STORE_CACHE, by whichever process asks first (the builder that
    `pytest_collection_modifyitems` starts, or a worker); the others wait for it. Its
    store is copied to `dest` if given; returns the path of the copy, or of the cached
    store. The builder may leave adapters beside the store, which the store names by path.
    Delete STORE_CACHE to build them anew."""
    from filelock import FileLock

    root = STORE_CACHE
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{name}-{_cache_key()}"
    with FileLock(str(root / f"{name}.lock")):
        if not (folder / ".complete").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that was cut short
            folder.mkdir()
            BUILDERS[name](folder)
            (folder / ".complete").touch()
            old = sorted((p for p in root.glob(f"{name}-*") if (p / ".complete").exists()),
                         key=lambda p: (p / ".complete").stat().st_mtime)[:-KEEP_BUILDS]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        if dest is None:
            return folder / "sei.duckdb"
        shutil.copy(folder / "sei.duckdb", dest)
    return dest


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
    from pipeline.models.target import LocalTarget

    return LocalTarget().load()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """A real llama.cpp OpenAI-compatible server serving the bundled GGUF: one per module
    (an idle llama-cpp-python server still takes 10-20% of a core, so none is left running
    for the rest of the session)."""
    from pipeline.models.serve import local_server

    log = tmp_path_factory.mktemp("llama") / "server.log"
    with local_server(log_path=log) as base_url:
        yield base_url


# A store with demo data and a real extraction by the real model: the bad cases that the
# analysis, clustering and dashboard tests work on. Built once per session.
PREPARED_N = 48
PREPARED_TOKENS = 160
PREPARED_MIX = {1: 0.4, 2: 0.3, 3: 0.3}


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """One Streamlit app for every browser test of this session (of this xdist worker),
    on the store at the path it yields (each test puts its own there: see test_browser's
    `server`). Its job processes answer with the scripted target, wrong on 4 of 5 and
    0.05 s a row: the browser tests' subject is the app, not the model's numbers."""
    import subprocess
    import sys
    import time
    import urllib.request

    from pipeline.models.serve import free_port

    d = tmp_path_factory.mktemp("app")
    db = d / "sei.duckdb"
    port = free_port()
    env = dict(os.environ, SEI_DB=str(db), SEI_SETTINGS=str(d / "settings.json"),
               SEI_TEST_TARGET=str(SCRIPTED), SCRIPTED_DELAY_S="0.05", SCRIPTED_RIGHT="0.2")
    log = open(d / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "Overview.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError((d / "streamlit.log").read_text()[-3000:])
        time.sleep(0.5)
    yield url, db
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="session")
def chromium():
    """One headless Debian Chromium for every browser test of this session."""
    sync = pytest.importorskip("playwright.sync_api")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--headless", "--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking"])
        yield b
        b.close()


def _build_prepared(folder: Path) -> None:
    from pipeline.models.target import GenParams
    from pipeline.problems.data import import_demo
    from pipeline.stages.extract import extract

    s = Store(folder / "sei.duckdb")
    # harder than the default mix, so that the bad cases span several error types
    import_demo(s, 200, 50, seed=0, mix=PREPARED_MIX)
    extract(s, "demo", "train", limit=PREPARED_N,
            params=GenParams(max_new_tokens=PREPARED_TOKENS, batch_size=16))


@pytest.fixture(scope="session")
def prepared_db(tmp_path_factory) -> Path:
    return cached_store("prepared", tmp_path_factory.mktemp("prepared") / "sei.duckdb")


@pytest.fixture
def prepared(prepared_db, tmp_path, monkeypatch) -> Store:
    """A private copy of the prepared store, free to modify."""
    db = tmp_path / "sei.duckdb"
    shutil.copy(prepared_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    return Store(db)


def _build_clustered(folder: Path) -> None:
    """The prepared store, analysed offline and clustered (real MiniLM, UMAP, HDBSCAN)."""
    from pipeline.stages.analyze import analyze_bad_cases
    from pipeline.stages.cluster import ClusterParams, cluster

    shutil.copy(cached_store("prepared"), folder / "sei.duckdb")
    s = Store(folder / "sei.duckdb")
    analyze_bad_cases(s, instructor="offline")
    cluster(s, ClusterParams(min_cluster_size=4))


@pytest.fixture(scope="session")
def clustered_db(prepared_db, tmp_path_factory) -> Path:
    return cached_store("clustered", tmp_path_factory.mktemp("clustered") / "sei.duckdb")


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

    from pipeline.loop import jobs

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
                 "clustered_db", "looped_db"}


SERIAL_MODULES = {"test_concurrency", "test_heap", "test_faults"}
_RANK = {None: 0, "prepared": 1, "clustered": 2, "looped": 3}


def _needs(item) -> str | None:
    """The last-built session store a test needs, if any."""
    names = set(getattr(item, "fixturenames", ()))
    got = [STORE_FIXTURES[n] for n in names if n in STORE_FIXTURES]
    return max(got, key=_RANK.get) if got else None


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Slow marks; then the order: tests that need no session store first, then those on
    the prepared, clustered and looped stores (built in that order while the first run)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        # tests that kill processes, race writers or measure memory run on one worker,
        # one after another (`--dist loadgroup`), never two of them side by side
        if item.module.__name__ in SERIAL_MODULES or "kill" in item.name:
            item.add_marker(pytest.mark.xdist_group("serial"))
        elif "llama_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("llama"))  # one server, not one a worker


class _Order:
    """After every deselection (-m, -k): the order, and the store builder if a selected
    test needs a store."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        items.sort(key=lambda item: _RANK[_needs(item)])
        if os.environ.get("PYTEST_XDIST_WORKER") == "gw0" and any(map(_needs, items)):
            _start_builder()


def pytest_configure(config):
    config.pluginmanager.register(_Order(), "sei-order")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test's start and end on its worker's clock, and the CPU seconds it used (its
    worker's and those of the processes it started and reaped), for tests/durations.py:
    where a worker sat idle, when the last one finished, which tests cost the most CPU
    (a test's wall time on a loaded machine says little about what it costs)."""
    import resource
    import time

    def cpu() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
            resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    t0, c0 = time.time(), cpu()
    yield
    reports = ROOT / ".cache" / "test-reports"
    reports.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(reports / f"timeline-{worker}.tsv", "a") as f:
        f.write(f"{t0:.3f}\t{time.time():.3f}\t{item.nodeid}\t{cpu() - c0:.2f}\n")


# The one real loop of the suite (the real model, real LoRA): one SEI iteration through
# `sei iterate --config` over two train sets (the demo's and GSM8K's, from ../shared) and
# two evaluation sets (one in-domain, one out-of-domain), both arms (sei and random),
# then the SEI adapter's rerun of both train sets. Every test that needs a looped store
# asserts on a copy of it; the other loops of the suite use the scripted target.
LOOP_CONFIG = """\
train_sets = ["demo:train", "gsm8k:train"]
eval_sets = ["demo:test", "svamp:test"]
limit_train = 16
eval_limit = 8
max_new_tokens = 96
[cluster]
min_cluster_size = 3
[synthesize]
budget = 24
per_call = 6
synthesizer = "offline"
[select]
n_good = 2
n_bad = 2
limit = 6
top = 3
max_new_tokens = 96
[train]
epochs = 1
batch_size = 2
max_length = 256
"""


def run_loop_config(db: Path, data_dir: Path, config_file: Path):
    """`sei iterate --config config_file` on db, adapters under data_dir: the looped
    store's own command (a rerun of it must resume). Returns click's result."""
    from click.testing import CliRunner

    from pipeline.core import config
    from pipeline.shells.cli import cli

    env = {"SEI_MODELS_DIR": str(config.models_dir()), "SEI_DATA_DIR": str(data_dir),
           "SEI_BENCHMARKS_DIR": str(BENCH), "SEI_DB": str(db)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return CliRunner().invoke(cli, ["--db", str(db), "iterate", "--config",
                                        str(config_file)], catch_exceptions=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _build_looped(folder: Path) -> None:
    db = folder / "sei.duckdb"
    shutil.copy(cached_store("prepared"), db)
    (folder / "exp.toml").write_text(LOOP_CONFIG)
    r = run_loop_config(db, folder, folder / "exp.toml")
    (folder / "iterate.out").write_text(r.output)
    (folder / "iterate.json").write_text(r.stdout)  # the command's result alone
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="session")
def looped_db(prepared_db, bench, tmp_path_factory) -> Path:
    return cached_store("looped", tmp_path_factory.mktemp("looped") / "sei.duckdb")


BUILDERS = {"prepared": _build_prepared, "clustered": _build_clustered,
            "looped": _build_looped}
STORE_FIXTURES = {"prepared": "prepared", "prepared_db": "prepared", "clustered": "clustered",
                  "clustered_db": "clustered", "looped_db": "looped"}


_builder: list = []


def _start_builder() -> None:
    """Under xdist, the first worker starts one process that builds the session stores
    (tests/session_stores.py) while the workers run the tests that need none of them
    (ordered first, below); a worker that needs a store before it is built waits for it."""
    import subprocess
    import sys

    log = ROOT / ".cache" / "test-reports" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # at the normal priority, on both cores: not a worker (conftest, imported by the
    # builder, would make a process that looks like one nice again, at one thread)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
           and not k.startswith("PYTEST_XDIST")}
    def unnice() -> None:  # the worker runs at nice 5; the builder goes back to 0 (root)
        try:
            os.nice(-os.nice(0))
        except OSError:
            pass  # not allowed to raise its priority: it runs as nice as the workers

    # in the tests' own session: the kernel's autogroup scheduling gives each session one
    # share of the CPU, and inside it nice counts, so the builder at 0 beside workers at 5
    # gets most of the session's share (in a session of its own it got one share among
    # the job, app and browser sessions: prepared took 418 s in run 11, 129 s in run 10)
    _builder.append(subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("session_stores.py"))],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        preexec_fn=unnice, process_group=0))  # its own group (killed whole), not session


def pytest_sessionfinish(session):
    import signal

    for p in _builder:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # it leads its own group (its store process)
            except ProcessLookupError:
                pass


def three_types(store: Store) -> list:
    """The visible types after half of the largest is split off: three at least, whatever
    HDBSCAN makes of the prepared store (it has made two or three as answer extraction and
    the offline analyzer changed). The split is an edit like any other."""
    from pipeline.analysis import taxonomy

    big = taxonomy.current(store).visible_types()[0]
    taxonomy.split(store, big.members[:len(big.members) // 2], "split off for this test")
    ts = taxonomy.current(store).visible_types()
    assert len(ts) >= 3
    return ts
