"""The Extract step of SEI: one to three error keyphrases per bad case, written by the
instructor model or, when none is configured, by the offline analyzer. Every keyphrase
records which instructor or analyzer produced it. Resumable per bad case."""

from __future__ import annotations

import hashlib
import json

from pipeline import analyzer as offline
from pipeline.instructor import Instructor, InstructorError, from_env, load_prompt
from pipeline.store import Store

PROMPT = "keyphrases_v1"


def _noop(*a):
    pass


def analysis_id_for(analyzer: str, prompt_version: str | None, run_id: str | None) -> str:
    key = json.dumps([analyzer, prompt_version, run_id])
    return "an-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def instructor_phrases(ins: Instructor, store: Store, case: dict) -> list[dict]:
    template, schema = load_prompt(PROMPT)
    prompt = template.format(question=case["question"], solution=case["solution"] or "",
                             answer=case["answer"], output=(case["output"] or "")[:4000],
                             pred=case["pred"])
    reply = ins.ask_json(store, prompt, schema, purpose=f"keyphrases case {case['case_id']}")
    return [{"text": t.strip(), "evidence": None} for t in reply["keyphrases"] if t.strip()][:3]


def analyze(store: Store, run_id: str | None = None,
            instructor: dict | Instructor | str | None = None,
            limit: int | None = None, progress=_noop) -> str:
    """Write keyphrases for bad cases (of one run, or all). Returns the analysis id."""
    if isinstance(instructor, dict):
        instructor = Instructor(**instructor)
    # None: the configured instructor if any; "offline": the offline analyzer regardless.
    ins = None if instructor == "offline" else (instructor or from_env())
    name = ins.name if ins else offline.ANALYZER
    prompt_version = PROMPT if ins else None
    aid = analysis_id_for(name, prompt_version, run_id)
    manifest = {"analyzer": name, "prompt": prompt_version, "run_id": run_id,
                "prompt_text": load_prompt(PROMPT)[0] if ins else None}
    store.upsert_analysis(aid, name, prompt_version, manifest)
    cases = store.bad_cases(run_id, limit)
    done = store.analysis_done(aid)
    todo = [c for c in cases if c["case_id"] not in done]
    max_tokens = {r["run_id"]: json.loads(r["gen_params"] or "{}").get("max_new_tokens")
                  for r in store.rows("SELECT run_id, gen_params FROM runs")}
    progress(len(cases) - len(todo), len(cases), "analyze", f"{name}: {len(todo)} to do")
    failures = 0
    for i, c in enumerate(todo):
        try:
            if ins:
                phrases = instructor_phrases(ins, store, c)
            else:
                phrases = offline.analyze(c["question"], c["solution"] or "", c["answer"],
                                          c["output"] or "", c["pred"], c["completion_tokens"],
                                          max_tokens.get(c["run_id"]))
            store.record_keyphrases(aid, c["case_id"], name, phrases)
        except InstructorError as e:  # recorded, retried on resume; the run goes on
            failures += 1
            store.record_keyphrases(aid, c["case_id"], name, [],
                                    error=f"bad case {c['case_id']}: {e}")
        progress(len(cases) - len(todo) + i + 1, len(cases), "analyze",
                 f"{failures} failed" if failures else "")
    if failures and failures == len(todo):
        raise InstructorError(f"all {failures} bad cases failed; see llm_calls and "
                              "analysis_done.error")
    return aid
