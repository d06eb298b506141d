"""Over an OpenAI-compatible server, an iteration's adapter answers by its served name, or
the run is refused before it generates anything (issue 25, items 1 and 3).

The fast tests point OpenAITarget at a canned HTTP server (every kind of wrong reply); the
slow ones run `sei evaluate` and one-shot selection against tests/vllm_like_server.py, a
real process serving the embedded base model and the adapter that `looped_db` trained,
whose request log says which adapter answered each completion."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.core import config
from pipeline.models.target import (
    GenParams,
    ModelError,
    OpenAITarget,
    make_target,
    served_adapter_name,
)
from pipeline.shells.cli import cli
from pipeline.storage.store import Store

BASE = config.DEFAULT_MODEL
HERE = Path(__file__).parent


# -- the refusals, against canned replies ----------------------------------------------------


@pytest.fixture
def fake_adapter(tmp_path) -> Path:
    """A directory that looks like a peft adapter (never loaded by these tests)."""
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (d / "adapter_model.safetensors").write_bytes(os.urandom(256))
    return d


class Canned:
    """A real HTTP server on 127.0.0.1 whose replies the test sets: `models` (status, body)
    for GET /v1/models, `load` for POST /v1/load_lora_adapter; `delay` seconds before each
    reply. Requests are recorded (method, path, body)."""

    def __init__(self):
        self.models = (200, {"object": "list", "data": [{"id": BASE, "object": "model"}]})
        self.load = (404, {"detail": "Not Found"})
        self.on_load = None  # called on a load request (e.g. to list the adapter afterwards)
        self.delay = 0.0
        self.requests: list[tuple[str, str, dict | None]] = []
        canned = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, status_body):
                time.sleep(canned.delay)
                status, body = status_body
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(body, str)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                canned.requests.append(("GET", self.path, None))
                self._reply(canned.models if self.path == "/v1/models"
                            else (404, {"detail": "Not Found"}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                canned.requests.append(("POST", self.path, body))
                if self.path == "/v1/load_lora_adapter":
                    if canned.on_load:
                        canned.on_load(body)
                    return self._reply(canned.load)
                self._reply((500, {"error": {"message": "no completions here"}}))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lists(self, *names):
        self.models = (200, {"object": "list", "data": [{"id": n, "object": "model"}
                                                        for n in (BASE, *names)]})


@pytest.fixture
def canned():
    c = Canned()
    yield c
    c.server.shutdown()
    c.server.server_close()


def _refusal(target) -> str:
    with pytest.raises(ModelError) as e:
        target.load()
    assert isinstance(e.value, ValueError)  # the CLI prints it as one line
    return str(e.value)


def _says_how_to_serve(msg: str, adapter: Path, url: str) -> None:
    assert str(adapter) in msg and url in msg, msg
    assert "--lora-modules" in msg and "--enable-lora" in msg, msg
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in msg and "--served-adapter" in msg, msg
    assert "Traceback" not in msg


def test_adapter_loaded_at_run_time_under_a_stable_name(canned, fake_adapter):
    name = served_adapter_name(str(fake_adapter))
    assert name.startswith("sei-") and len(name) == 16
    assert served_adapter_name(str(fake_adapter)) == name  # stable
    canned.load = (200, f"Success: LoRA adapter '{name}' added successfully.")
    canned.on_load = lambda body: canned.lists(body["lora_name"])
    t = make_target("openai", BASE, str(fake_adapter), canned.url)
    assert t.model_id == t.served_name == name  # what the manifest records
    t.load()
    assert canned.requests == [
        ("GET", "/v1/models", None),
        ("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(fake_adapter)}),
        ("GET", "/v1/models", None)]
    # already served: no second load
    canned.requests.clear()
    make_target("openai", BASE, str(fake_adapter), canned.url).load()
    assert canned.requests == [("GET", "/v1/models", None)]


@pytest.mark.slow
def test_every_wrong_reply_is_one_refusal_naming_the_adapter(canned, fake_adapter, monkeypatch):
    key = "sk-test-secret-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def refusal(**kw):
        msg = _refusal(OpenAITarget(model=BASE, base_url=canned.url,
                                    adapter=str(fake_adapter), **kw))
        _says_how_to_serve(msg, fake_adapter, canned.url)
        assert key not in msg
        return msg

    # no runtime loading (vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING): 404
    assert "HTTP 404" in refusal()
    # the load refused with vLLM's error body, which echoes the key
    canned.load = (400, {"object": "error", "message": f"cannot load: bad key {key}",
                         "type": "BadRequestError", "code": 400})
    msg = refusal()
    assert "HTTP 400" in msg and "cannot load" in msg
    # accepted, yet not listed
    canned.load = (200, "Success")
    assert "does not list it" in refusal()
    # a name given by the user that the server does not list: no load attempted
    canned.requests.clear()
    assert "'it7'" in refusal(served_adapter="it7")
    assert [r[0] for r in canned.requests] == ["GET"]
    # an HTML page, a JSON body that is no model list
    canned.models = (404, "<!DOCTYPE html><html><body>Not here</body></html>")
    assert "an HTML page" in refusal()
    canned.models = (200, {"whatever": 1})
    assert "no model list" in refusal()
    # a server that does not answer in time
    canned.lists()
    canned.delay = 2.0
    assert "timed out" in refusal(timeout_s=0.5).lower()
    canned.delay = 0.0
    # nothing listening
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = f"http://127.0.0.1:{port}/v1"
    msg = _refusal(OpenAITarget(model=BASE, base_url=closed, adapter=str(fake_adapter)))
    _says_how_to_serve(msg, fake_adapter, closed)
    assert "refused" in msg.lower()
    # never a completion request
    assert not [r for r in canned.requests if "completions" in r[1]]


def test_without_an_adapter_nothing_changes(canned):
    t = make_target("openai", BASE, None, canned.url)
    assert t.model_id == BASE
    t.load()
    assert canned.requests == []  # no check, no load: the base model as before
    with pytest.raises(ModelError, match="names an adapter, but this run uses none"):
        make_target("openai", BASE, None, canned.url, served_adapter="it1")


def test_refused_before_the_run_is_recorded(canned, fake_adapter, store):
    """extract() checks the server before it records the run: no run, no generation."""
    from pipeline.problems.data import import_demo
    from pipeline.stages.extract import extract

    import_demo(store, 10, 4)
    with pytest.raises(ModelError, match="is not served by"):
        extract(store, "demo", "test", limit=2, backend="openai", model=BASE,
                adapter=str(fake_adapter), base_url=canned.url, kind="evaluate",
                params=GenParams(max_new_tokens=8))
    assert store.runs() == []
    assert not [r for r in canned.requests if "completions" in r[1]]


# -- end to end, against a vLLM-like server -----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """tests/vllm_like_server.py in its own process; `log()` reads its request log."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None):
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        n = len(list(tmp.glob("requests-*.jsonl")))  # a server started again: its own log
        self.log_path = tmp / f"requests-{self.port}-{n}.jsonl"
        self.out = open(tmp / f"server-{self.port}-{n}.out", "w")
        env = dict(os.environ, OMP_NUM_THREADS="1")  # a busy CPU: one thread, no spinning
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "vllm_like_server.py"), "--port", str(self.port),
             "--log", str(self.log_path), "--threads", "1", *args],
            stdout=self.out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 600
        while True:
            assert self.proc.poll() is None, (tmp / f"server-{self.port}.out").read_text()
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(1)

    def log(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(x) for x in self.log_path.read_text().splitlines()]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


