"""SEI's analysis stage (the paper's keyphrase extraction): one to three error keyphrases
per bad case, written by an Analyzer: the instructor model or, when none is configured,
the offline analyzer (`make_analyzer` picks). Every keyphrase records which analyzer
produced it. Resumable per bad case."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Protocol

from pipeline.analysis import offline_analyzer as offline
from pipeline.analysis import review
from pipeline.core.progress import no_progress
from pipeline.core.redact import scrub
from pipeline.models.instructor import Instructor, InstructorError, from_env, load_prompt
from pipeline.storage.store import Store

PROMPT = "keyphrases_v1"
log = logging.getLogger(__name__)



def analysis_id_for(analyzer: str, prompt_version: str | None, run_id: str | None) -> str:
    """The id of an analysis: analyzer, prompt version and run, so a rerun resumes it."""
    key = json.dumps([analyzer, prompt_version, run_id])
    return "an-" + hashlib.sha256(key.encode()).hexdigest()[:10]


class Analyzer(Protocol):
    """Who writes a bad case's keyphrases: its name and prompt version are the analysis's
    identity and every keyphrase's provenance."""
    name: str
    prompt_version: str | None
    breaker_after: int  # stop after this many failed cases in a row (0: never)
    retry_helps: bool  # whether a rerun may succeed where a case failed (not deterministic)

    def phrases(self, store: Store, case: dict, max_tokens: int | None) -> list[dict]:
        """Up to three {"text", "evidence"} for one bad case."""
        ...


class InstructorAnalyzer:
    """The instructor model reads the case (the paper's analysis prompt)."""

    def __init__(self, ins: Instructor):
        self.ins, self.name, self.prompt_version = ins, ins.name, PROMPT
        self.breaker_after, self.retry_helps = ins.breaker_after, True

    def phrases(self, store: Store, case: dict, max_tokens: int | None) -> list[dict]:
        return instructor_phrases(self.ins, store, case)


class OfflineAnalyzer:
    """No instructor: evidence found in the wrong output itself (analysis/offline_analyzer)."""
    name, prompt_version, breaker_after, retry_helps = offline.ANALYZER, None, 0, False

    def phrases(self, store: Store, case: dict, max_tokens: int | None) -> list[dict]:
        c = case
        return offline.analyze_case(c["question"], c["solution"] or "", c["answer"],
                                    c["output"] or "", c["pred"], c["completion_tokens"],
                                    max_tokens)


def make_analyzer(instructor: dict | Instructor | str | None = None) -> Analyzer:
    """The one factory: "offline" the offline analyzer regardless; an Instructor or its
    settings (a dict) that instructor; None the configured instructor, else offline."""
    if isinstance(instructor, dict):
        instructor = Instructor(**instructor)
    ins = None if instructor == "offline" else (instructor or from_env())
    return InstructorAnalyzer(ins) if ins else OfflineAnalyzer()


def instructor_phrases(ins: Instructor, store: Store, case: dict) -> list[dict]:
    """Up to three error keyphrases for one bad case, from the instructor model."""
    template, schema = load_prompt(PROMPT)
    prompt = template.format(question=case["question"], solution=case["solution"] or "",
                             answer=case["answer"], output=(case["output"] or "")[:4000],
                             pred=case["pred"])
    reply = ins.ask_json(store, prompt, schema, purpose=f"keyphrases case {case['case_id']}")
    return [{"text": t.strip(), "evidence": None} for t in reply["keyphrases"] if t.strip()][:3]


class AnalysisIncomplete(InstructorError):
    """Some bad cases failed (or were not tried after the circuit breaker opened); the
    others' keyphrases are stored and a rerun retries only the failed ones."""

    says_how_to_retry = True  # "run it again to retry only those"

    def __init__(self, analysis_id: str, failed: int, todo: int, not_tried: int, last: str,
                 streak: int = 0):
        self.analysis_id, self.failed, self.todo, self.not_tried = \
            analysis_id, failed, todo, not_tried
        breaker = (f"; circuit breaker opened after {streak} failed cases in a row, "
                   f"{not_tried} not tried" if not_tried else "")
        super().__init__(
            f"analysis {analysis_id}: {failed} of {todo} bad cases failed{breaker}; "
            f"{todo - failed - not_tried} done. Errors are in analysis_done.error and "
            f"llm_calls; run it again to retry only those. Last error: {last}")


