"""A Store whose calls run in a child process: what the job worker uses.

DuckDB calls malloc_trim whenever a connection closes, so every free page of the
process heap goes back to the kernel. A job worker writes its progress and a heartbeat
every few seconds; each time, the next training step or generation batch faulted its
~2 GB of activations back in. Measured on the demo training run: 197 tok/s per step in
a job against 243 from a direct call. With the connections in a child process, the
heavy process's heap is never trimmed.

Each public Store method is forwarded over a pipe and its result (or exception) sent
back. Kept in this process: the run locks (file locks that must die with this
process) and `read()` (a context manager; in the child each call opens its own
connection instead of sharing one).
"""

from __future__ import annotations

import multiprocessing
import threading
from contextlib import nullcontext
from pathlib import Path

from pipeline.store import Store

LOCAL = {"holding_run", "run_held", "run_lock_path", "read"}


def _serve(path: str, conn) -> None:
    """The child: run each (method, args, kwargs) on a real Store until the pipe closes
    (the worker exited or was killed)."""
    store = Store(path)
    while True:
        try:
            name, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (True, getattr(store, name)(*args, **kwargs))
        except Exception as e:
            reply = (False, e)
        try:
            conn.send(reply)
        except Exception as e:  # a result or an error that does not pickle
            conn.send((False, RuntimeError(f"store.{name}: {type(e).__name__}: {e}")))


class StoreProcess(Store):
    """Store's interface; the DuckDB work happens in a child process."""

    def __init__(self, path: str | Path | None = None):
        super().__init__(path)
        ctx = multiprocessing.get_context("spawn")  # nothing of this process's state
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(str(self.path), child), daemon=True,
                                 name="sei-store")
        self._proc.start()
        child.close()
        self._lock = threading.Lock()  # the heartbeat thread and the stage share the pipe

    def _call(self, name: str, args, kwargs):
        with self._lock:
            try:
                self._conn.send((name, args, kwargs))
                ok, value = self._conn.recv()
            except (EOFError, OSError, BrokenPipeError) as e:
                raise RuntimeError(f"the store process for {self.path} exited "
                                   f"(exit code {self._proc.exitcode})") from e
        if not ok:
            raise value
        return value

    def read(self):
        return nullcontext()

    def close(self) -> None:
        """Stop the child (it also stops by itself when this process dies)."""
        self._conn.close()
        self._proc.join(timeout=10)


def _forward(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, args, kwargs)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(Store, name).__doc__
    return method


for _name, _attr in list(vars(Store).items()):
    if callable(_attr) and not _name.startswith("_") and _name not in LOCAL:
        setattr(StoreProcess, _name, _forward(_name))
