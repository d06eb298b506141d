"""The review queue: judged generations whose verdict is doubtful, each with its reasons,
and a person's decision on them.

A verdict is doubtful when no final answer was found, the output was cut at the token
limit, the symbolic comparison timed out (or could not run), math-verify and the string
comparison disagree, or the output states several different final answers. The reasons
are computed from what the store holds (output, extracted answer, the judge's JSON, the
completion tokens and the run's `max_new_tokens`), so every stored run can be reviewed.

A decision (confirm the judge's verdict, or override it) is a `verdict` edit in the same
append-only log as the taxonomy's edits (pipeline/analysis/taxonomy.py): it is undone and redone
like any edit (`sei types undo`, the map's Undo, this module's `undo`), and the log tells
it in a sentence. The effective verdict of a generation is the judge's unless a verdict
edit in force says otherwise (the latest one wins). Analysis (`Store.bad_cases_of` with
`overrides`) and the dev set (`select.dev_set`) read effective verdicts: an override to
correct takes a case out of the bad cases and puts its problem in the dev set's good pool;
an override to wrong does the reverse. Only extraction runs on splits that are not held
out are reviewed: those are the verdicts analysis and the dev set use.
"""

from __future__ import annotations

import hashlib
import json

from pipeline.analysis import taxonomy
from pipeline.problems.answers import final_answers, string_verdict
from pipeline.storage.store import Store

OP = "verdict"

# reason code -> what it means, for people
REASONS = {
    "no_answer": "no final answer found",
    "truncated": "output cut at the token limit",
    "timeout": "the symbolic comparison timed out",
    "compare_failed": "the comparison could not run",
    "disagree": "math-verify and the string comparison disagree",
    "several_answers": "several different final answers",
}
_WORD = {True: "correct", False: "wrong"}


def key_of(r: dict) -> tuple[str, str, str, str]:
    """A generation's key: (run_id, dataset, split, pid)."""
    return (r["run_id"], r["dataset"], r["split"], r["pid"])


def item_id(key: tuple) -> str:
    """A short, stable id for a generation (what `sei review --confirm ID` takes)."""
    return hashlib.sha1("/".join(key).encode()).hexdigest()[:8]


def _judge(r: dict) -> dict:
    j = r.get("judge")
    return json.loads(j) if isinstance(j, str) else (j or {})


def reasons(r: dict, max_new_tokens: int | None) -> list[dict]:
    """Why a judged generation's verdict is doubtful: [{code, text}], empty when it is not.
    `r` holds output, pred, correct, judge, completion_tokens and the reference answer."""
    j, out = _judge(r), []
    detail = j.get("detail") or ""
    if r.get("pred") is None or j.get("method") == "none":
        out.append(("no_answer", REASONS["no_answer"]))
    tokens = r.get("completion_tokens")
    if max_new_tokens and tokens is not None and tokens >= max_new_tokens:
        out.append(("truncated", f"{REASONS['truncated']} ({tokens} of {max_new_tokens} "
                                 "new tokens)"))
    if detail == "timeout":
        out.append(("timeout", REASONS["timeout"]))
    elif detail.startswith(("parse failed", "too costly", "answer too long")):
        out.append(("compare_failed", f"{REASONS['compare_failed']} ({detail})"))
    if detail == "math-verify" and r.get("pred") is not None:
        by_string = string_verdict(r["answer"], r["pred"])
        if by_string is not None and by_string != bool(r["correct"]):
            out.append(("disagree", f"math-verify says {_WORD[bool(r['correct'])]}, the string "
                                    f"comparison says {_WORD[by_string]} ({r['pred']!r} "
                                    f"against {r['answer']!r})"))
    several = final_answers(r.get("output") or "")
    if len(several) > 1:
        shown = ", ".join(repr(a) for a in several[:5]) + (" ..." if len(several) > 5 else "")
        out.append(("several_answers", f"{REASONS['several_answers']}: {shown}"))
    return [{"code": c, "text": t} for c, t in out]


# -- decisions in force ---------------------------------------------------------------------


def decisions(store: Store, edits: list[dict] | None = None) -> dict[tuple, dict]:
    """The decision in force per generation key (the latest verdict edit not undone):
    {correct, stored, edit_id, author, at}."""
    out = {}
    for e in taxonomy.active_edits(edits if edits is not None else store.edits()):
        if e["op"] == OP:
            p = e["payload"]
            out[(p["run_id"], p["dataset"], p["split"], p["pid"])] = {
                "correct": p["correct"], "stored": p["stored"], "edit_id": e["edit_id"],
                "author": e["author"], "at": e["created_at"]}
    return out


def overrides(store: Store, edits: list[dict] | None = None) -> dict[tuple, bool]:
    """Effective verdicts that a person decided, by generation key (what
    `Store.bad_cases_of(..., verdicts=)` and the dev set read)."""
    return {k: d["correct"] for k, d in decisions(store, edits).items()}


def effective(stored: bool, key: tuple, verdicts: dict[tuple, bool]) -> bool:
    """A generation's verdict: the decision in force, else the judge's."""
    return bool(verdicts.get(key, stored))


def with_verdicts(store: Store, rows: list[dict]) -> list[dict]:
    """Judged generations with the verdict in force as `correct` (a person's decision, else
    the judge's), the judge's as `judged`, and `reviewed` when a person decided."""
    ov = overrides(store)
    return [dict(r, judged=r["correct"], correct=ov.get(k, r["correct"]), reviewed=k in ov)
            for r in rows for k in [key_of(r)]]


# -- the queue ------------------------------------------------------------------------------


