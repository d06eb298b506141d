"""Real outputs of the real model, read by hand (tests/data/hand_checked_outputs.json; how
they were sampled and the rule for a final answer are in its "about" and "rule"): the
extracted answer is the final answer, the verdict uses it, the offline analyzer's evidence
is an exact piece of the output in whole words, and its precision on a fresh hand-checked
sample of keyphrases (issue 24, item 6)."""

import json
from pathlib import Path

from pipeline.analysis.offline_analyzer import analyze_case, evidence_span
from pipeline.problems.answers import extract_answer, judge

DATA = json.loads((Path(__file__).parent / "data" / "hand_checked_outputs.json").read_text())
OUTPUTS = DATA["outputs"]
LABELS = DATA["keyphrase_labels"]
CASES = DATA["keyphrase_cases"]
# Keyphrases about something the output lacks have nothing in it to point at.
NO_SPAN = ("ignored the given quantity", "sign error", "empty output")


def _keyphrases(c: dict, pred: str | None) -> list[dict]:
    return analyze_case(c["question"], c["solution"], c["reference"], c["output"], pred,
                        c["completion_tokens"], c["max_new_tokens"])


def _on_word_boundaries(text: str, a: int, b: int) -> bool:
    def word(ch):
        return ch.isalnum() or ch == "_"
    return (a < b and not text[a].isspace() and not text[b - 1].isspace()
            and (a == 0 or not (word(text[a - 1]) and word(text[a])))
            and (b == len(text) or not (word(text[b - 1]) and word(text[b]))))


def test_the_sample_is_large_enough():
    """Large enough, and covering each verdict the judge gives: run on the sample, it finds
    no answer in some outputs, accepts some and rejects an answer in others."""
    assert len(OUTPUTS) >= 50
    assert sum(o["dataset"] == "demo" for o in OUTPUTS) >= 50
    verdicts = [judge(o["output"], o["reference"]) for o in OUTPUTS]
    no_answer = [v for v in verdicts if v["pred"] is None]
    right = [v for v in verdicts if v["correct"]]
    wrong = [v for v in verdicts if v["pred"] is not None and not v["correct"]]
    assert len(no_answer) >= 3 and len(right) >= 10 and len(wrong) >= 10, \
        (len(no_answer), len(right), len(wrong))
    assert {v["detail"] for v in no_answer} == {"no answer found"}


def test_extraction_is_the_hand_checked_final_answer():
    wrong = [(o["pid"], o["expected_pred"], extract_answer(o["output"])[0]) for o in OUTPUTS
             if extract_answer(o["output"])[0] != o["expected_pred"]]
    assert not wrong, wrong


def test_verdict_is_the_hand_checked_verdict():
    got = [(o["pid"], judge(o["output"], o["reference"])) for o in OUTPUTS]
    wrong = [(pid, o["expected_pred"], o["expected_correct"], j["pred"], j["correct"])
             for (pid, j), o in zip(got, OUTPUTS)
             if (j["pred"], j["correct"]) != (o["expected_pred"], o["expected_correct"])]
    assert not wrong, wrong


def test_evidence_is_an_exact_piece_of_the_output_in_whole_words():
    cases = [(o, extract_answer(o["output"])[0]) for o in OUTPUTS]
    cases += [(c, c["pred"]) for c in CASES.values()]
    kps = [(c["output"], k) for c, pred in cases for k in _keyphrases(c, pred)]
    with_span = [(out, k) for out, k in kps if k["evidence"]]
    assert len(with_span) >= 100
    bad = []
    for out, k in with_span:
        span = evidence_span(out, k["evidence"])
        if span is None or out[span[0]:span[1]] != k["evidence"] \
                or not _on_word_boundaries(out, *span):
            bad.append((k["text"], k["evidence"], span))
    assert not bad, bad
    # an empty evidence only where the keyphrase is about something the output lacks
    empty = [k["text"] for _, k in kps if not k["evidence"]]
    assert [t for t in empty if not t.startswith(NO_SPAN)] == []


def _now() -> dict[str, dict[str, str]]:
    """Per case, the keyphrases analyze_case writes now, with their evidence."""
    return {key: {k["text"]: k["evidence"] for k in _keyphrases(c, c["pred"])}
            for key, c in CASES.items()}


def test_analyzer_precision_on_a_fresh_hand_checked_sample():
    """50 keyphrases of real bad cases, none of analyzer_precision.json's, judged by hand
    against the output (text and evidence): 41 of 50 right (82%) when measured. Every one
    judged right is still written with the evidence judged, and no more of those written
    now are wrong than when measured (since the fixes none is: 41 of 41, the next test)."""
    assert len(LABELS) == 50
    now = _now()
    right = [x for x in LABELS if x["correct"]]
    lost = [(x["keyphrase"], x["evidence"], now[x["case"]].get(x["keyphrase"]))
            for x in right if now[x["case"]].get(x["keyphrase"]) != x["evidence"]]
    written = [x for x in LABELS if x["keyphrase"] in now[x["case"]]]
    still_wrong = [x for x in written if not x["correct"]]
    precision = sum(x["correct"] for x in written) / len(written)
    print(f"fresh hand-checked sample: {len(right)} of {len(LABELS)} right when sampled "
          f"({len(right) / len(LABELS):.0%}); now {len(written)} of them are written, "
          f"{len(still_wrong)} of those wrong: precision {precision:.0%}")
    # what is written now of the sample is exactly the part judged right: 41 of 41
    assert [(x["case"], x["keyphrase"]) for x in written] == \
        [(x["case"], x["keyphrase"]) for x in right]
    assert not lost, lost
    assert precision == 1.0 and len(written) == 41
    # every wrong one names its defect (the follow-up's list), and its case is still
    # analysed (1 to 3 keyphrases), without the keyphrase judged wrong
    wrong = [x for x in LABELS if not x["correct"]]
    assert wrong and all(x.get("defect") for x in wrong)
    assert [(x["case"], 1 <= len(now[x["case"]]) <= 3, x["keyphrase"] in now[x["case"]])
            for x in wrong] == [(x["case"], True, False) for x in wrong]


def test_no_keyphrase_judged_wrong_is_still_written():
    """The nine judged wrong (each names its defect: list numbers and "a / b" inside a
    calculation read as values, a restated answer line called a loop, a number with a unit
    called not a number, a given quantity taken for an intermediate value, a computed answer
    called a copy, "no checkable arithmetic" with unit-laden steps) are fixed: none is
    written any more."""
    now = _now()
    still_wrong = [x["keyphrase"] for x in LABELS
                   if not x["correct"] and x["keyphrase"] in now[x["case"]]]
    assert not still_wrong, still_wrong
