"""A small HTTP server that answers like vLLM's OpenAI-compatible server, for the tests.

It serves the project's embedded base model (pipeline.target.LocalTarget) and named peft
LoRA adapters on top of it, greedily:

- `GET  /v1/models`: the base model and every loaded adapter (id, root, parent);
- `POST /v1/chat/completions`: `model` names the base or an adapter; `max_tokens` and a
  `stop` list are honoured; concurrent requests for the same model and `max_tokens` are
  answered as one batch (as vLLM batches them);
- `POST /v1/load_lora_adapter` {"lora_name", "lora_path"}: loads an adapter at run time,
  or answers 404 with --no-runtime-lora (vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING);
- `--lora-modules NAME=DIR ...`: adapters loaded at start.

Each completion request appends one JSON line to --log: {"model": the requested name,
"adapter_dir": the adapter that answered, or null for the base model}.

    python tests/vllm_like_server.py --port 8000 --log /tmp/requests.jsonl \\
        --lora-modules it1=data/adapters/it1
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import config  # noqa: E402
from pipeline.target import GenParams, LocalTarget  # noqa: E402


class Models:
    """The base model and the adapters, each a LocalTarget; generation in batches on one
    worker thread (the models are not shared between threads)."""

    def __init__(self, base_name: str, log: Path):
        self.base_name = base_name
        self.log = log
        self.targets = {base_name: LocalTarget().load()}
        self.dirs: dict[str, str | None] = {base_name: None}
        self.lock = threading.Lock()
        self.pending: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True).start()

    def load_adapter(self, name: str, path: str) -> None:
        target = LocalTarget(adapter=path).load()  # ModelError for a directory without one
        with self.lock:
            self.targets[name], self.dirs[name] = target, path

    def cards(self) -> list[dict]:
        with self.lock:
            return [{"id": n, "object": "model", "owned_by": "vllm",
                     "root": d or config.DEFAULT_MODEL, "parent": self.base_name if d else None}
                    for n, d in self.dirs.items()]

    def complete(self, name: str, messages: list[dict], max_tokens: int) -> dict:
        """Queue one request and wait for its generation."""
        done: dict = {}
        event = threading.Event()
        self.pending.put((name, messages, max_tokens, done, event))
        event.wait()
        return done

    def _work(self) -> None:
        while True:
            batch = [self.pending.get()]
            time.sleep(0.05)  # let the client's other requests in flight arrive
            while not self.pending.empty():
                batch.append(self.pending.get())
            groups: dict[tuple, list] = {}
            for req in batch:
                groups.setdefault((req[0], req[2]), []).append(req)
            for (name, max_tokens), reqs in groups.items():
                try:
                    gens = self.targets[name].generate(
                        [r[1] for r in reqs], GenParams(max_new_tokens=max_tokens))
                    outs = [{"gen": g} for g in gens]
                except Exception as e:  # the request fails, the server goes on
                    outs = [{"error": f"{type(e).__name__}: {e}"} for _ in reqs]
                for r, out in zip(reqs, outs):
                    r[3].update(out)
                    r[4].set()


class Handler(BaseHTTPRequestHandler):
    models: Models
    runtime_lora: bool

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body, content_type: str = "application/json") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        self._send(status, {"object": "error", "message": message, "type": kind,
                            "param": None, "code": status})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            return self._send(200, {"object": "list", "data": self.models.cards()})
        self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            return self._error(400, "the body is not JSON")
        path = self.path.rstrip("/")
        if path == "/v1/chat/completions":
            return self._chat(body)
        if path == "/v1/load_lora_adapter" and self.runtime_lora:
            return self._load(body)
        self._send(404, {"detail": "Not Found"})

    def _load(self, body: dict) -> None:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return self._error(400, "Both 'lora_name' and 'lora_path' must be provided.",
                               "InvalidUserInput")
        if name in self.models.dirs:
            return self._error(400, f"The lora adapter '{name}' has already been loaded.",
                               "InvalidUserInput")
        try:
            self.models.load_adapter(name, path)
        except Exception as e:
            return self._error(404, f"No adapter found for {path}: {e}", "NotFoundError")
        self._send(200, f"Success: LoRA adapter '{name}' added successfully.", "text/plain")

    def _chat(self, body: dict) -> None:
        name = body.get("model")
        if name not in self.models.dirs:
            return self._error(404, f"The model `{name}` does not exist.", "NotFoundError")
        with open(self.models.log, "a") as f:
            f.write(json.dumps({"model": name, "adapter_dir": self.models.dirs[name]}) + "\n")
        max_tokens = int(body.get("max_tokens") or 16)
        out = self.models.complete(name, body["messages"], max_tokens)
        if "error" in out:
            return self._error(400, out["error"])
        g = out["gen"]
        text, finish = g.text, "length" if g.completion_tokens >= max_tokens else "stop"
        stops = body.get("stop") or []
        cuts = [text.find(s) for s in ([stops] if isinstance(stops, str) else stops)
                if s and s in text]
        if cuts:
            text, finish = text[:min(cuts)], "stop"
        self._send(200, {
            "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion",
            "created": int(time.time()), "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": g.prompt_tokens,
                      "completion_tokens": g.completion_tokens,
                      "total_tokens": g.prompt_tokens + g.completion_tokens}})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True, help="One JSON line per completion request.")
    ap.add_argument("--served-model-name", default=config.DEFAULT_MODEL)
    ap.add_argument("--lora-modules", nargs="*", default=[], metavar="NAME=DIR")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 on a busy CPU: no spinning between threads).")
    ap.add_argument("--no-runtime-lora", action="store_true",
                    help="No /v1/load_lora_adapter (404), as vLLM without "
                         "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    models = Models(a.served_model_name, Path(a.log))
    for spec in a.lora_modules:
        name, _, path = spec.partition("=")
        models.load_adapter(name, path)
    Handler.models, Handler.runtime_lora = models, not a.no_runtime_lora
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    print(f"serving on http://{a.host}:{a.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
