"""Build the suite's session stores (prepared, clustered, looped) into conftest.STORE_CACHE
(per machine: ~/.cache/sei-studio/test-stores by default) ahead of the tests that need
them: `pytest -n 2` starts this in the background (see tests/conftest.py); run by hand,
it fills the cache for a later run."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import conftest  # noqa: E402  (sets the offline environment first)

for name in ("prepared", "clustered", "looped"):
    t0 = time.perf_counter()
    path = conftest.cached_store(name)
    print(f"{name}: {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