def reviewable_runs(store: Store) -> dict[str, dict]:
    """Runs whose verdicts can be reviewed, by id: extraction runs on splits that are not
    held out (the runs analysis and the dev set read)."""
    from pipeline.problems.sets import is_test_split

    return {r["run_id"]: r for r in store.runs("extract") if not is_test_split(r["split"])}


def _items(store: Store, run_id: str | None = None) -> list[dict]:
    """Every judged generation of a reviewable run, with its reasons and decision."""
    with store.read():
        runs, gen_params, edits = reviewable_runs(store), store.runs_gen_params(), store.edits()
        rows = store.generations_view(run_id)
    decided = decisions(store, edits)
    out = []
    for r in rows:
        if r["run_id"] not in runs or r["error"] is not None or r["correct"] is None:
            continue
        key = key_of(r)
        d = decided.get(key)
        stored = bool(r["correct"])
        out.append(dict(
            r, id=item_id(key), key="/".join(key), stored=stored,
            verdict=d["correct"] if d else stored,
            decision=None if d is None else ("confirmed" if d["correct"] == stored
                                             else "overridden"),
            edit_id=d["edit_id"] if d else None,
            reasons=reasons(r, gen_params.get(r["run_id"], {}).get("max_new_tokens"))))
    return out


def queue(store: Store, run_id: str | None = None, reviewed: bool = False) -> list[dict]:
    """Doubtful generations still waiting for a decision, each with `reasons`; with
    `reviewed`, also those decided (and any generation a person decided on)."""
    return [r for r in _items(store, run_id)
            if (r["reasons"] and r["decision"] is None)
            or (reviewed and r["decision"] is not None)]


def find(store: Store, ident: str) -> dict:
    """A reviewable generation by its id (8 hex digits) or its key run/dataset/split/pid."""
    ident = ident.strip()
    hits = [r for r in _items(store) if ident in (r["id"], r["key"])]
    if not hits:
        raise ValueError(f"no judged generation {ident!r} of a train-split extraction run "
                         "(ids are listed by `sei review`)")
    return hits[0]


# -- decisions: edits in the log ------------------------------------------------------------


def decide(store: Store, ident: str | dict, correct: bool, author: str | None = None) -> int:
    """Record a decision on a generation's verdict (an undoable edit); returns its id. A
    decision equal to the judge's verdict confirms it; the other one overrides it. Judged
    wrong from now on, a generation gets a bad-case id (analysis keys keyphrases on it)."""
    r = find(store, ident) if isinstance(ident, str) else ident
    if r["decision"] is not None and r["verdict"] == correct:
        raise ValueError(f"{r['id']} is already {r['decision']} as {_WORD[correct]} "
                         f"(edit {r['edit_id']})")
    payload = {"run_id": r["run_id"], "dataset": r["dataset"], "split": r["split"],
               "pid": r["pid"], "correct": bool(correct), "stored": r["stored"],
               "reasons": [x["code"] for x in r["reasons"]]}
    with store.write():  # one transaction: the case id and the edit
        if not correct:
            store.ensure_bad_case(r["run_id"], r["dataset"], r["split"], r["pid"])
        return store.add_edit(OP, payload, author)


def confirm(store: Store, ident: str | dict, author: str | None = None) -> int:
    """Keep the judge's verdict (the generation leaves the queue); returns the edit id."""
    r = find(store, ident) if isinstance(ident, str) else ident
    return decide(store, r, r["stored"], author)


def override(store: Store, ident: str | dict, correct: bool, author: str | None = None) -> int:
    """Set the verdict to `correct` against the judge's; returns the edit id."""
    return decide(store, ident, correct, author)


def undo(store: Store, edit_id: int | None = None, author: str | None = None) -> int:
    """Undo a review decision (by default the one made effective last); returns the undo's
    edit id. `sei types undo` and the map's Undo take back any edit, decisions included."""
    edits = store.edits()
    if edit_id is None:
        edit_id = taxonomy.last_effective(edits, (OP,))
        if edit_id is None:
            raise ValueError("no review decision in force to undo")
    elif edit_id not in {e["edit_id"] for e in edits if e["op"] == OP}:
        raise ValueError(f"edit {edit_id} is not a review decision")
    return taxonomy.undo(store, edit_id, author)


def counts(items: list[dict]) -> dict[str, int]:
    """How many items carry each reason (an item may carry several)."""
    out = dict.fromkeys(REASONS, 0)
    for r in items:
        for x in r["reasons"]:
            out[x["code"]] += 1
    return out


def point_verdicts(store: Store, points: list[dict]) -> dict[int, str]:
    """What the Error map colours keyphrases by under "verdict" (kp_id -> label): their
    case's verdict as reviewed ("overridden to correct", "confirmed wrong"), else doubtful
    with its first reason, else "wrong"."""
    by_key = {r["key"]: r for r in _items(store)}
    cases = {c["case_id"]: "/".join(key_of(c)) for c in store.bad_cases()}
    out = {}
    for p in points:
        r = by_key.get(cases.get(p["case_id"]))
        if r is None:
            out[p["kp_id"]] = "wrong"
        elif r["decision"]:
            out[p["kp_id"]] = f"{r['decision']} {_WORD[r['verdict']]}"
        elif r["reasons"]:
            out[p["kp_id"]] = f"doubtful: {r['reasons'][0]['text']}"
        else:
            out[p["kp_id"]] = "wrong"
    return out


def overridden_to_correct(store: Store) -> set[int]:
    """Bad-case ids a person judged right: no clustering places their keyphrases."""
    ov = overrides(store)
    if not ov:
        return set()
    return {c["case_id"] for c in store.bad_cases() if ov.get(key_of(c)) is True}
