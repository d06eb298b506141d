"""The instructor client against a real OpenAI-compatible server (llama.cpp serving the
bundled SmolLM2 GGUF) on 127.0.0.1: happy path, cache, call log, and faults."""

import json
import socket
import threading

import pytest

from pipeline.models.instructor import (
    Instructor,
    InstructorError,
    from_env,
    load_prompt,
    parse_json,
)
from pipeline.models.serve import free_port

SCHEMA = {"type": "object", "properties": {"keyphrases": {"type": "array", "minItems": 1,
          "items": {"type": "string"}}}, "required": ["keyphrases"]}
PROMPT = ('A student computed 12 * 5 = 65 in a word problem about boxes of apples. '
          'Name the error. Reply with JSON only: {"keyphrases": ["..."]}')


def test_happy_path_cache_and_log(store, llama_server):
    ins = Instructor(model="smollm2-135m-instruct", base_url=llama_server, max_tokens=64)
    assert ins.ping() is None
    r1 = ins.ask_json(store, PROMPT, SCHEMA, purpose="test")
    assert isinstance(r1["keyphrases"], list) and r1["keyphrases"]
    calls = store.llm_calls()
    assert len(calls) == 1 and calls[0]["error"] is None and not calls[0]["cached"]
    assert calls[0]["prompt_tokens"] > 10 and calls[0]["completion_tokens"] > 0
    assert json.loads(calls[0]["messages"])[0]["content"] == PROMPT
    assert calls[0]["latency_s"] > 0 and calls[0]["reply"]
    # The same question again: from the cache, identical, logged as cached.
    r2 = ins.ask_json(store, PROMPT, SCHEMA, purpose="test")
    assert r2 == r1
    calls = store.llm_calls()
    assert len(calls) == 2 and calls[0]["cached"]
    # Other parameters are another cache key.
    ins2 = Instructor(model="smollm2-135m-instruct", base_url=llama_server, max_tokens=65)
    ins2.ask_json(store, PROMPT, SCHEMA, purpose="test")
    assert sum(1 for c in store.llm_calls() if not c["cached"]) == 2


def test_reply_that_is_not_json(store, llama_server):
    """Without JSON mode a 135M model answers in prose: repaired or a clear error,
    every attempt logged with its raw reply."""
    ins = Instructor(model="smollm2-135m-instruct", base_url=llama_server, json_mode=False,
                     max_tokens=24, repair_turns=1)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    with pytest.raises(InstructorError, match="not valid JSON for the schema"):
        ins.ask_json(store, "Write a short poem about the sea.", schema, purpose="prose")
    calls = store.llm_calls()
    invalid = [c for c in calls if (c["error"] or "").startswith("invalid reply")]
    assert len(invalid) == 2  # the first reply and the repair turn
    assert all(c["reply"] for c in invalid)
    assert store.llm_cache_get(ins.cache_key([{"role": "user", "content":
                               "Write a short poem about the sea."}], schema)) is None


def test_server_down(store):
    port = free_port()  # nothing listens here
    ins = Instructor(model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2,
                     backoff_s=0.05)
    assert ins.ping() is not None
    with pytest.raises(InstructorError, match="gave up after 3 attempts: APIConnectionError"):
        ins.ask_json(store, PROMPT, SCHEMA, purpose="down")
    errs = [c["error"] for c in store.llm_calls()]
    assert len(errs) == 3 and all("APIConnectionError" in e for e in errs)


