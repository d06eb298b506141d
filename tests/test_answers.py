"""Tests for pipeline/problems/answers.py: extraction, equivalence, judging, deadlines, no eval.

Cases that once failed and were fixed in answers.py: magnitude words ("3 million"),
LaTeX thin-space separators, "(C) 7" as a choice, Euler's e vs choice letters, range
hyphens, two "answer is" on one line, exponent towers that held the GIL past the deadline,
and a judge pool starved by abandoned comparisons.

Decisions on debatable labels: "50%" == "50" (a percent answer given without the sign)
and "0.5" == "50%" (same number) are both accepted; "50" vs "0.5" is not. Rounded
decimals of irrationals/repeating fractions ("0.333", "2.828", "3.14") are not equal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.problems.answers import (
    MAX_LEN,
    answers_equal,
    cut_at_final_answer,
    extract_answer,
    final_answer_end,
    judge,
)

ROOT = Path(__file__).resolve().parents[1]


# (gold, predicted, expected_equal)
PAIRS = [
    # fractions vs decimals
    ("1/2", "0.5", True),
    (r"\frac{1}{2}", "0.5", True),
    ("0.5", r"\frac12", True),                # brace-less \frac
    ("1/3", "2/6", True),
    (r"\frac{1}{3}", "0.333", False),         # a rounding, not the value
    (r"\sqrt{8}", "2.828", False),            # same
    # percent
    ("50%", "50", True),                      # decision: percent sign optional
    ("0.5", "50%", True),                     # 50% is 0.5
    ("50", "0.5", False),
    ("50%", "0.5%", False),
    # thousands separators vs tuples
    ("1000", "1,000", True),
    ("1,000,000", "1000000", True),
    ("1234.5", "$1,234.50", True),
    ("1000", "1{,}000", True),                # LaTeX-braced comma
    ("1000", "1,000 dollars", True),          # separator and unit together
    ("1000", r"1\,000", True),
    ("15", "1,5", False),                     # a pair, not fifteen
    ("1.5", "1,5", False),                    # no decimal-comma reading
    ("1234", "12,34", False),                 # not a valid thousands group
    # units and currency
    ("18", "18 dollars", True),
    ("18", r"\$18", True),
    ("5", r"5\text{ cm}", True),
    ("72", r"72 \text{ miles per hour}", True),
    ("45", r"45^\circ", True),
    ("18", "18 dollars and 50 cents", False),  # that is 18.50
    ("3", r"3\text{ million}", False),
    ("3000000", "3 million", True),
    # signs
    ("-3", "3", False),
    ("3", "-3", False),
    ("5", "-5 degrees", False),               # the sign survives unit stripping
    ("-0.5", r"-\frac{1}{2}", True),
    ("-3", "\u22123", True),                  # unicode minus sign
    ("-2", r"\sqrt{4}", False),               # principal root only
    ("2", r"\pm 2", False),
    # intervals
    ("(1,3]", "(1,3)", False),                # open vs half-open
    ("(1,3)", "(1,3]", False),
    ("(1,3]", r"\left( 1, 3 \right]", True),
    (r"[0,\infty)", r"[0, \infty)", True),
    (r"[0,\infty)", r"(0,\infty)", False),    # 0 included vs excluded
    (r"-\infty", r"\infty", False),
    # fraction macros and \text
    (r"\frac{3}{4}", r"\dfrac{3}{4}", True),
    (r"\tfrac{3}{4}", "0.75", True),
    (r"\text{Monday}", "Monday", True),
    (r"\text{Monday}", "Tuesday", False),
    # equations
    ("3", "x=3", True),
    ("3", "x = 4", False),
    ("7", "7 or 8", False),                   # hedging is not an answer
    # choice letters
    ("B", "(B)", True),
    ("B", r"\text{(B)}", True),
    ("D", "d)", True),
    ("B", "C", False),
    ("B", "2", False),
    ("C", "(C) 7", True),
    ("e", "e^{1}", True),
    # radicals, pi, powers, algebra
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"3\sqrt{2}", r"\sqrt{8}", False),
    (r"2\pi", r"\pi \cdot 2", True),
    (r"\pi", "3.14", False),                  # approximation of pi
    ("1000", "10^3", True),
    ("1024", "2^{10}", True),
    ("2^{10}", "1000", False),
    ("6", "3!", True),
    ("(x+1)^2", "x^2+2x+1", True),
    ("x^2+1", "(x+1)^2", False),
    # sets and tuples
    (r"\{1,2,3\}", r"\{3,2,1\}", True),       # sets are unordered
    (r"\{1,2\}", r"\{1,2,3\}", False),
    ("(1,2)", "(2,1)", False),                # ordered pairs are ordered
    # plain numbers
    ("10", "10.00", True),
    ("5", "5.01", False),
    ("100", "1000", False),
    ("1000000", "1000001", False),
]


@pytest.mark.parametrize("gold,pred,expected", PAIRS)
def test_answers_equal(gold, pred, expected):
    # answers_equal(pred, gold), as pipeline/stages/extract.py and tests/test_data.py call it
    assert answers_equal(pred, gold) is expected


@pytest.mark.parametrize("text,expected", [
    ("3 + 4 = 7\n#### 7", ("7", "####")),
    ("#### 1,000\nsome trailing chatter 5", ("1,000", "####")),
    ("The answer is 7\n#### ", ("7", "answer_is")),   # empty #### falls through
    ("The answer is 5.", ("5", "answer_is")),
    (r"The answer is $\boxed{5}$.", ("5", "answer_is")),
    ("The answer is 3.\nWait, the final answer is: **4**", ("4", "answer_is")),
    ("The answer is 3, no wait, the answer is 4.", ("4", "answer_is")),
    ("The answer is (B).", ("(B)", "answer_is")),
    ("The final answer is 12 dollars.\nAnd 99 more", ("12 dollars", "answer_is")),
    (r"first \boxed{1}, then \boxed{\frac{\sqrt{3}}{2}} at last", (r"\frac{\sqrt{3}}{2}", "boxed")),
    (r"so \boxed{x^{2^{3}}}", ("x^{2^{3}}", "boxed")),
    (r"\fbox{7}", ("7", "boxed")),
    (r"unclosed \boxed{5", ("5", "last_number")),
    (r"empty \boxed{ }", (None, "none")),
    ("She had 3 apples, then 5.", ("5", "last_number")),
    ("It costs $12.50 in total", ("12.50", "last_number")),
    ("It costs $1,234 in total", ("1,234", "last_number")),
    ("about .75 of it", (".75", "last_number")),
    ("so x = -3 here", ("-3", "last_number")),
    ("1 / 2", ("1/2", "last_number")),
    ("", (None, "none")),
    ("no numbers here at all", (None, "none")),
    ("She read pages 12-15 of the book", ("15", "last_number")),
    # the answer is the result, never the sentence after it (issue 24, item 6)
    ("The answer is 9 * 8 = 64. Diego's ticket total is 64 dollars.", ("64", "answer_is")),
    ("The answer is 3.5. Then we stop", ("3.5", "answer_is")),
    ("The answer is 1/2 = 0.5", ("0.5", "answer_is")),
    ("The answer is 5 dollars. So Tom pays 5.", ("5 dollars", "answer_is")),
    # cut off mid-equation: no answer, not the operand before the "="
    ("First 6 + 5 = 11. Then 11 - 2 =", (None, "none")),
    ("The answer is 11 - 2 =", (None, "none")),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_judge_correct_and_wrong():
    ok = judge(r"Thus the answer is $\boxed{\dfrac{1}{2}}$.", "0.5")
    assert ok["correct"] is True and ok["pred"] == r"\dfrac{1}{2}" and ok["method"] == "answer_is"
    bad = judge("Adding up, 40 + 1 = 41\n#### 41", "42")
    assert bad == {"pred": "41", "method": "####", "correct": False, "detail": "math-verify"}


@pytest.mark.parametrize("output", ["", None, "I don't know.", r"\boxed{}"])
def test_judge_without_answer(output):
    assert judge(output, "5") == {"pred": None, "method": "none", "correct": False,
                                  "detail": "no answer found"}


def test_overlong_answer_rejected():
    long = "1" * (MAX_LEN + 1)
    for out, ref in ((f"#### {long}", "5"), ("#### 5", long)):
        r = judge(out, ref)
        assert r["correct"] is False and "too long" in r["detail"]
    # equal numbers, written differently: refused for their length, not compared
    assert answers_equal(long, long + ".0") is False
    assert answers_equal(long[:-3], long[:-3] + ".0") is True  # within MAX_LEN: compared


def test_model_output_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    outputs = [payload, f"The answer is {payload}", f"#### {payload}", rf"\boxed{{{payload}}}",
               f"#### (lambda: {payload})()", f'#### eval("{payload}")']
    for out in outputs:
        r = judge(out, "12345")
        assert r["correct"] is False and isinstance(r["detail"], str)
    with ThreadPoolExecutor(1) as ex:  # the worker-thread path too
        assert ex.submit(judge, f"#### {payload}", "12345").result(timeout=30)["correct"] is False
    assert not marker.exists()


@pytest.mark.slow
def test_deadline_off_main_thread():
    # sympy needs ~6 s to compare this with 1; the deadline is 1 s.
    with ThreadPoolExecutor(1) as ex:
        r = ex.submit(judge, "#### (x+y+z)^{40}", "1", 1.0).result(timeout=60)
    assert r["correct"] is False and r["detail"] == "timeout"


# Run on the main thread of a fresh interpreter, as the CLI and a job worker judge, not in
# the test process, whose state depends on what ran before it there: the comparison that
# the slow test above abandons to a daemon thread goes on for seconds beside this one
# (sharing sympy's caches and the GIL), and any SIGALRM handler or interval timer, sympy
# cache entry or half-imported module another test leaves would be this test's too.
_ON_MAIN_THREAD = """\
import json, signal, threading
from pipeline.problems.answers import judge
fired = []
def callers(*a):
    fired.append(1)