def analysis_runs(store: Store, run_ids: list[str] | None) -> list[str]:
    """The runs whose bad cases an analysis may read: those named, each checked, or by
    default the base model's train-split extraction runs. An evaluation run, or any run
    on a test split, is refused by name: no test item ever reaches analysis."""
    from pipeline.problems.sets import is_test_split

    if not run_ids:
        run_ids = [r["run_id"] for r in store.runs("extract")
                   if not r["adapter"] and not is_test_split(r["split"]) and r["n_done"]]
        if not run_ids:
            raise ValueError("no extraction run on a train split to analyse: run "
                             "`sei extract --dataset NAME --split train` first")
        return run_ids
    for rid in run_ids:
        r = store.run(rid)
        if r is None:
            raise ValueError(f"run {rid} does not exist (see `sei runs`)")
        if r["kind"] != "extract" or is_test_split(r["split"]):
            what = "an evaluation run" if r["kind"] != "extract" else "a run"
            raise ValueError(f"run {rid} is {what} "
                             f"on {r['dataset']}/{r['split']}: bad cases for analysis come "
                             "only from extraction runs on train splits (never test items)")
    return list(run_ids)


def analyze_bad_cases(store: Store, run_id: str | None = None,
            instructor: dict | Instructor | str | None = None,
            limit: int | None = None, progress=no_progress,
            run_ids: list[str] | None = None) -> str:
    """Write keyphrases for the bad cases of train-split extraction runs (`run_id`, or
    several `run_ids`, or by default the base model's). Returns the analysis id.

    Any exception while analysing one case is that case's failure: recorded (scrubbed)
    in analysis_done.error and retried by the next run; the analysis goes on, unless
    `breaker_after` cases in a row fail (the endpoint is down or refusing us). If any
    case failed, AnalysisIncomplete says how many, after the others are stored; with the
    offline analyzer (deterministic: a rerun fails alike) a warning says it instead."""
    an = make_analyzer(instructor)
    name, prompt_version = an.name, an.prompt_version
    runs = analysis_runs(store, run_ids or ([run_id] if run_id else None))
    # one run keeps the id it always had; several are one analysis, clustered together;
    # the first N cases are another analysis than all of them (a subset clusters apart)
    key = (runs[0] if len(runs) == 1 else "+".join(sorted(runs))) + \
        (f"@{limit}" if limit is not None else "")
    aid = analysis_id_for(name, prompt_version, key)
    manifest = {"analyzer": name, "prompt": prompt_version, "run_id": key, "run_ids": runs,
                "prompt_text": load_prompt(PROMPT)[0] if prompt_version else None}
    store.upsert_analysis(aid, name, prompt_version, manifest)
    cases = store.bad_cases_of(runs, limit, verdicts=review.overrides(store))
    done = store.analysis_done(aid)
    todo = [c for c in cases if c["case_id"] not in done]
    max_tokens = {rid: gp.get("max_new_tokens") for rid, gp in store.runs_gen_params().items()}
    progress(len(cases) - len(todo), len(cases), "analyze", f"{name}: {len(todo)} to do")
    failures = streak = 0
    last = ""
    breaker = an.breaker_after
    for i, c in enumerate(todo):
        try:
            phrases = an.phrases(store, c, max_tokens.get(c["run_id"]))
        except Exception as e:  # recorded, retried on resume; the analysis goes on
            failures += 1
            streak += 1
            last = scrub(str(e) if isinstance(e, InstructorError) else
                         f"{type(e).__name__}: {e}")[:2000]
            store.record_keyphrases(aid, c["case_id"], name, [],
                                    error=f"bad case {c['case_id']}: {last}")
        else:
            streak = 0
            store.record_keyphrases(aid, c["case_id"], name, phrases)
        progress(len(cases) - len(todo) + i + 1, len(cases), "analyze",
                 f"{failures} failed" if failures else "")
        if breaker and streak >= breaker and i + 1 < len(todo):
            raise AnalysisIncomplete(aid, failures, len(todo), len(todo) - i - 1, last, streak)
    if failures:
        _failed(aid, failures, len(todo), last, an.retry_helps, progress)
    return aid


def _failed(aid: str, failures: int, todo: int, last: str, retry_helps: bool,
            progress) -> None:
    """After an analysis in which some cases failed: AnalysisIncomplete with an instructor.
    The offline analyzer is deterministic (a case it cannot read fails alike on every
    rerun), so its failures must not stop the loop: they stay recorded with their reason,
    out of the types, and a warning says how many."""
    if retry_helps:
        raise AnalysisIncomplete(aid, failures, todo, 0, last)
    log.warning("analysis %s: %d of %d bad cases could not be analyzed (last: %s); they "
                "stay out of the error types", aid, failures, todo, last)
    progress(todo, todo, "analyze", f"{failures} of {todo} cases could not be analyzed")
