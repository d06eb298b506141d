"""A local OpenAI-compatible server (llama.cpp's, from llama-cpp-python[server]) serving
the bundled SmolLM2 GGUF: the scale-out target backend, a local instructor, and the
real server the tests talk to."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

from pipeline.models.target import bundled_gguf

MODEL_ALIAS = "smollm2-135m-instruct"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(port: int, n_ctx: int = 2048, parallel: int = 1) -> list[str]:
    """The llama.cpp server's command line for the bundled GGUF."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()),
            "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(n_ctx * parallel), "--n_threads", str(os.cpu_count() or 2),
            "--verbose", "False"]


def wait_ready(base_url: str, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    """Wait until the server lists its model, then ask for one token: a llama.cpp built
    for instructions the CPU cannot run starts fine and dies on its first completion, and
    that should be said here, not surface later as a connection error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        raise TimeoutError(f"llama.cpp server at {base_url} not ready after {timeout}s")
    body = json.dumps({"model": MODEL_ALIAS, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "1+1="}]}).encode()
    req = urllib.request.Request(f"{base_url}/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=max(5.0, deadline - time.monotonic())).read()
    except OSError as e:
        died = False
        if proc is not None:
            try:
                proc.wait(5)
                died = True
            except subprocess.TimeoutExpired:
                pass
        raise RuntimeError(
            f"llama.cpp server at {base_url} failed its first completion"
            + (f" and exited with {proc.returncode} (a negative code is a signal: -11 "
               f"SIGSEGV, -4 SIGILL; rebuild llama-cpp-python as the Makefile does)"
               if died else f": {e}")) from e


@contextmanager
def local_server(port: int | None = None, n_ctx: int = 2048, log_path=None):
    """Start the server, yield its base URL (…/v1), stop it afterwards."""
    port = port or free_port()
    with running(command(port, n_ctx), port, log_path) as base:
        yield base


@contextmanager
def running(cmd: list[str], port: int, log_path=None):
    """Run an OpenAI-compatible server process on 127.0.0.1:port, yield its base URL once
    it answers, and stop it afterwards (any server binary: ours, llama.cpp's own)."""
    if log_path:
        with open(log_path, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(base, proc=proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve_forever(port: int, n_ctx: int = 2048) -> None:
    """Replace this process with the llama.cpp server."""
    os.execv(sys.executable, command(port, n_ctx))