signal.signal(signal.SIGALRM, callers)
signal.setitimer(signal.ITIMER_REAL, 3600)
slow = judge("#### (x+y+z)^{40}", "1", 0.2)
quick = judge("#### (x+y+z)^{2}", "x^2+y^2+z^2+2*x*y+2*x*z+2*y*z", 5.0)
left, _ = signal.getitimer(signal.ITIMER_REAL)
signal.setitimer(signal.ITIMER_REAL, 0)
print(json.dumps({"main": threading.current_thread() is threading.main_thread(),
                  "slow": slow, "quick": quick, "left": left, "fired": fired,
                  "handler_is_the_callers": signal.getsignal(signal.SIGALRM) is callers}),
      flush=True)
"""


def test_deadline_on_main_thread_is_the_one_asked():
    """Where the CLI and job workers judge. 0.2 s asked: a timeout, although math-verify's
    own (whole-second) limit would have let it run; a timer set by someone else survives."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", _ON_MAIN_THREAD], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("judge did not return within 120 s")  # a liveness bound, not a timing
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["main"] is True
    assert r["slow"]["correct"] is False and r["slow"]["detail"] == "timeout", r["slow"]
    assert r["quick"]["correct"] is True, r["quick"]
    # the caller's timer and handler are back: the timer still runs, the handler installed
    # is the caller's, and it never ran meanwhile
    assert 3000 < r["left"] <= 3600 and r["fired"] == [], r
    assert r["handler_is_the_callers"] is True


