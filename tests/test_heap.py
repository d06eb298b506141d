"""keep_freed_memory: freed activations are reused without faulting pages in again
(pipeline/heap.py says why that is worth 12-16% of a training step)."""

from __future__ import annotations

import subprocess
import sys

CHURN = """
import resource, sys, torch
from pipeline.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def churn():
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(1 << 20) for _ in range(100)]  # 400 MB in 4 MB blocks, touched
    del xs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
churn()
print(churn())
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


def test_freed_blocks_are_reused_without_page_faults():
    pages = 100 * (4 << 20) // 4096
    plain, kept = _faults("plain"), _faults("keep")
    assert plain > pages / 2        # glibc's default hands the blocks back and faults them in
    assert kept < pages / 5         # kept in the heap: reused as they are
