"""A small real HTTP server on 127.0.0.1 that plays the instructor for LLM clustering,
speaking the OpenAI chat API: it reads the keyphrases out of the prompt and groups them by
their first word ("arithmetic", "repetition", "final", ...), as a taxonomist with one
rule would. Its rule is not the product's code, so a test can check that the product
turns its replies into exactly these groups.

- A "propose" prompt gets one type per first word among the sample, named
  "<word> errors".
- An "assign" prompt gets each keyphrase's type number, opening a new type (next number)
  for a first word that has none yet.
- `skip="once"`: a reply leaves out its last keyphrase unless that one was left out
  before, as a model that loses count does (the product must ask again for it);
  `skip="always"`: every reply leaves out its last keyphrase.
Every request is recorded (the prompt's kind and its keyphrases)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fault_server import completion

ITEM = re.compile(r"^\[(\d+)\] (.+)$", re.M)
TYPE = re.compile(r"^(\d+)\. (.+?) errors(?::|$)", re.M)


def word(text: str) -> str:
    return text.split()[0].lower().strip(":,")


class TaxonomistServer:
    def __init__(self, skip: str | None = None):
        self.requests: list[dict] = []
        self.skip = skip
        self._skipped: set[str] = set()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, body: dict):
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "taxonomist", "object": "model",
                                                        "created": 0, "owned_by": "me"}]})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                prompt = body["messages"][-1]["content"]
                self._send(completion(json.dumps(srv.reply(prompt))))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reply(self, prompt: str) -> dict:
        items = [(int(i), t) for i, t in ITEM.findall(prompt)]
        if "Group them into error types" in prompt:
            self.requests.append({"kind": "propose", "keyphrases": [t for _, t in items]})
            words = sorted({word(t) for _, t in items})
            return {"types": [{"name": f"{w} errors", "description": f"Keyphrases on {w}."}
                              for w in words]}
        types = {w: int(i) for i, w in TYPE.findall(prompt)}
        self.requests.append({"kind": "assign", "keyphrases": [t for _, t in items]})
        assign, new = {}, []
        for i, t in items:
            w = word(t)
            if w not in types:
                types[w] = max(types.values(), default=0) + 1
                new.append({"id": types[w], "name": f"{w} errors",
                            "description": f"Keyphrases on {w}."})
            assign[str(i)] = types[w]
        last = items[-1][1] if items else None
        if self.skip == "always" or (self.skip == "once" and last not in self._skipped):
            self._skipped.add(last)
            assign.pop(str(items[-1][0]))
        return {"assign": assign, "new_types": new}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()