@pytest.mark.slow
def test_timeout(store):
    """A server that accepts and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        ins = Instructor(model="m", base_url=f"http://127.0.0.1:{srv.getsockname()[1]}/v1",
                         timeout_s=0.5, max_retries=1, backoff_s=0.05)
        with pytest.raises(InstructorError, match="APITimeoutError"):
            ins.ask_json(store, PROMPT, SCHEMA, purpose="timeout")
        errs = [c["error"] for c in store.llm_calls()]
        assert len(errs) == 2 and all("Timeout" in e for e in errs)
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def test_parse_json_tolerates_fences_and_chatter():
    assert parse_json('Sure!\n```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json('The answer: {"a": [1, 2]} hope it helps') == {"a": [1, 2]}
    with pytest.raises(json.JSONDecodeError):
        parse_json("no json here")


def test_from_env(monkeypatch):
    assert from_env() is None  # conftest clears the variables: offline is the default
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert from_env().model == "gpt-4o"
    monkeypatch.setenv("SEI_INSTRUCTOR_MODEL", "qwen")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    ins = from_env()
    assert ins.model == "qwen" and ins.name == "openai:qwen@http://127.0.0.1:1/v1"
    assert (ins.timeout_s, ins.case_time_s) == (60, 300)
    monkeypatch.setenv("SEI_INSTRUCTOR_TIMEOUT_S", "7.5")
    monkeypatch.setenv("SEI_INSTRUCTOR_CASE_S", "20")
    assert (from_env().timeout_s, from_env().case_time_s) == (7.5, 20)
    monkeypatch.setenv("SEI_INSTRUCTOR_TIMEOUT_S", "soon")
    with pytest.raises(InstructorError, match="SEI_INSTRUCTOR_TIMEOUT_S='soon' is not a number"):
        from_env()
    # A password in the endpoint's URL never shows in its name (which is stored).
    monkeypatch.setenv("OPENAI_BASE_URL", "http://bob:hunter2-pw@127.0.0.1:1/v1")
    monkeypatch.delenv("SEI_INSTRUCTOR_TIMEOUT_S")
    assert from_env().name == "openai:qwen@http://***@127.0.0.1:1/v1"


def test_prompts_are_versioned_files():
    text, schema = load_prompt("keyphrases_v1")
    assert "{question}" in text and "{output}" in text
    assert schema["required"] == ["keyphrases"]


@pytest.mark.slow
def test_instructor_analysis_end_to_end(store, llama_server):
    """Keyphrases from the real server for real-looking bad cases; a case whose prompt
    cannot fit the server's context fails alone (recorded, the others stored, a clear
    summary); a rerun asks again about that case only."""
    from fault_server import make_bad_cases

    from pipeline.stages.analyze import AnalysisIncomplete, analyze_bad_cases

    ids = make_bad_cases(store, [
        "A box holds 12 apples. How many apples are in 5 boxes?",
        "Tom reads 15 pages a day. How many pages does he read in a week?",
        "How many? " + "one two three " * 1500,
        "A shirt costs $20 and is 25% off. What does it cost now?"])
    ins = Instructor(model="smollm2-135m-instruct", base_url=llama_server, max_tokens=64,
                     max_retries=1, backoff_s=0.05)
    with pytest.raises(AnalysisIncomplete, match="1 of 4 bad cases failed") as e:
        analyze_bad_cases(store, instructor=ins)
    aid = e.value.analysis_id
    errors = {r["case_id"]: r["error"] for r in
              store.rows("SELECT case_id, error FROM analysis_done WHERE analysis_id = ?", [aid])}
    assert sorted(errors) == sorted(ids)
    assert [c for c, err in errors.items() if err] == [ids[2]]
    assert "BadRequestError" in errors[ids[2]]  # the server refused the over-long prompt
    kps = store.keyphrases(aid)
    assert {k["case_id"] for k in kps} == {ids[0], ids[1], ids[3]}
    assert all(k["analyzer"] == ins.name and len(k["text"]) >= 3 for k in kps)
    n_calls = store.count("llm_calls")
    with pytest.raises(AnalysisIncomplete, match="1 of 1 bad cases failed"):
        analyze_bad_cases(store, instructor=ins)
    again = store.llm_calls(1000)[:store.count("llm_calls") - n_calls]
    assert again and {c["purpose"] for c in again} == {f"keyphrases case {ids[2]}"}
    assert store.keyphrases(aid) == kps  # the finished cases are untouched
