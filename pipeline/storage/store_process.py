"""A Store whose calls run in a child process: what job workers and the CLI's heavy
stages use.

DuckDB calls malloc_trim whenever a connection closes, so every free page of the
process heap goes back to the kernel. A job worker writes its progress and a heartbeat
every few seconds; each time, the next training step or generation batch faulted its
activations back in. Measured on the demo training run: 197 tok/s per step in a job
against 243 from a direct call; 225 with the connections in a child process, whose
trims leave the heavy process's heap alone.

Each public Store method is forwarded as a pickled (name, args, kwargs) over a pipe and
its result (or exception) sent back. The child is a plain `python -m
pipeline.storage.store_process` (not multiprocessing, whose spawn re-runs the parent's main
script). Kept in this process: the run locks (file locks that must die with it) and
`read()` (a context manager; in the child each call opens its own connection).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

from pipeline.core import config
from pipeline.storage.store import Store

LOCAL = {"holding_run", "hold_run", "release_run", "run_held", "run_lock_path", "read"}


def serve(path: str, rfd: int, wfd: int) -> None:
    """The child: run each request on a real Store until the pipe closes (the parent
    exited or was killed)."""
    store = Store(path)
    with os.fdopen(rfd, "rb") as rx, os.fdopen(wfd, "wb") as tx:
        while True:
            try:
                name, args, kwargs = pickle.load(rx)
            except (EOFError, OSError):
                return
            try:
                reply = (True, getattr(store, name)(*args, **kwargs))
            except Exception as e:
                reply = (False, e)
            try:
                data = pickle.dumps(reply)
            except Exception as e:  # a result or an error that does not pickle
                data = pickle.dumps((False, RuntimeError(f"store.{name}: {type(e).__name__}: {e}")))
            try:
                tx.write(data)
                tx.flush()
            except (BrokenPipeError, OSError):
                return


class StoreProcess(Store):
    """Store's interface; the DuckDB work happens in a child process."""

    def __init__(self, path: str | Path | None = None):
        super().__init__(path)
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        self._proc = subprocess.Popen(
            # the absolute path: the child runs in the repository, and a relative --db
            # there made a new, empty store beside the code
            [sys.executable, "-m", "pipeline.storage.store_process", str(self.path.absolute()),
             str(to_child), str(from_child)],
            pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL, cwd=str(config.ROOT))
        os.close(to_child)
        os.close(from_child)
        self._tx = os.fdopen(from_parent, "wb")
        self._rx = os.fdopen(to_parent, "rb")
        self._lock = threading.Lock()  # the heartbeat thread and the stage share the pipe

    def _call(self, name: str, args, kwargs):
        with self._lock:
            try:
                self._tx.write(pickle.dumps((name, args, kwargs)))
                self._tx.flush()
                ok, value = pickle.load(self._rx)
            except (EOFError, OSError) as e:
                raise RuntimeError(f"the store process for {self.path} exited "
                                   f"(exit code {self._proc.poll()})") from e
        if not ok:
            raise value
        return value

    def read(self):
        return nullcontext()

    def close(self) -> None:
        """Stop the child (it also stops by itself when this process dies)."""
        self._tx.close()
        self._rx.close()
        self._proc.wait(timeout=30)


def _forward(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, args, kwargs)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(Store, name).__doc__
    return method


for _name, _attr in list(vars(Store).items()):
    if callable(_attr) and not _name.startswith("_") and _name not in LOCAL:
        setattr(StoreProcess, _name, _forward(_name))


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
