"""Throughput over OpenAI-compatible servers, the likelihood proxy over a server, and the
local backend's device and dtype (issue 25, items 2 and 4).

Faults come from real HTTP/1.1 servers on 127.0.0.1 (`Faults`: a plan of replies per
request, and a record of bodies, TCP connections and requests in flight); the proxy is
compared against tests/vllm_like_server.py, a real process running the real model."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from pipeline.core import config
from pipeline.models.target import (
    ANSWER_STOPS,
    BackendParams,
    GenParams,
    ModelError,
    OpenAITarget,
    make_target,
)
from pipeline.shells.cli import cli

BASE = config.DEFAULT_MODEL
ASK = [{"role": "user", "content": "What is 2 + 2?"}]


class Faults:
    """A real keep-alive HTTP server whose replies to POST /v1/chat/completions follow
    `plan`, one step per request: a status (429 and 503 with `retry_after` as their
    Retry-After header, if set), or "drop" (the connection closed without a reply); after
    the plan, 200 with `text`. Records each body, the TCP connections (client ports) and
    the most requests in flight at once."""

    def __init__(self, plan=(), delay: float = 0.0, text: str = "2 + 2 = 4. The answer is 4.",
                 retry_after: str | None = None):
        self.plan, self.delay, self.text, self.retry_after = list(plan), delay, text, retry_after
        self.bodies: list[dict] = []
        self.conns: set[tuple] = set()
        self.inflight = self.max_inflight = 0
        self.replies: list[tuple[float, int | str]] = []   # (time, status or "drop")
        self.stop_reply = None  # (text, stop_reason) for a request that sends `stop`
        lock = threading.Lock()
        f = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    f.bodies.append(body)
                    f.conns.add(self.client_address)
                    f.inflight += 1
                    f.max_inflight = max(f.max_inflight, f.inflight)
                    step = f.plan.pop(0) if f.plan else 200
                    f.replies.append((time.monotonic(), step))
                try:
                    time.sleep(f.delay)
                    if step == "drop":
                        self.close_connection = True
                        return
                    text, reason = f.text, None
                    if body.get("stop") and f.stop_reply:
                        text, reason = f.stop_reply
                    out = {"choices": [{"index": 0, "finish_reason": "stop",
                                        "stop_reason": reason,
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": 9}} \
                        if step == 200 else {"object": "error", "code": step,
                                             "message": f"status {step} as planned"}
                    data = json.dumps(out).encode()
                    self.send_response(step)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if step in (429, 503) and f.retry_after is not None:
                        self.send_header("Retry-After", f.retry_after)
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with lock:
                        f.inflight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faults():
    made = []

    def make(*a, **kw) -> Faults:
        made.append(Faults(*a, **kw))
        return made[-1]
    yield make
    for f in made:
        f.close()


def _target(url: str, **kw) -> OpenAITarget:
    return OpenAITarget(model=BASE, base_url=url, **dict({"backoff_s": 0.05}, **kw))


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_503_twice_then_ok_is_retried(faults):
    f = faults([503, 503])
    g = _target(f.url).generate([ASK], GenParams())
    assert g[0].error is None and g[0].text.endswith("The answer is 4.")
    assert [s for _, s in f.replies] == [503, 503, 200]
    # exponential backoff: 0.05 s, then 0.1 s
    waits = [b[0] - a[0] for a, b in zip(f.replies, f.replies[1:])]
    assert waits[0] >= 0.05 and waits[1] >= 0.1, waits


@pytest.mark.slow
def test_429_waits_as_retry_after_says(faults):
    f = faults([429], retry_after="1")
    t0 = time.monotonic()
    g = _target(f.url, backoff_s=0.01).generate([ASK], GenParams())
    assert g[0].error is None and [s for _, s in f.replies] == [429, 200]
    assert f.replies[1][0] - f.replies[0][0] >= 0.95  # the header's second, not 0.01 s
    assert time.monotonic() - t0 < 5


@pytest.mark.slow
def test_a_dropped_connection_is_retried(faults):
    f = faults(["drop"])
    g = _target(f.url).generate([ASK], GenParams())
    assert g[0].error is None and [s for _, s in f.replies] == ["drop", 200]


@pytest.mark.slow
def test_a_400_is_not_retried_and_names_the_server(faults, monkeypatch):
    key = "sk-test-secret-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    f = faults([400])
    g = _target(f.url).generate([ASK, ASK], GenParams())
    assert [s for _, s in f.replies] == [400, 200]  # one attempt each
    bad = [x for x in g if x.error]
    assert len(bad) == 1 and not bad[0].text  # the item's error; the other row goes on
    msg = bad[0].error
    assert f.url in msg and "HTTP 400" in msg and "not retried" in msg, msg
    assert "\n" not in msg and key not in msg


@pytest.mark.slow
def test_a_server_that_never_recovers_fails_after_n_attempts_in_one_line(faults):
    f = faults([503] * 50)
    t = _target(f.url, attempts=3, backoff_s=0.01)
    with pytest.raises(ModelError) as e:
        t.generate([ASK], GenParams())
    msg = str(e.value)
    assert len(f.replies) == 3
    assert f.url in msg and "3 attempts" in msg and "HTTP 503" in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


@pytest.mark.slow
def test_extract_stops_with_the_one_line_error(faults, store):
    """The CLI: a server down for good stops the run with its one line (resumable)."""
    from pipeline.problems.data import import_demo

    import_demo(store, 6, 2)
    f = faults([503] * 500)
    r = CliRunner().invoke(cli, ["--db", str(store.path), "extract", "--limit", "2",
                                 "--backend", "openai", "--model", BASE, "--base-url", f.url])
    assert r.exit_code != 0 and r.exc_info[0] is SystemExit
    assert f.url in r.output and "5 attempts failed" in r.output, r.output
    assert "Traceback" not in r.output


# -- concurrency, keep-alive, stop sequences -----------------------------------------------------


def test_parallel_is_one_setting_with_default_32():
    from pipeline.loop.iterate import LoopParams
    from pipeline.stages.evaluate import EvalParams
    from pipeline.stages.select import SelectParams

    assert BackendParams.default("parallel") == 32
    for cls in (GenParams, SelectParams, EvalParams):
        assert issubclass(cls, BackendParams) and cls.default("parallel") == 32
    assert OpenAITarget(model=BASE).parallel == 32
    assert make_target("openai", BASE, base_url="http://127.0.0.1:9/v1").parallel == 32
    assert LoopParams(select={"parallel": 64}).stage("select").parallel == 64
    for cmd in ("extract", "select", "evaluate"):
        out = CliRunner().invoke(cli, [cmd, "--help"]).output
        assert "--parallel" in out and "32" in out.split("--parallel", 1)[1][:200], cmd
        assert "--device" in out and "--dtype" in out, cmd


@pytest.mark.slow
def test_requests_are_concurrent_up_to_parallel_over_kept_alive_connections(faults):
    f = faults(delay=0.2)
    t = _target(f.url, parallel=6)
    g = t.generate([ASK] * 30, GenParams())
    assert all(x.error is None for x in g) and len(f.bodies) == 30
    assert f.max_inflight == 6  # as many as --parallel, never more
    assert len(f.conns) <= 6 < 30  # keep-alive: connections are reused
    rate = t.throughput()
    assert "req/s" in rate and "tok/s" in rate, rate
    g = t.generate([ASK] * 12, GenParams())  # a second call: the same pool
    assert len(f.conns) <= 6


@pytest.mark.slow
def test_stop_sequences_reach_the_server_and_never_change_a_verdict(faults):
    from pipeline.problems.answers import cut_at_final_answer, judge

    f = faults()
    t = _target(f.url)
    t.generate([ASK], GenParams())
    assert "stop" not in f.bodies[-1]  # without the stop rule: none
    f.stop_reply = ("2 + 2 = 4. The answer is 4.", "\n")  # stopped after the answer
    g = t.generate([ASK], GenParams(stop_at_answer=True))
    assert f.bodies[-1]["stop"] == list(ANSWER_STOPS) == ["\n"]
    assert len(f.bodies) == 2 and g[0].text == "2 + 2 = 4. The answer is 4."
    # a newline before any final answer: the row is asked again without stop sequences
    f.text = "Add them.\n2 + 2 = 4.\nThe answer is 4.\nMore text."
    f.stop_reply = ("Add them.", "\n")
    g = t.generate([ASK], GenParams(stop_at_answer=True))
    assert len(f.bodies) == 4 and f.bodies[-2]["stop"] == ["\n"] and "stop" not in f.bodies[-1]
    assert g[0].text == f.text and g[0].completion_tokens == 18  # both requests' tokens
    assert judge(cut_at_final_answer(g[0].text), "4")["correct"]
    # the end of the turn (stop_reason null) before an answer: nothing asked again
    f.stop_reply = ("I do not know", None)
    g = t.generate([ASK], GenParams(stop_at_answer=True))
    assert len(f.bodies) == 5 and g[0].text == "I do not know"


# -- the likelihood proxy over a server ----------------------------------------------------------


def _proxy_rows():
    """Three dev problems and a candidate, as the proxy scores them."""
    from pipeline.stages.synthesize import chat_solution

    dev = [{"dataset": "demo", "split": "train", "pid": f"p{i}", "question": q,
            "solution": s, "answer": a} for i, (q, s, a) in enumerate([
                ("Tom has 3 apples and buys 4 more. How many apples does he have?",
                 "3 + 4 = 7. The answer is 7.", "7"),
                ("A box holds 6 eggs. How many eggs are in 5 boxes?",
                 "6 * 5 = 30. The answer is 30.", "30"),
                ("Sara had 20 dollars and spent 8. How much is left?",
                 "20 - 8 = 12. The answer is 12.", "12")])]
    cand = {"cand_id": 1, "question": "Ann reads 5 pages a day. How many pages in 4 days?",
            "solution": "5 * 4 = 20. The answer is 20."}
    assert chat_solution(cand["solution"])
    return cand, dev


@pytest.mark.slow
def test_proxy_over_the_vllm_like_server_equals_the_local_proxy(serve):
    from pipeline.models.target import LocalTarget
    from pipeline.stages.select import Proxy, SelectParams

    cand, dev = _proxy_rows()
    p = SelectParams(method="proxy")
    local = LocalTarget().load()
    want_score, want_rows = Proxy(local, p).score(cand, dev)
    del local  # one model at a time in this process; the server loads its own
    server = serve()
    t0 = time.perf_counter()
    remote = make_target("openai", BASE, base_url=server.url)
    remote.load().require_logliks()
    got_score, got_rows = Proxy(remote, p.replace(backend="openai")).score(cand, dev)
    assert got_score["score"] == pytest.approx(want_score["score"], abs=2e-3)
    assert [r["value"] for r in got_rows] == pytest.approx([r["value"] for r in want_rows],
                                                           abs=2e-3)
    log = server.log()
    assert log and all(x["path"] == "completions" for x in log)
    print(f"proxy over the server: {time.perf_counter() - t0:.1f} s, {len(log)} requests, "
          f"score {got_score['score']:.4f} (local {want_score['score']:.4f})")


@pytest.mark.slow
def test_proxy_refused_by_a_server_without_prompt_logprobs(serve):
    server = serve("--no-prompt-logprobs")
    t = make_target("openai", BASE, base_url=server.url).load()
    with pytest.raises(ModelError) as e:
        t.require_logliks()
    msg = str(e.value)
    assert server.url in msg and "prompt log-probabilities" in msg, msg
    assert "--backend local" in msg and "\n" not in msg


# -- the local backend's device and dtype ----------------------------------------------------


def test_device_and_dtype_resolution_and_refusals():
    import torch

    from pipeline.models.target import resolve_runtime

    auto = resolve_runtime()
    assert auto == ({"device": "cuda", "dtype": "bfloat16"} if torch.cuda.is_available()
                    else {"device": "cpu", "dtype": "float32"})
    assert resolve_runtime("cpu", "bfloat16") == {"device": "cpu", "dtype": "bfloat16"}
    with pytest.raises(ModelError, match="unknown device 'tpu'.*auto, cpu, cuda"):
        resolve_runtime("tpu")
    with pytest.raises(ModelError, match="unknown device 'mps:0:1'"):
        resolve_runtime("mps:0:1")
    with pytest.raises(ModelError, match="unknown dtype 'int3'"):
        resolve_runtime("cpu", "int3")
    # one index past the devices torch sees (cuda:0 on a machine without a GPU, cuda:1 on
    # one with a single GPU) is refused, with how many there are
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ModelError, match=rf"'cuda:{n}' is not available here \(torch sees "
                       rf"{n} CUDA device"):
        resolve_runtime(f"cuda:{n}")


def test_an_unknown_device_is_refused_by_the_cli(store):
    from pipeline.problems.data import import_demo

    import_demo(store, 6, 2)
    r = CliRunner().invoke(cli, ["--db", str(store.path), "extract", "--limit", "2",
                                 "--device", "tpu"])
    assert r.exit_code != 0 and "unknown device 'tpu'" in r.output, r.output
    assert "Traceback" not in r.output and store.runs() == []


@pytest.mark.slow
def test_device_and_dtype_are_recorded_and_keep_old_run_ids(store):
    from pipeline.problems.data import import_demo
    from pipeline.stages.extract import manifest_for

    import_demo(store, 6, 2)
    r = CliRunner().invoke(cli, ["--db", str(store.path), "extract", "--limit", "2",
                                 "--max-new-tokens", "4", "--device", "cpu",
                                 "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    run = store.runs()[0]
    m = json.loads(store.run(run["run_id"])["manifest"])
    assert m["device"] == "cpu" and m["dtype"] == "float32"  # recorded
    gp = json.loads(store.run(run["run_id"])["gen_params"])
    # the CPU in float32 is what every run used before the options: not in the id
    assert set(gp) == {"max_new_tokens", "temperature", "seed"}
    probs = store.problems("demo", "train", 2)
    same = manifest_for(make_target("local", device="cpu"), "demo", "train", probs,
                        GenParams(max_new_tokens=4, parallel=3), "solve_v2", "extract")
    assert same["run_id"] == run["run_id"]  # --parallel is not part of the id either
    other = manifest_for(make_target("local", device="cpu", dtype="bfloat16"), "demo",
                         "train", probs, GenParams(max_new_tokens=4), "solve_v2", "extract")
    assert other["run_id"] != run["run_id"]
    assert other["gen_params"]["dtype"] == "bfloat16" and other["dtype"] == "bfloat16"


@pytest.fixture
def serve(tmp_path):
    from test_served_adapters import Served

    started = []

    def start(*args: str):
        started.append(Served(tmp_path, *args))
        return started[-1]
    yield start
    for s in started:
        s.stop()