@pytest.fixture
def serve(tmp_path, scripted):
    """Start vLLM-like servers (stopped at the end). They answer with the tests' scripted
    target: these tests' subject is which model a request names and which adapter
    answers it (the server's log), not what it answers."""
    started = []

    def start(*args: str, port: int | None = None) -> Served:
        started.append(Served(tmp_path, *args, port=port))
        return started[-1]
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def looped(looped_db, tmp_path, monkeypatch) -> tuple[Store, str]:
    """A private copy of the looped store, and iteration 1's adapter directory."""
    db = tmp_path / "sei.duckdb"
    shutil.copy(looped_db, db)
    monkeypatch.setenv("SEI_DB", str(db))
    monkeypatch.setenv("SEI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SEI_MODELS_DIR", str(config.models_dir()))
    s = Store(db)
    from pipeline.loop import resolve

    adapter = resolve.adapter_of(s, 1)
    assert adapter and (Path(adapter) / "adapter_config.json").exists()
    return s, adapter


def _evaluate(store: Store, url: str, *more: str):
    """`sei evaluate --iteration 1 --backend openai ...` on 3 demo test problems."""
    return CliRunner().invoke(cli, [
        "--db", str(store.path), "evaluate", "--iteration", "1", "--set", "demo/test",
        "--limit", "3", "--max-new-tokens", "48", "--backend", "openai", "--base-url", url,
        "--served-model", BASE, *more])


