"""keep_freed_memory: freed activations are reused without faulting pages in again
(pipeline/core/heap.py says why that is worth 12-16% of a training step), and DuckDB's trim
at each connection close stays out of a process that talks to it through StoreProcess."""

from __future__ import annotations

import subprocess
import sys

import pytest

PAGES = 100 * (4 << 20) // 4096  # what one churn touches

# Modes: plain (glibc's defaults), keep (keep_freed_memory), and with it a store write in
# between through a Store in this process (same) or through a StoreProcess (child).
CHURN = """
import resource, sys, torch
from pipeline.core.heap import keep_freed_memory
mode = sys.argv[1]
if mode != "plain":
    assert keep_freed_memory()
store = None
if mode in ("same", "child"):
    from pipeline.storage.store import Store
    from pipeline.storage.store_process import StoreProcess
    store = (StoreProcess if mode == "child" else Store)(sys.argv[2])
    store.migrate()
def churn():
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(1 << 20) for _ in range(100)]  # 400 MB in 4 MB blocks, touched
    del xs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
churn()
if store is not None:
    store.add_tick("probe", 1)  # a write: a DuckDB connection opened and closed
print(churn())
"""


def _faults(mode: str, db="") -> int:
    """Minor page faults of the second of two 400 MB churns."""
    out = subprocess.run([sys.executable, "-c", CHURN, mode, str(db)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.slow
def test_freed_blocks_are_reused_without_page_faults():
    assert _faults("plain") > PAGES / 2  # glibc's default hands the blocks back
    assert _faults("keep") < PAGES / 5   # kept in the heap: reused as they are


@pytest.mark.slow
def test_a_store_write_trims_the_heap_unless_duckdb_runs_in_a_child_process(tmp_path):
    """DuckDB calls malloc_trim when a connection closes: in the same process, the
    freed blocks go back to the kernel and fault in again; through StoreProcess (the
    heavy job's store) they stay."""
    assert _faults("same", tmp_path / "a.duckdb") > PAGES / 2
    assert _faults("child", tmp_path / "b.duckdb") < PAGES / 5


def test_store_process_forwards_calls_results_and_errors(tmp_path):
    import pytest

    from pipeline.storage.store import Store
    from pipeline.storage.store_process import StoreProcess

    db = tmp_path / "sei.duckdb"
    Store(db).migrate()
    sp = StoreProcess(db)
    try:
        sp.add_tick("probe", 42)
        assert Store(db).ticks_done("probe") == {42}    # written by the child, durable
        assert sp.ticks_done("probe") == {42}           # and read back through it
        with pytest.raises(TypeError):                  # the child's error, re-raised here
            sp.ticks_done()
        with sp.read():                                 # a no-op block, calls still work
            assert sp.ticks_done("probe") == {42}
        with sp.holding_run("r1"):                      # file locks stay in this process
            assert sp.run_held("r1") and Store(db).run_held("r1")
    finally:
        sp.close()
    assert sp._proc.returncode == 0
