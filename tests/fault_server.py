"""A small real HTTP server on 127.0.0.1 that speaks just enough of the OpenAI chat API to
misbehave on demand: the faults a real server will not produce when asked (429, a body
cut mid-JSON, a reply without `choices`, a 401 echoing the Authorization header, slow
replies). The fault is chosen per request by a marker `FAULT:<name>` in the prompt, so
one analysis over several bad cases meets several faults; `heal()` makes every later
request succeed. Each request is recorded (path, Authorization header, fault)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = {"keyphrases": ["multiplication error in the second step"]}
MARK = re.compile(r"FAULT:([a-z0-9_]+)")
MAX_REQUESTS = 5000  # a bound on the loop: the server stops answering after this many


def completion(content, **extra) -> dict:
    return dict({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}},
                **extra)


class FaultServer:
    def __init__(self, slow_s: float = 3.0):
        self.requests: list[dict] = []
        self.healed = False
        self.slow_s = slow_s
        self._stop = threading.Event()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes, ctype="application/json", headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # models.list, for ping()
                self._send(200, json.dumps({"object": "list", "data": [
                    {"id": "m", "object": "model", "created": 0, "owned_by": "me"}]}).encode())

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                text = json.dumps(body.get("messages", []))
                m = MARK.search(text)
                fault = None if srv.healed or not m or m.group(1) == "ok" else m.group(1)
                srv.requests.append({"path": self.path, "fault": fault,
                                     "auth": self.headers.get("Authorization")})
                if len(srv.requests) > MAX_REQUESTS:
                    return self._send(503, b'{"error": "request budget spent"}')
                srv.respond(self, fault)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up (timeout) leaves a broken pipe: expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, h, fault: str | None) -> None:
        ok = json.dumps(completion(json.dumps(GOOD))).encode()
        if fault is None:
            return h._send(200, ok)
        if fault == "429":
            return h._send(429, b'{"error": {"message": "rate limited"}}',
                           headers={"Retry-After": "0"})
        if fault == "500":
            return h._send(500, b'{"error": {"message": "boom"}}')
        if fault == "nochoices":
            return h._send(200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
        if fault == "emptychoices":
            return h._send(200, json.dumps(completion(None, choices=[])).encode())
        if fault == "nullcontent":
            return h._send(200, json.dumps(completion(None)).encode())
        if fault == "cutbody":  # a complete HTTP response whose JSON body is cut
            return h._send(200, ok[:len(ok) // 2])
        if fault == "cutcontent":  # a valid completion whose content is cut JSON
            return h._send(200, json.dumps(completion('{"keyphrases": ["carry err')).encode())
        if fault == "deepcontent":
            return h._send(200, json.dumps(completion("[" * 100000 + "]" * 100000)).encode())
        if fault == "wrongshape":
            return h._send(200, json.dumps(completion('{"keyphrases": "not a list"}')).encode())
        if fault == "html":
            return h._send(200, b"<html>gateway says hi</html>", ctype="text/html")
        if fault == "echo401":  # an endpoint that echoes the Authorization header
            auth = h.headers.get("Authorization", "")
            return h._send(401, json.dumps({"error": {"message": f"invalid key: {auth}",
                                                      "headers": {"Authorization": auth}}
                                            }).encode())
        if fault == "slow":
            self._stop.wait(self.slow_s)
            return h._send(200, ok)
        return h._send(400, json.dumps({"error": {"message": f"unknown fault {fault}"}}).encode())

    def heal(self) -> None:
        self.healed = True

    def faults(self) -> list[str | None]:
        return [r["fault"] for r in self.requests]

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def make_bad_cases(store, questions: list[str], run_id: str = "extract-faults") -> list[int]:
    """A run whose every item is a wrong answer: bad cases for an analysis to work on,
    written through the store's own methods. Returns their case ids in order."""
    store.insert_problems([{"dataset": "f", "split": "s", "pid": f"p{i:03d}", "question": q,
                            "answer": "60", "solution": "12 * 5 = 60\n#### 60",
                            "source_line": i + 1} for i, q in enumerate(questions)])
    store.upsert_run({"run_id": run_id, "kind": "extract", "model_id": "m", "dataset": "f",
                      "split": "s", "n_items": len(questions),
                      "gen_params": {"max_new_tokens": 64}})
    store.record_generations(run_id, [
        {"dataset": "f", "split": "s", "pid": f"p{i:03d}", "output": "12 * 5 = 65. #### 65",
         "pred": "65", "correct": False, "judge": {}} for i in range(len(questions))])
    store.finish_run(run_id)
    return [b["case_id"] for b in store.bad_cases(run_id)]