def _evaluate_job(store: Store, url: str, *more: str):
    """The same evaluation through the CLI's job runner (`sei jobs submit evaluate`),
    without the rerun of the 48 base train problems (train_check, not a `sei evaluate`
    flag), which would take many minutes on a busy 2-core CPU."""
    r = CliRunner().invoke(cli, [
        "--db", str(store.path), "jobs", "submit", "evaluate", "iteration=1",
        'sets=["demo/test"]', "limit=3", "max_new_tokens=48", "backend=openai",
        f"base_url={url}", f"served_model={BASE}", "train_check=false", *more])
    assert r.exit_code == 0, r.output
    jid = r.output.split()[-1]
    r = CliRunner().invoke(cli, ["--db", str(store.path), "jobs", "wait", jid,
                                 "--timeout", "900"])
    assert r.exit_code == 0, (r.output, CliRunner().invoke(
        cli, ["--db", str(store.path), "jobs", "logs", jid]).output)
    return r


def _who(line: dict) -> dict:
    """The model a logged request named and the adapter that answered it."""
    return {"model": line["model"], "adapter_dir": line["adapter_dir"]}


def _openai_eval_run(store: Store) -> dict:
    runs = [r for r in store.runs("evaluate") if r["backend"] == "openai"]
    assert len(runs) == 1
    return store.run(runs[0]["run_id"])


def _verdicts_exist(store: Store, run: dict, n: int) -> None:
    """The run's n items each hold the server's output and the judge's verdict on it."""
    from pipeline.problems.answers import judge

    items = store.run_items(run["run_id"])
    assert len(items) == n
    refs = {p["pid"]: p["answer"] for p in store.problems(run["dataset"], run["split"])}
    verdicts = [(i["pid"], judge(i["output"], refs[i["pid"]])) for i in items]
    assert [(i["pid"], bool(i["correct"]), i["pred"]) for i in items] == \
        [(pid, v["correct"], v["pred"]) for pid, v in verdicts]
    assert [i["pid"] for i in items if not i["output"]] == []
    assert any(v["pred"] for _, v in verdicts)


@pytest.mark.slow
def test_evaluation_is_answered_by_the_adapter_loaded_at_run_time(looped, serve):
    store, adapter = looped
    server = serve()  # runtime LoRA loading on
    t0 = time.perf_counter()
    _evaluate_job(store, server.url)
    log = server.log()
    name = served_adapter_name(adapter)
    # one request per row with the stop sequences; a row whose newline came before its
    # final answer is asked again without them
    assert len([x for x in log if x["stop"]]) == 3 and all(x["stop"] == ["\n"] or x["stop"]
                                                          is None for x in log), log
    assert all(_who(x) == {"model": name, "adapter_dir": adapter} for x in log), log
    run = _openai_eval_run(store)
    assert run["adapter"] == adapter and run["model_id"] == name
    _verdicts_exist(store, run, 3)
    print(f"evaluate through the server: {time.perf_counter() - t0:.0f} s, "
          f"{len(log)} requests")