def test_exponent_tower_deadline_off_main_thread():
    # In a subprocess: a hang here would otherwise freeze the whole test run.
    script = (
        "import json, os, threading\n"
        "from pipeline.problems.answers import judge\n"
        "out = {}\n"
        "t = threading.Thread(target=lambda: out.update(judge('#### 9^{9^{9^{9}}}', '1', 2.0)),"
        " daemon=True)\n"
        "t.start(); t.join(60)\n"
        "print(json.dumps(out), flush=True); os._exit(0)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("judge did not return within 15 s")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["correct"] is False and r["detail"].startswith("too costly")
    for costly in ["2^{100000}", "5000!", "10**99999"]:
        assert judge(f"#### {costly}", "1")["detail"].startswith("too costly")
    assert judge("#### 2^{10}", "1024")["correct"]  # small powers are still compared


def test_timeouts_do_not_starve_later_comparisons():
    # Each of these takes ~2 s in sympy and is abandoned after 0.3 s.
    with ThreadPoolExecutor(3) as ex:
        slow = [ex.submit(judge, "#### (x+y+z)^{25}", "1", 0.3) for _ in range(2)]
        assert all(f.result(timeout=60)["detail"] == "timeout" for f in slow)
        r = ex.submit(judge, "#### 0.5", "1/2", 1.0).result(timeout=60)
    assert r["correct"] is True, r


def test_math_verify_says_nothing_about_its_own_timeout(caplog):
    """We bound every comparison ourselves; its 'Timeout is disabled' warning is noise."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    with caplog.at_level(logging.WARNING):  # off the main thread, as in jobs and servers
        with ThreadPoolExecutor(1) as ex:
            assert ex.submit(judge, "The answer is 3/6.", "1/2").result()["correct"]
    assert not [r for r in caplog.records if r.name.startswith("math_verify")]


# An evaluation run stops each row at its first complete final answer (final_answer_end).
# Real MATH-500 and college-math outputs were stopped mid-answer when "10" in "The answer is
# 10 x^{2}" was taken for a complete number (preds "3^", "16 x^{", "10x^", "2x - ", "$45\\",
# "12k", "7 + 2" of "7 + 2i"): an answer that goes on as LaTeX or algebra is complete only at
# the end of its line, which the judge reads whole. (Plain answers: tests/test_loop_units.py.)
@pytest.mark.parametrize("prefix", [
    "The answer is 10", "The answer is 10 x", "The answer is 10 x^", "The answer is 16 x^{",
    "The answer is 16 x^{2}", "The answer is 3^", "The answer is 10x^", "The answer is 2x - ",
    "The answer is $45\\", "The answer is $2 \\", "The answer is $2 x+", "The answer is 12k",
    "The answer is: 7 + 2i", "The answer is $2a", "The answer is 2 + 2 + 3k",
    "The answer is: \n$2x+", "The answer is 5 x^", "The answer is 10 - x",
    "The answer is 2 sqrt(3)", "The answer is 10 xy", "The answer is 5!",
    "The answer is $2 x+1$\n",          # the next line may be "$y = 3$", read with it
    "The answer is 16 x^{\n",           # a brace still open
])
def test_an_answer_that_goes_on_as_latex_or_algebra_is_not_complete(prefix):
    assert final_answer_end(prefix) is None


@pytest.mark.parametrize("text,cut", [
    ("The answer is 10 x^{2} + 3x.\nSo we are done.", "The answer is 10 x^{2} + 3x."),
    ("The answer is 3^{4}\n\nNext", "The answer is 3^{4}"),
    ("The answer is $45\\pi$ cm.\nNext", "The answer is $45\\pi$ cm."),
    ("The answer is: 7 + 2i\nNext", "The answer is: 7 + 2i"),
    ("The answer is 12k\n", "The answer is 12k"),
    ("The answer is 10 - x\n", "The answer is 10 - x"),
    ("The answer is $2 x+1$\n$y=3$\nNext", "The answer is $2 x+1$\n$y=3$"),
    ("The answer is $2 x+1$\n\nNext", "The answer is $2 x+1$"),
    ("The answer is 3, 5, 7\nNext", "The answer is 3, 5, 7"),
])
def test_an_answer_in_latex_or_algebra_ends_with_its_line(text, cut):
    end = final_answer_end(text)
    assert (text[:end] if end is not None else None) == cut
    # the judge reads the same answer in the cut text as in the whole answer line
    assert extract_answer(cut) == extract_answer(text.rsplit("\nNext", 1)[0])


@pytest.mark.parametrize("text,cut", [
    # plain answers still end at once
    ("The answer is 42. So", "The answer is 42."),
    ("The answer is 42\n", "The answer is 42"),
    ("#### 7\n", "#### 7"),
    ("The answer is $3.50 each", "The answer is $3.50"),
    ("The answer is 8 * 7 = 56. Next", "The answer is 8 * 7 = 56."),
    ("The answer is 18 cm.\n", "The answer is 18"),
    ("The answer is 25%.\n", "The answer is 25%."),
    ("The answer is 5 xylophones", "The answer is 5"),
    ("The answer is 7 apples\n", "The answer is 7"),
])
def test_a_plain_answer_still_ends_at_once(text, cut):
    assert cut_at_final_answer(text) == cut


# A note in parentheses after a number that names what is counted or its unit, whatever its
# spelling (issue 38): hyphens, one letter, several words. The reference matches the bare
# number and itself.
@pytest.mark.parametrize("reference,number", [
    ("97 (push-ups)", "97"),
    ("15 (tee-shirts)", "15"),
    ("15 (t-shirts)", "15"),
    ("350 (g)", "350"),
    ("3 (m)", "3"),
    ("5 (in)", "5"),
    ("12 (square feet)", "12"),
    ("70 (miles per hour)", "70"),
    ("4 (children's tickets)", "4"),
    ("2 (in total)", "2"),
    ("15 (balls).", "15"),
    ("-5 (degrees)", "-5"),
])
def test_a_unit_note_in_parentheses_is_stripped(reference, number):
    assert judge(f"The answer is {number}.", reference)["correct"]
    assert judge(f"The answer is {reference}.", reference)["correct"]
    assert not judge(f"The answer is {int(number) + 1}.", reference)["correct"]


# ...and never a note that may change the value: a digit or an operator in it, a letter or
# two that are no unit symbol (a variable), a word of mathematics. Such a reference does not
# match the bare number, yet still matches itself.
@pytest.mark.parametrize("reference,number", [
    ("3 (2)", "3"),               # 3 times 2
    ("3 (x+1)", "3"),
    ("3 (mod 5)", "3"),           # a residue class, not the integer 3
    ("3 (mod n)", "3"),
    ("3 (x)", "3"),               # a variable, not a unit symbol
    ("3 (xy)", "3"),
    ("3 (x-y)", "3"),
    ("3 (a)", "3"),
    ("2 (pi)", "2"),
    ("4 (squared)", "4"),
    ("3 (thousand)", "3"),
])
def test_a_note_that_may_change_the_value_is_kept(reference, number):
    from pipeline.problems.answers import normalize

    assert normalize(reference) != number
    assert not judge(f"The answer is {number}.", reference)["correct"]
    assert judge(f"The answer is {reference}.", reference)["correct"]
