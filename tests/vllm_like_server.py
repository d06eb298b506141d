"""A small HTTP server that answers like vLLM's OpenAI-compatible server, for the tests.

It serves the project's embedded base model (pipeline.models.target.LocalTarget) and named peft
LoRA adapters on top of it, greedily:

- `GET  /v1/models`: the base model and every loaded adapter (id, root, parent);
- `POST /v1/chat/completions`: `model` names the base or an adapter; `max_tokens` and a
  `stop` list are honoured; concurrent requests for the same model and `max_tokens` are
  answered as one batch (as vLLM batches them);
- `POST /v1/completions` with `echo` and `logprobs` (as vLLM and llama.cpp): the prompt
  (text or token ids) and up to `max_tokens` (0 or more) greedy tokens, with each
  token's log-probability under the model (the prompt's first: null), computed by a
  forward pass of the real model; with --no-prompt-logprobs only the generated tokens
  carry log-probabilities (a server that gives no prompt log-probabilities);
- `POST /v1/load_lora_adapter` {"lora_name", "lora_path"}: loads an adapter at run time,
  or answers 404 with --no-runtime-lora (vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING);
- `--lora-modules NAME=DIR ...`: adapters loaded at start.

Each completion request appends one JSON line to --log: {"model": the requested name,
"adapter_dir": the adapter that answered, or null for the base model, "stop": the stop
sequences it was sent (chat), "n_messages": how many chat messages (a one-shot prompt: 3),
"first": a digest of the first message's text (a one-shot prompt's example), "path": the
endpoint}.

    python tests/vllm_like_server.py --port 8000 --log /tmp/requests.jsonl \\
        --lora-modules it1=data/adapters/it1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import config  # noqa: E402
from pipeline.models.target import GenParams, make_target  # noqa: E402


class Models:
    """The base model and the adapters, each a LocalTarget; generation in batches on one
    worker thread (the models are not shared between threads)."""

    def __init__(self, base_name: str, log: Path):
        self.base_name = base_name
        self.log = log
        # make_target: the scripted target of the tests when SEI_TEST_TARGET names it
        # (then answers are instant and made up; log-probabilities too), else the model
        self.targets = {base_name: make_target("local").load()}
        self.dirs: dict[str, str | None] = {base_name: None}
        self.lock = threading.Lock()
        self.busy = threading.Lock()  # one forward pass at a time (generation or logprobs)
        self.pending: queue.Queue = queue.Queue()
        self.delay_s = 0.0  # --delay-s
        threading.Thread(target=self._work, daemon=True).start()

    def load_adapter(self, name: str, path: str) -> None:
        # ModelError for a directory without an adapter
        target = make_target("local", adapter=path).load()
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
            time.sleep(0.05 + self.delay_s)  # the client's other requests in flight arrive
            while not self.pending.empty():
                batch.append(self.pending.get())
            groups: dict[tuple, list] = {}
            for req in batch:
                groups.setdefault((req[0], req[2]), []).append(req)
            for (name, max_tokens), reqs in groups.items():
                try:
                    with self.busy:
                        gens = self.targets[name].generate(
                            [r[1] for r in reqs], GenParams(max_new_tokens=max_tokens))
                    outs = [{"gen": g} for g in gens]
                except Exception as e:  # the request fails, the server goes on
                    outs = [{"error": f"{type(e).__name__}: {e}"} for _ in reqs]
                for r, out in zip(reqs, outs):
                    r[3].update(out)
                    r[4].set()


    def tokenizer(self):
        target = self.targets[self.base_name]
        if getattr(target, "_tok", None) is None:
            from transformers import AutoTokenizer

            from pipeline.models.target import resolve_model_path

            target._tok = AutoTokenizer.from_pretrained(resolve_model_path(target.model)[0])
        return target._tok

    def logprobs(self, name: str, prompt, max_tokens: int) -> dict:
        """Token ids of the prompt (text or ids) and `max_tokens` greedy tokens after it,
        each with its log-probability given what precedes it (the first: None)."""
        import torch

        target = self.targets[name]
        tok, model = self.tokenizer(), getattr(target, "_model", None)
        ids = list(prompt) if isinstance(prompt, list) else \
            tok(prompt, add_special_tokens=False)["input_ids"]
        n_prompt = len(ids)
        if model is None:  # the scripted target: made-up log-probabilities, no tokens added
            h = hashlib.sha256(f"{name}:{ids}".encode()).digest()
            return {"ids": ids, "logprobs": [None] + [-(h[i % 32] + 1) / 64
                                                     for i in range(1, n_prompt)],
                    "n_prompt": n_prompt}
        with self.busy, torch.inference_mode():
            lps: list[float | None] = [None]
            for step in range(max_tokens + 1):
                logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
                lp = torch.log_softmax(logits.float(), dim=-1)
                if step == 0:
                    lps += [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
                if step == max_tokens:
                    break
                nxt = int(lp[-1].argmax())
                ids.append(nxt)
                lps.append(float(lp[-1, nxt]))
                if nxt == tok.eos_token_id:
                    break
        return {"ids": ids, "logprobs": lps, "n_prompt": n_prompt}


class Handler(BaseHTTPRequestHandler):
    models: Models
    runtime_lora: bool
    prompt_logprobs: bool

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
        if path == "/v1/completions":
            return self._completions(body)
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
        msgs = body.get("messages") or []
        # "first": a digest of the first message (a one-shot prompt's example), so a test
        # can tell which candidate a scoring request was for
        first = hashlib.sha1(str(msgs[0].get("content")).encode()).hexdigest()[:12] \
            if msgs else None
        self._log(name, "chat/completions", stop=body.get("stop"), n_messages=len(msgs),
                  first=first)
        max_tokens = int(body.get("max_tokens") or 16)
        out = self.models.complete(name, body["messages"], max_tokens)
        if "error" in out:
            return self._error(400, out["error"])
        g = out["gen"]
        text, finish = g.text, "length" if g.completion_tokens >= max_tokens else "stop"
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        cuts = [(text.find(s), s) for s in stops if s and s in text]
        stop_reason = None  # vLLM: the stop string that ended the row, else null
        if cuts:
            at, stop_reason = min(cuts)
            text, finish = text[:at], "stop"
        self._send(200, {
            "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion",
            "created": int(time.time()), "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "stop_reason": stop_reason}],
            "usage": {"prompt_tokens": g.prompt_tokens,
                      "completion_tokens": g.completion_tokens,
                      "total_tokens": g.prompt_tokens + g.completion_tokens}})


    def _log(self, name: str, path: str, **more) -> None:
        with open(self.models.log, "a") as f:
            f.write(json.dumps({"model": name, "adapter_dir": self.models.dirs[name],
                                "path": path, **more}) + "\n")

    def _completions(self, body: dict) -> None:
        """vLLM's /v1/completions for one prompt, with echo and logprobs."""
        name = body.get("model")
        if name not in self.models.dirs:
            return self._error(404, f"The model `{name}` does not exist.", "NotFoundError")
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            if len(prompt) != 1:
                return self._error(400, "this test server takes one prompt per request")
            prompt = prompt[0]
        if not prompt:
            return self._error(400, "a prompt is required")
        self._log(name, "completions")
        max_tokens = int(body.get("max_tokens", 16) or 0)
        echo, want = bool(body.get("echo")), body.get("logprobs") is not None
        try:
            out = self.models.logprobs(name, prompt, max_tokens)
        except Exception as e:
            return self._error(400, f"{type(e).__name__}: {e}")
        tok = self.models.tokenizer()
        ids, lps, n = out["ids"], out["logprobs"], out["n_prompt"]
        first = 0 if echo else n
        shown = ids[first:]
        pieces = [tok.decode([t]) for t in shown]
        logprobs = None
        if want:
            # without prompt log-probabilities, only the generated tokens carry them
            skip = n - first if echo and not self.prompt_logprobs else 0
            shown_lp, vals = pieces[skip:], lps[first + skip:]
            offsets, at = [], sum(len(p) for p in pieces[:skip])
            for p in shown_lp:
                offsets.append(at)
                at += len(p)
            logprobs = {"tokens": shown_lp, "token_logprobs": vals,
                        "top_logprobs": [None if v is None else {p: v}
                                         for p, v in zip(shown_lp, vals)],
                        "text_offset": offsets}
        self._send(200, {
            "id": f"cmpl-{time.time_ns()}", "object": "text_completion",
            "created": int(time.time()), "model": name,
            "choices": [{"index": 0, "text": "".join(pieces), "logprobs": logprobs,
                         "finish_reason": "length" if len(ids) - n >= max_tokens else "stop"}],
            "usage": {"prompt_tokens": n, "completion_tokens": len(ids) - n,
                      "total_tokens": len(ids)}})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True, help="One JSON line per completion request.")
    ap.add_argument("--served-model-name", default=config.DEFAULT_MODEL)
    ap.add_argument("--lora-modules", nargs="*", default=[], metavar="NAME=DIR")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 on a busy CPU: no spinning between threads).")
    ap.add_argument("--delay-s", type=float, default=0.0,
                    help="Seconds added to each batch: a server slowed by other clients.")
    ap.add_argument("--no-runtime-lora", action="store_true",
                    help="No /v1/load_lora_adapter (404), as vLLM without "
                         "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.")
    ap.add_argument("--no-prompt-logprobs", action="store_true",
                    help="/v1/completions gives log-probabilities of generated tokens only "
                         "(echo or not): a server without prompt log-probabilities.")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    models = Models(a.served_model_name, Path(a.log))
    models.delay_s = a.delay_s
    for spec in a.lora_modules:
        name, _, path = spec.partition("=")
        models.load_adapter(name, path)
    Handler.models, Handler.runtime_lora = models, not a.no_runtime_lora
    Handler.prompt_logprobs = not a.no_prompt_logprobs
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    print(f"serving on http://{a.host}:{a.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