@pytest.mark.slow
def test_a_server_that_cannot_serve_the_adapter_refuses_the_run(looped, serve):
    store, adapter = looped
    server = serve("--no-runtime-lora")
    n_runs = store.count("runs")
    r = _evaluate(store, server.url)
    assert r.exit_code != 0
    assert server.log() == []  # not one completion request
    msg = r.output
    assert adapter in msg and server.url in msg, msg
    assert f"--lora-modules {served_adapter_name(adapter)}={adapter}" in msg, msg
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in msg and "--served-adapter" in msg
    assert "Traceback" not in msg and r.exc_info[0] is SystemExit, msg
    assert store.count("runs") == n_runs  # nothing recorded either
    # a name given by hand that the server does not serve: refused the same way
    r = _evaluate(store, server.url, "--served-adapter", "it1")
    assert r.exit_code != 0 and "'it1'" in r.output and server.log() == []


@pytest.mark.slow
def test_a_served_adapter_name_given_by_the_user(looped, serve):
    store, adapter = looped
    server = serve("--no-runtime-lora", "--lora-modules", f"it1={adapter}")
    _evaluate_job(store, server.url, "served_adapter=it1")
    log = server.log()
    assert log and all(_who(x) == {"model": "it1", "adapter_dir": adapter} for x in log), log
    run = _openai_eval_run(store)
    assert run["model_id"] == "it1" and run["adapter"] == adapter
    _verdicts_exist(store, run, 3)


@pytest.mark.slow
def test_one_shot_selection_through_the_server_is_answered_by_the_adapter(looped, serve):
    from pipeline.stages.select import SelectParams, select

    store, adapter = looped
    server = serve()
    out = select(store, SelectParams(iteration=1, backend="openai", base_url=server.url,
                                     model=BASE, adapter=adapter, limit=2, n_good=2,
                                     n_bad=2, max_new_tokens=48))
    assert out["n_scored"] == 2
    log = server.log()
    name = served_adapter_name(adapter)
    dev = len(store.dev_set(1))
    assert len([x for x in log if x["stop"]]) == 2 * dev  # one per row (+ any asked again)
    assert all(_who(x) == {"model": name, "adapter_dir": adapter} for x in log), log
    sel = store.selection(out["selection_id"])
    assert sel["manifest"]["adapter"] == adapter and sel["manifest"]["served_as"] == name


# -- the whole loop over the server ------------------------------------------------------------


def loop_args(url: str) -> list[str]:
    """A tiny loop over the server at url (the same ids every time: it resumes)."""
    return ["--train", "demo:train", "--eval", "demo:test", "--limit-train", "24",
            "--eval-limit", "4", "--max-new-tokens", "96", "--backend", "openai",
            "--base-url", url, "--budget", "8", "-p", "synthesize.per_call=8",
            "-p", "synthesize.synthesizer=offline", "-p", "cluster.min_cluster_size=3",
            "-p", "select.n_good=1", "-p", "select.n_bad=2", "-p", "select.limit=3",
            "-p", "select.top=2", "-p", "select.max_new_tokens=48", "-p", "train.epochs=1",
            "-p", "train.batch_size=2", "-p", "train.max_length=192"]


