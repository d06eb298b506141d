"""References that cannot match themselves (issue 38, item 7): a problem whose reference the
judge does not read back from "The answer is X." is scored wrong whatever the model
answers. An evaluation of a set that holds such problems says how many: `sei evaluate` in
its output (the count in its JSON, a warning line), and the Iterations page beside the
accuracy and before an evaluation is launched. A reference with a unit note in
parentheses ("97 (push-ups)", "350 (g)") matches itself and is not counted."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from pipeline.core.config import ROOT
from pipeline.shells.cli import cli

# two references no answer can match (an expression cut off), two with a unit note
ANSWERS = ["2", "97 (push-ups)", "3^", "350 (g)", "12 -", "10"]
LINE = "u/test: 2 references the judge cannot match to themselves"


@pytest.fixture
def evaluated(store, scripted, tmp_path):
    """The set u/test imported through the CLI, then the base model's evaluation of it by
    `sei evaluate` (the scripted target answers); the store and that command's result."""
    f = tmp_path / "u.jsonl"
    f.write_text("".join(json.dumps({"q": f"Question {i}: how many?", "a": a}) + "\n"
                         for i, a in enumerate(ANSWERS)))
    r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(f),
                                 "--format", "generic", "--map", "question=q,answer=a",
                                 "--dataset", "u", "--split", "test"])
    assert r.exit_code == 0, r.output
    # the import says it too, and counts only the two (the unit notes match themselves)
    assert "6 new; 2 reference(s) the judge cannot match to themselves" in r.output
    r = CliRunner().invoke(cli, ["--db", str(store.path), "evaluate", "--iteration", "0",
                                 "--set", "u/test"])
    assert r.exit_code == 0, r.output
    return store, r


def test_sei_evaluate_says_how_many_references_cannot_match_themselves(evaluated):
    store, r = evaluated
    out = json.loads(r.stdout)
    assert out["unmatchable_references"] == {"u/test": 2}
    assert r.stderr.strip().splitlines()[-1] == f"warning: {LINE} (\"The answer is X.\" is " \
        "not judged equal to X), so those 2 problems are scored wrong whatever the model answers"
    assert len(store.run_items(out["runs"]["u/test"])) == len(ANSWERS)


def test_iterations_page_says_how_many_references_cannot_match_themselves(evaluated):
    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT / "dashboard"))
    at = AppTest.from_file(str(ROOT / "dashboard/pages/7_Iterations.py"),
                           default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning if w.value.startswith(LINE)]
    # beside the accuracy of the evaluation run, and in the Evaluate tab before a run
    assert [w.endswith("the accuracy counts them as wrong.") for w in warnings] == [True, False]



def test_sei_iterate_counts_per_set_the_references_that_cannot_match_themselves(looped_db):
    """`sei iterate` (the suite's one real loop, tests/conftest.py) evaluates every arm on
    the same problems and says with its result, per evaluation set, how many of them no
    answer can get right: the count evaluate.unmatchable finds in those problems. A count
    above zero is also a warning line, written by the one function `sei evaluate` uses."""
    from conftest import cached_store

    from pipeline.stages.evaluate import unmatchable
    from pipeline.storage.store import Store

    out = json.loads((cached_store("looped").parent / "iterate.json").read_text())
    store = Store(looped_db)
    sets = sorted(out["unmatchable_references"])
    assert sets == ["demo/test", "svamp/test"]
    runs = out["iterations"][0]["arms"]["sei"]["eval"]
    for s in sets:
        pids = {x["pid"] for x in store.run_items(runs[s])}
        assert len(pids) == 8
        assert out["unmatchable_references"][s] == len(unmatchable(store, *s.split("/"),
                                                                   pids=pids))