def _blocks(log: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """The request log as runs of consecutive requests answered by the same adapter."""
    out: list[tuple[str | None, list[dict]]] = []
    for x in log:
        if out and out[-1][0] == x["adapter_dir"]:
            out[-1][1].append(x)
        else:
            out.append((x["adapter_dir"], [x]))
    return out


@pytest.mark.slow
def test_two_iterations_over_the_server_each_step_answered_by_its_model(
        tmp_path, monkeypatch, scripted, serve):
    """`sei iterate --backend openai`, 2 iterations, both arms: every generation goes to the
    server, each by the model the protocol names. In the server's own request log, in
    order: the base model (base evaluation, iteration 1's extraction and one-shot
    scoring), iteration 1's SEI adapter (its evaluation), its random arm's adapter (its
    evaluation), the SEI adapter again (iteration 2's extraction and one-shot scoring),
    then iteration 2's two adapters, and its SEI adapter on the train set at the end.
    The server answers with the tests' scripted target (the subject is who answers, not
    what); the four trainings are real LoRA."""
    from pipeline.loop import resolve
    from pipeline.problems.data import import_demo

    db = tmp_path / "sei.duckdb"
    monkeypatch.setenv("SEI_DB", str(db))
    monkeypatch.setenv("SEI_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SEI_MODELS_DIR", str(config.models_dir()))
    store = Store(db)
    import_demo(store, 60, 20, seed=0, mix={1: 0.4, 2: 0.3, 3: 0.3})  # many errors
    server = serve("--threads", "2")
    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, [
        "--db", str(db), "iterate", "--iterations", "2", *loop_args(server.url)])
    assert r.exit_code == 0, r.output

    wall = time.perf_counter() - t0
    a1, r1 = resolve.arm_adapter(store, 1, "sei"), resolve.arm_adapter(store, 1, "random")
    a2, r2 = resolve.arm_adapter(store, 2, "sei"), resolve.arm_adapter(store, 2, "random")
    assert len({a1, r1, a2, r2}) == 4
    log = server.log()
    blocks = _blocks(log)
    assert [b[0] for b in blocks] == [None, a1, r1, a1, a2, r2, a2], \
        [(b[0], len(b[1])) for b in blocks]
    one_shot = [[x["n_messages"] == 3 for x in b[1]] for b in blocks]
    # one-shot scoring (3 messages: example question, its solution, the dev question) is
    # answered by the base model in iteration 1 and by iteration 1's adapter in iteration 2
    assert any(one_shot[0]) and any(one_shot[3])
    assert not any(one_shot[1] + one_shot[2] + one_shot[4] + one_shot[5] + one_shot[6])
    # every request named the adapter by the name it was loaded under
    for adapter, reqs in blocks[1:]:
        assert {x["model"] for x in reqs} == {served_adapter_name(adapter)}
    assert {x["model"] for x in blocks[0][1]} == {BASE}
    # the store says the same: each run and selection over the server, with its adapter
    runs = store.runs()
    assert runs and all(x["backend"] == "openai" for x in runs)
    sel2 = [s for s in store.selections(2) if s["method"] == "oneshot"]
    assert len(sel2) == 1 and sel2[0]["manifest"]["adapter"] == a1
    assert sel2[0]["manifest"]["served_as"] == served_adapter_name(a1)
    print(f"2 iterations over the server: {wall:.0f} s, {len(log)} requests")

    # The same server restarted without runtime LoRA loading, and a third iteration: what
    # is done resumes without a request; iteration 3 needs iteration 2's SEI adapter,
    # which this server does not serve: refused before anything is generated, by name.
    server.stop()
    plain = serve("--no-runtime-lora", port=server.port)
    n_runs = store.count("runs")
    r = CliRunner().invoke(cli, ["--db", str(db), "iterate", "--iterations", "3",
                                 *loop_args(plain.url)])
    assert r.exit_code != 0 and r.exc_info[0] is SystemExit, r.output
    assert a2 in r.output and f"--lora-modules {served_adapter_name(a2)}={a2}" in r.output, \
        r.output
    assert "Traceback" not in r.output
    assert plain.log() == []  # not one completion request
    assert store.count("runs") == n_runs

    # (The trainings below are iteration 2's latest: they come after the loop's checks.)
    # From scratch (the loop's mode): iteration 2's SEI adapter was trained from the base
    # model on both iterations' one-shot selections.
    oneshot = {i: [x["selection_id"] for x in store.selections(i) if x["method"] == "oneshot"]
               for i in (1, 2)}
    run2 = [t for t in store.train_runs(2) if t["adapter_dir"] == a2]
    assert len(run2) == 1 and run2[0]["mode"] == "scratch" and run2[0]["init_adapter"] is None
    assert run2[0]["selection_ids"] == oneshot[1] + oneshot[2]
    # Iterative: iteration 1's adapter trained further on iteration 2's selection only. At a
    # learning rate of 0 its weights are a1's exactly (it starts there), while from scratch
    # they are LoRA's initial ones (B = 0): so the check can tell the two apart.
    from safetensors.torch import load_file

    from pipeline.stages.train import TrainParams, train

    def weights(d):
        return load_file(str(Path(d) / "adapter_model.safetensors"))

    small = {"iteration": 2, "epochs": 1, "batch_size": 2, "max_length": 192, "lr": 0.0}
    it = train(store, resolve.models(store, "train", TrainParams(mode="iterative", **small)))
    row = store.train_run(it["train_id"])
    assert row["init_adapter"] == a1 and row["selection_ids"] == oneshot[2]
    w1, wi = weights(a1), weights(it["adapter_dir"])
    assert w1.keys() == wi.keys() and all(w1[k].equal(wi[k]) for k in w1)
    assert any(w1[k].abs().sum() > 0 for k in w1 if "lora_B" in k)
    sc = weights(train(store, resolve.models(store, "train", TrainParams(
        mode="scratch", **small)))["adapter_dir"])
    assert all(v.abs().sum() == 0 for k, v in sc.items() if "lora_B" in k)


@pytest.mark.slow
def test_a_cancelled_one_shot_job_resumes_without_rescoring_a_finished_candidate(looped, serve):
    """Issue 24: a cancel lost all of a one-shot job's work. Scoring through the server
    (its request log names each request's one-shot example by a digest): after a cancel
    once two candidates are scored, the resumed job sends no request for a candidate
    whose scores were stored, scores the rest, and finishes with every candidate."""
    from pipeline.loop import jobs
    from pipeline.models.target import DEFAULT_PROMPT, prompt_template
    from pipeline.stages.select import _demo_turns

    store, adapter = looped
    # a slowed server, and one candidate per batch (its 4 dev rows): the cancel lands
    # between candidates, not after the last one
    server = serve("--delay-s", "1.0")
    params = {"iteration": 1, "method": "oneshot", "backend": "openai",
              "base_url": server.url, "model": BASE, "adapter": adapter, "limit": 5,
              "n_good": 2, "n_bad": 2, "max_new_tokens": 40, "seed": 7, "batch_size": 4}
    jid = jobs.submit(store, "select", params)
    deadline = time.monotonic() + 600
    sid = None
    while True:
        assert time.monotonic() < deadline, "no two candidates scored in 10 min"
        job = store.job(jid)
        assert job["status"] in ("queued", "running"), (job["status"], job["error"])
        sels = [x for x in store.selections(1) if x["method"] == "oneshot"
                and x["status"] == "running"]
        sid = sels[-1]["selection_id"] if sels else sid
        if sid and len(store.scored_cands(sid)) >= 2:
            break
        time.sleep(0.2)
    jobs.cancel(store, jid, wait=120)
    assert store.job(jid)["status"] == "cancelled"
    before = store.scored_cands(sid)
    n_log = len(server.log())
    dev = len(store.dev_set(1))
    assert 2 <= len(before) < 5 and 0 < dev <= 4  # up to n_good 2 + n_bad 2
    # the digest the server logs for each candidate's one-shot example
    tmpl = prompt_template(DEFAULT_PROMPT)
    digest = {c["cand_id"]: hashlib.sha1(str(_demo_turns(c, tmpl)[0]["content"]).encode())
              .hexdigest()[:12] for c in store.candidates(iteration=1, status="kept")}
    asked = Counter(x["first"] for x in server.log()[:n_log])
    finished = {digest[c] for c in before}
    assert all(asked[h] >= dev for h in finished)  # each asked once per dev row (at least)
    jobs.resume(store, jid)
    assert jobs.wait(store, jid, timeout=600)["status"] == "succeeded"
    after = server.log()[n_log:]
    assert after, "the resumed job asked nothing"
    assert not finished & {x["first"] for x in after}  # nothing scored again
    assert len({x["first"] for x in after}) == 5 - len(before)
    assert store.scored_cands(sid) >= before and len(store.scored_cands(sid)) == 5
