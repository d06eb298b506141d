"""Final-answer extraction and judging with math-verify.

Extraction order: a GSM8K `#### x` line, "The answer is x" (last occurrence), the last
`\\boxed{}`, then the last number. Comparison goes through math-verify's parser and
verifier (sympy), never through eval, with a time limit per comparison.

On the main thread (the CLI and job workers) the deadline is a SIGALRM interval timer of
exactly `timeout_s`; other threads (the app) cannot use signals, so there the comparison
runs in a fresh daemon thread that we stop waiting for at the deadline. Either way an
answer out of time counts as wrong, with detail "timeout".
A thread cannot interrupt C code that holds the GIL (a huge integer power), so inputs are
capped in length, and exponent towers, huge powers and factorials are refused up front.
"""

from __future__ import annotations

import logging
import queue
import re
import signal
import threading
import time
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# math-verify warns on every parse that its own timeout is off: we run each comparison
# under our own deadline (_compare_with_alarm), so the warning says nothing to a user and
# would fill every log and CLI run.
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).setLevel(logging.ERROR)

MAX_LEN = 300  # longer "answers" are not answers; they only feed sympy pathologies

# A minus sign counts only where it cannot be a hyphen ("pages 12-15" ends in 15, not -15).
_MINUS = r"(?:(?<![\w)])-)?"
_NUMBER = _MINUS + r"\$?\s?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|" + _MINUS + r"\$?\.\d+"
# "The answer is", "The final answer is:", "The answer to this math word problem is".
_ANSWER_IS = re.compile(r"(?:final\s+)?answer(?:\s+to\s+(?:this|the)(?:\s+[a-z]+){0,3}?\s+"
                        r"(?:problem|question))?\s+is\s*:?\s*", re.I)
_LAST_NUM = re.compile(_NUMBER)
# "B", "(B)", "B." and "(b) 7" are choice letters; a bare lowercase "e" is Euler's number.
_CHOICE = re.compile(r"^\(?([A-E])\)?[.:]?$|^\(?([A-Ea-e])\)(?:\s.*)?$")
_MAGNITUDE = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_MAG_RE = re.compile(r"^(-?\d[\d,]*(?:\.\d+)?)\s*(?:\\text\{\s*)?(thousand|million|billion|"
                     r"trillion)s?\s*\}?$", re.I)
# Exponent towers and huge powers or factorials: sympy would evaluate them in C while
# holding the GIL, which no thread-based deadline can interrupt. They are refused first.
_EXPONENT = re.compile(r"(?:\^|\*\*)\s*(?:\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}|\(([^()]*)\)|(\d+))")
_UNIT = (r"(?:\\(?:text|mbox|mathrm)\{[^{}]*\}|dollars?|cents?|units?|cm|mm|km|m|kg|g|lbs?|"
         r"pounds?|feet|foot|ft|inch(?:es)?|yards?|yd|miles?|mi|hours?|hrs?|hr|minutes?|mins?|"
         r"seconds?|days?|weeks?|months?|years?|degrees?|people|students|apples|cups?|pages?|"
         r"(?!(?:thousand|million|billion|trillion)s?\b)[a-zA-Z]+s)(?:\s*\^\s*\{?[23]\}?)?")
# After a number: units ("18 dollars", "5\text{ cm}", "22.1cm^{2}", "70 miles per hour",
# "6.6 \mathrm{mi} / \mathrm{hr}"); a note in parentheses is _NOTE's.
_UNITS = re.compile(rf"\s*{_UNIT}(?:\s*(?:/|per)\s*{_UNIT})*\s*\.?$")
# After a number: a note in parentheses that says what is counted or in what unit, in
# words ("15 (balls)", "97 (push-ups)", "15 (tee-shirts)", "350 (g)", "3 (m)", "12 (square
# feet)"). It is left where it may change the value: a digit or an operator in it ("3 (2)",
# "3 (x+1)", "3 (mod 5)"), a letter or two that are no unit symbol (a variable: "3 (x)",
# "3 (xy)"), or a word of mathematics ("2 (pi)", "3 (mod n)", "4 (squared)", "3 (thousand)").
_NOTE = re.compile(r"\s*\(\s*([A-Za-z][A-Za-z'’-]*(?:\s+[A-Za-z][A-Za-z'’-]*)*)\s*\)\s*\.?$")
_NOTE_SYMBOLS = frozenset("m g s h l L cm mm km kg mg ml mL cl dl kl ft in mi hr yd lb oz "
                          "KB MB GB TB".split())  # unit symbols of one or two letters
_NOTE_SMALL = frozenset("a an of in on to at by or per".split())  # beside other words only
_NOTE_MATH = frozenset("pi mod modulo sqrt sin cos tan cot csc log ln exp arcsin arccos "
                       "arctan sinh cosh tanh inf infinity squared cubed hundred hundreds "
                       "thousand thousands million millions billion billions trillion "
                       "trillions".split())


def _unit_note(tail: str) -> bool:
    """Whether `tail`, the text after a number, is only a note in parentheses naming what
    is counted or its unit (see _NOTE): stripped, it leaves the value as it was."""
    m = _NOTE.fullmatch(tail)
    if not m:
        return False
    words = m.group(1).split()
    named = False  # a unit symbol or a word of three letters or more
    for w in words:
        parts = [x for x in re.split(r"['’-]", w) if x]
        if any(x.lower() in _NOTE_MATH for x in parts):
            return False
        if w in _NOTE_SYMBOLS or any(len(x) >= 3 for x in parts):
            named = True
        elif not (w.lower() in _NOTE_SMALL and len(words) > 1):
            return False  # "x", "xy", "x-y": a variable, not a unit
    return named


def _balanced(text: str, start: int) -> str | None:
    depth, k = 1, start
    while k < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        k += 1
    return text[start:k - 1] if depth == 0 else None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...} (balanced braces): the one extractor
    for final answers and for importing MATH solutions."""
    i = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if i < 0:
        return None
    return _balanced(text, text.index("{", i) + 1)


_last_boxed = last_boxed


_LEFT, _RIGHT = re.compile(r"\\left(?![a-zA-Z])"), re.compile(r"\\right(?![a-zA-Z])")


def _open(s: str) -> bool:
    """Whether a piece of LaTeX leaves a delimiter open: $$, \\[, \\begin, \\left, {. (Not a
    single $, which may be a price: "The answer is $18.")"""
    t = s.replace("\\$", "")
    return (t.count("$$") % 2 == 1 or t.count("\\[") > t.count("\\]")
            or t.count("\\begin{") > t.count("\\end{")
            or len(_LEFT.findall(t)) > len(_RIGHT.findall(t))
            or t.count("{") > t.count("}"))


def _first_line(s: str) -> str:
    """The first line of an answer, running on over the next lines while a delimiter it
    opened is still open (a $$ display, a matrix written over several lines), or while
    math lines follow math lines ("$y_1=...$" then "$y_2=...$")."""
    lines = s.strip().split("\n")
    out = lines[0]
    for line in lines[1:]:
        if not _open(out) and not (re.search(r"\$\s*[,;]?\s*$", out)
                                   and out.lstrip().startswith("$")
                                   and line.lstrip().startswith("$")):
            break
        out += "\n" + line
    return out


# The end of a sentence: a full stop, then space and a capital letter or a digit ("64.
# Diego's total", "6. 6 minutes is 2 pages"; not "3.5", "e.g.").
_SENTENCE_END = re.compile(r"(?<=[^\s.])\.\s+(?=[A-Z\d])")
# A number as a result: "64", "$1,200", "-0.5", "3/4", "25%".
_RESULT = r"-?\$?\s?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?%?(?![.,/]?\d)"
# Plain arithmetic, or a chain of it, that ends in its result: "9 * 8 = 64", "5 x 5 = 25
# eggs", "100 * 5 * 8 = 100 * 12 = 1200" answer 64, 25 and 1200 (a unit or words after the
# result are left out). No letters but an "x" between numbers: "x = 5", "2x = 10" and
# "m = 100 \times .001" are answers as written. One character per step (no two ways to
# read a space), so a long chain with no result fails at once.
_ARITH = r"(?:[-\d\s.,$+*/×()^%]|(?<=[\d\s])x(?=\s*\$?\d))+"
_CALC = re.compile(rf"^{_ARITH}(?:={_ARITH})*=\s*(?P<result>{_RESULT})"
                   r"(?:[\s,;:]*[a-zA-Z(][^=]*)?$")
# An answer cut off mid-way: it ends in an operator, "^", "_", a backslash or "(", or
# leaves a brace open ("11 - 2 =", "3^", "16 x^{", "$2 \\").
_CUT = re.compile(r"[-=+*/×^_\\(]\s*$")
# A numbered list item: "7. To find ...", "2) Then" (a number of one or two digits).
_LIST_ITEM = re.compile(r"(?m)^([ \t]*)\d{1,2}[.)](?=[ \t]+\S)")
# A value alone: a number with at most one word after it ("64", "5 dollars", "$1,200").
_VALUE = re.compile(r"^-?\$?\s?\d[\d,]*(?:\.\d+)?(?:\s+[a-zA-Z]+)?$")
# A full stop or space at the end (not the "." of LaTeX's "\right.").
_END = re.compile(r"(?<!\\right)(?<!\\left)[.\s]+$")


def _words(s: str) -> int:
    """Words of two letters or more, LaTeX math, commands and braced arguments aside."""
    t = re.sub(r"\$[^$]*\$|\\[a-zA-Z]+", " ", s)
    while re.search(r"\{[^{}]*\}", t):
        t = re.sub(r"\{[^{}]*\}", " ", t)
    return len(re.findall(r"\b[a-zA-Z]{2,}\b", t))


def _unwrap(s: str) -> str:
    """An answer without its full stop and its math delimiters: "$30$." is 30; "(A)
    $f(-6)=0$" stays."""
    s = _END.sub("", s.strip())
    if s.startswith("$") or s.count("$") == 1:
        s = _END.sub("", s.strip("$").strip())
    return s


def _clean_tail(s: str) -> str:
    """The final answer in the text after "the answer is": a number, an expression, a
    choice letter or a LaTeX value, not a sentence around a number; "" when there is none.
    An answer with no number in it ("There is no solution") stays as written."""
    s = _first_line(s) if s.strip() else ""
    s = s.strip().strip("*").strip()
    b = _last_boxed(s)
    if b is not None:
        return b.strip()
    s = _unwrap(s)
    # the answer is its first sentence when that sentence is a value or a calculation
    # ("64. Diego's total is ...", "6. 6 minutes is 2 pages", "9 * 8 = 64. So ...")
    first = _unwrap(_SENTENCE_END.split(s, maxsplit=1)[0])
    m = _CALC.match(first)
    if m:
        return re.sub(r"[$\s]", "", m.group("result"))
    if first != s and _VALUE.match(first):
        return first
    braces = s.replace("\\{", "").replace("\\}", "")  # "\left\{ ... \right." is closed
    if _CUT.search(s) or braces.count("{") > braces.count("}"):  # cut off mid-way
        return ""
    # a number, then a sentence with no other number: the number ("75% of the toys are
    # not painted red"; "236 adult, 342 child" stays)
    m = re.match(_RESULT, s)
    rest = s[m.end():] if m else ""
    if rest[:1].isspace() and not re.search(r"\d", rest) and _words(rest) >= 2:
        return re.sub(r"[$\s]", "", m.group(0))
    return s


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer string, method) with method one of ####, answer_is, boxed, last_number, none."""
    if not text:
        return None, "none"
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        if tail:
            return tail.splitlines()[0].strip(), "####"
    matches = list(_ANSWER_IS.finditer(text))
    b = _last_boxed(text)
    if matches:  # the text after the last "answer is", even with two on one line
        tail = text[matches[-1].end():]
        # "The answer is:" then a numbered step on the next line ("7. To find ...") states
        # no answer; nor does a last "answer is" cut off mid-way ("The answer is 3^") or
        # with nothing after it: then there is no final answer, not some earlier number
        ans = ("" if "\n" in matches[-1].group(0) and _LIST_ITEM.match(tail)
               else _clean_tail(tail))
        if ans:
            return ans, "answer_is"
        if b is None or not b.strip():
            return None, "none"
    if b is not None and b.strip():
        return b.strip(), "boxed"
    # cut off mid-equation ("... = $236 - ", "= z + \frac{1"): its last number is no answer
    if re.search(r"(?:[=+*/×^]|[\s\d]-)\s*$|(?:\\(?!boxed|fbox)[a-zA-Z]+|[\^_])\{[^{}]*$",
                 text):
        return None, "none"
    # numbers that only number a list ("7. To find ...") are not answers
    body = _LIST_ITEM.sub(r"\1", text)
    if re.search(r"[A-Za-z]\s*$", text):
        # cut off mid-sentence ("... the maximum value of"): a number before the sentence
        # it was writing is no answer
        body = re.split(r"(?<=[.!?:])\s+|\n", body.rstrip())[-1]
    nums = _LAST_NUM.findall(body)
    if nums:
        return nums[-1].replace("$", "").replace(" ", ""), "last_number"
    return None, "none"


def normalize(ans: str) -> str:
    """Surface normalisation before math-verify sees the string."""
    s = ans.strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\!", "")
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = s.replace("\\$", "").replace("$", "").strip()
    # A line break is a space in LaTeX; left in, a matrix over several lines parses as
    # its last entry.
    s = re.sub(r"\s*\n\s*", " ", s)
    m = _CHOICE.match(re.sub(r"\\text\{\s*(.*?)\s*\}", r"\1", s))
    if m:
        return (m.group(1) or m.group(2)).upper()
    # LaTeX thousands separators: 1\,000 and 1{,}000.
    s = re.sub(r"(?<=\d)(?:\\,|\{,\}|\\ )(?=\d{3}\b)", "", s)
    m = _MAG_RE.match(s)
    if m:  # "3 million" -> 3000000, exactly
        try:
            v = Decimal(m.group(1).replace(",", "")).scaleb(_MAGNITUDE[m.group(2).lower()])
            s = format(v.normalize(), "f")
        except InvalidOperation:
            pass
    # Thousands separators in a plain number (not in tuples or intervals like (1,3]).
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    # Trailing units and words after a number: "18 dollars", "5\text{ cm}".
    m = re.match(r"^(-?[\d.,/]+(?:\\%|%)?)(.*)$", s)
    if m and m.group(2) and (_UNITS.fullmatch(m.group(2)) or _unit_note(m.group(2))):
        s = m.group(1)
    s = re.sub(r"\\text\{\s*([^{}]*?)\s*\}", r"\1", s)
    return s.rstrip(".").strip()


_warm_lock = threading.Lock()
_warmed = False


def _warm_up() -> None:
    """Build math-verify's LaTeX parser (ANTLR, sympy) once, outside any deadline: a
    deadline that fires halfway through its first use leaves it half built, and every
    later parse then fails, so correct answers are judged wrong (seen under load)."""
    global _warmed
    with _warm_lock:
        if _warmed:
            return
        from math_verify import parse, verify

        verify(parse("$x+1$", parsing_timeout=None), parse("$1+x$", parsing_timeout=None),
               timeout_seconds=None)
        _warmed = True


def _verify(gold: str, pred: str, timeouts: bool) -> bool:
    from math_verify import parse, verify

    t = 5 if timeouts else None
    g = parse(f"${gold}$", parsing_timeout=t)
    p = parse(f"${pred}$", parsing_timeout=t)
    if not g or not p:
        return gold.strip() == pred.strip()
    return bool(verify(g, p, timeout_seconds=t))


def answers_equal(a: str, b: str, timeout_s: float = 5.0) -> bool:
    """Whether two answers are equal (numerically or symbolically), within timeout_s."""
    return _compare(b, a, timeout_s)[0]


def _compare(gold: str, pred: str, timeout_s: float) -> tuple[bool, str]:
    if len(pred) > MAX_LEN or len(gold) > MAX_LEN:
        return False, "answer too long to compare"
    g, p = normalize(gold), normalize(pred)
    if g == p:
        return True, "identical after normalisation"
    if re.fullmatch(r"[A-E]", g) or re.fullmatch(r"[A-E]", p):
        return False, "different choice letters"
    if _too_costly(g) or _too_costly(p):
        return False, "too costly to compare (huge power or factorial)"
    _warm_up()
    if threading.current_thread() is threading.main_thread():
        return _compare_with_alarm(g, p, timeout_s)
    # A fresh daemon thread per comparison: one that overruns is abandoned without
    # holding up later comparisons (a shared pool would fill up with abandoned work).
    box: queue.Queue = queue.Queue(maxsize=1)

    def work():
        try:
            box.put((True, _verify(g, p, False)))
        except Exception as e:
            box.put((False, e))

    threading.Thread(target=work, daemon=True, name="judge").start()
    try:
        ok, val = box.get(timeout=timeout_s)
    except queue.Empty:
        return False, "timeout"
    if not ok:
        return False, f"parse failed: {type(val).__name__}"
    return bool(val), "math-verify"


class _Deadline(BaseException):
    """Raised by SIGALRM at the deadline; a BaseException so that sympy's own
    `except Exception` blocks cannot swallow it."""


def _compare_with_alarm(g: str, p: str, timeout_s: float) -> tuple[bool, str]:
    """On the main thread: a SIGALRM interval timer of exactly `timeout_s` (math-verify's
    own limit takes whole seconds only), restoring any handler and timer set before."""
    def on_alarm(signum, frame):
        raise _Deadline()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 1e-3))
    t0 = time.monotonic()
    try:
        return _verify(g, p, False), "math-verify"
    except _Deadline:
        return False, "timeout"
    except Exception as e:  # a parser failure is a wrong answer, not a crash
        return False, f"parse failed: {type(e).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:  # someone else's timer: give back what is left of it
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - t0), 1e-3))


def _too_costly(s: str) -> bool:
    if re.search(r"\d{3,}\s*!", s):
        return True
    for m in _EXPONENT.finditer(s):
        e = next(x for x in m.groups() if x is not None)
        if "^" in e or "**" in e or "!" in e:
            return True  # a tower
        digits = re.sub(r"[\s{}]", "", e)
        if digits.isdigit() and int(digits) > 10_000:
            return True
    return False


def judge(output: str, reference: str, timeout_s: float = 5.0) -> dict:
    """Grade a model output against the reference: the extracted answer, how it was
    extracted, whether it is correct and why."""
    pred, method = extract_answer(output or "")
    if pred is None:
        return {"pred": None, "method": method, "correct": False, "detail": "no answer found"}
    ok, detail = _compare(reference, pred, timeout_s)
    return {"pred": pred, "method": method, "correct": bool(ok), "detail": detail}


# -- second opinions for the review queue (analysis/review.py): no sympy, nothing to time out

_PLAIN = re.compile(r"^(-?)(\d+(?:\.\d*)?|\.\d+)(?:\s*/\s*(\d+))?(?:\\?%)?$")
_TEX_FRAC = re.compile(r"^(-?)\\frac\{(\d+)\}\{(\d+)\}$")


def _plain_value(s: str) -> Fraction | None:
    """The exact value of a plain number ("12", "-0.5", "3/4", "\\frac{3}{4}", "50%" read as
    50), else None."""
    m = _PLAIN.match(s) or _TEX_FRAC.match(s)
    if not m:
        return None
    sign, num, den = m.groups()
    try:
        v = Fraction(num) / (Fraction(den) if den else 1)
    except (ValueError, ZeroDivisionError):
        return None
    return -v if sign else v


def string_verdict(reference: str, pred: str) -> bool | None:
    """The string comparison beside math-verify: equal after normalisation, or (both plain
    numbers) equal as exact fractions; None when it has no opinion (not both numbers, and
    the strings differ). math-verify rounds (0.3333333 = 1/3) and reads "50%" as 0.5 or 50;
    this does neither, so where the two disagree a person should look."""
    g, p = normalize(reference), normalize(pred)
    if g == p:
        return True
    gv, pv = _plain_value(g), _plain_value(p)
    if gv is None or pv is None:
        return None
    return gv == pv


def _all_boxed(text: str) -> list[tuple[int, str]]:
    out, i = [], 0
    while True:
        j = min((k for k in (text.find("\\boxed{", i), text.find("\\fbox{", i)) if k >= 0),
                default=-1)
        if j < 0:
            return out
        body = _balanced(text, text.index("{", j) + 1)
        if body is not None and body.strip():
            out.append((j, body.strip()))
        i = j + 1


def final_answers(text: str) -> list[str]:
    """Every final answer an output states, in order: each `####` line, each "the answer
    is ..." that holds a number or a choice letter, each \\boxed{}. Repeats of one value
    (also "13 + 3 = 19" beside "19") count once; several different ones make a verdict
    depend on which one is read (extraction reads the last, evaluation the first)."""
    found: list[tuple[int, str]] = []
    for m in re.finditer(r"####[ \t]*([^\n]+)", text or ""):
        found.append((m.start(), m.group(1).strip()))
    for m in _ANSWER_IS.finditer(text or ""):
        ans = _clean_tail(text[m.end():])
        if ans and (re.search(r"\d", ans) or _CHOICE.match(ans)):
            found.append((m.start(), ans))
    found += _all_boxed(text or "")
    distinct: list[str] = []
    for _, a in sorted(found, key=lambda t: t[0]):
        if len(a) <= MAX_LEN and not any(string_verdict(_result(d), _result(a))
                                         for d in distinct):
            distinct.append(a)
    return distinct


def _result(a: str) -> str:
    """What an answer written as a calculation comes to ("3 * 7 = 21 people" -> "21
    people"); any other answer as it is."""
    m = re.match(r"^[-\d\s.,$+*/×()^]+=\s*(.+)$", a)
    return m.group(1) if m else a


# A final answer is complete once the character after its number cannot continue it:
# "The answer is 42." + " " or "\n", "#### 7\n", "answer is $3.50 each". A model may also
# write its answer as a computation ("The answer is 8 * 7 = 56."): the answer then runs to
# the end of the expression, which the judge reads as its result (56), so a cut must not
# fall after the "8". An answer that goes on as LaTeX or algebra ("10 x^{2} + 3", "3^{4}",
# "45\pi", "12k", "2 + x") is no number: the judge reads its whole line, so it is complete
# only where that line ends (a cut after "10 x^{" was an answer cut in two).
_FINAL = re.compile(r"(?:answer\s+is|####)\s*:?\s*(?P<ans>\$?\s*(-?\d[\d,]*(?:\.\d+)?"
                    r"(?:\s*/\s*\d+)?(?:\\?%)?))", re.I)
_NUM = r"\$?\s*-?\d[\d,]*(?:\.\d+)?"
_MORE = re.compile(rf"(?:[ \t]*[-+*/×x=][ \t]*{_NUM})+")
_GROWING = re.compile(r"[ \t]*(?:[-+*/×x=][ \t]*\$?[ \t]*-?)?")
# Words of one or two letters that may follow a number in a sentence or as its unit ("5 cm",
# "12 in all"); any other ("x", "xy", "pi") is a variable or a function.
_SHORT_WORDS = frozenset("cm mm km kg mg ml ft in mi hr yd lb oz am pm of is or to at as on by "
                         "so if an it we be no do up".split())
_FUNCTIONS = frozenset("sqrt sin cos tan cot sec csc log ln exp mod".split())
_MATH_AFTER = "\\^_{([!'"          # a LaTeX command, power, index, brace, bracket, factorial
_OPERATORS = "-+*/×÷=<>·"


def _goes_on(rest: str) -> str | None:
    """What the text after an answer's number (and its computation) says of it: "end"
    (complete there), "stop" (complete after a full stop), "skip" (the number goes on:
    "1,200", "7.5"), "math" (LaTeX or algebra goes on: complete at the end of its line), or
    None while that cannot be told yet."""
    body = rest.lstrip(" \t")
    if not body:
        return None
    spaced, d = body != rest, body[0]
    if d in "\r\n$":
        return "end"
    if not spaced and d in "0123456789,/":
        return "skip"
    if not spaced and d == ".":
        return None if len(body) < 2 else "skip" if body[1].isdigit() else "stop"
    if d.isalpha():
        word = re.match(r"[A-Za-z]+", body)
        after = body[word.end():] if word else body[1:]
        w = word.group(0).lower() if word else d
        if not spaced or w in _FUNCTIONS or (after[:1] and after[0] in _MATH_AFTER):
            return "math"   # "12k", "2x - 1", "2 sqrt(3)", "10 xy^{2}"
        if len(w) >= 3:
            return "end"    # "7.5 apples", "5 xylophones", "$3.50 each"
        if not after:
            return None     # " x" may be "x^{2}" or "xylophones"
        return "end" if w in _SHORT_WORDS else "math"
    if d in _MATH_AFTER or (spaced and d.isdigit()):
        return "math"
    if d in _OPERATORS:  # "2 + x", "10 - \frac": more than a number follows
        e = body[1:].lstrip(" \t")
        if not e:
            return None
        return "math" if e[0].isalpha() or e[0] in "\\({[" else "end"
    return "end"


def _line_end(text: str, start: int) -> int | None:
    """Where the answer that starts at `start` ends as the judge reads it (_first_line): at
    the newline after its line, once the delimiters it opened are closed and the next line
    cannot carry it on ("$y_1 = 2$" then "$y_2 = 3$"); None while that cannot be told."""
    out, i = "", start
    while True:
        nl = text.find("\n", i)
        if nl < 0:
            return None
        out += text[i:nl]
        if not _open(out):
            if not (re.search(r"\$\s*[,;]?\s*$", out) and out.lstrip().startswith("$")):
                return nl
            nxt = re.match(r"[^\S\n]*(\S)", text[nl + 1:])
            if nxt is None and "\n" not in text[nl + 1:]:
                return None
            if nxt is None or nxt.group(1) != "$":
                return nl
        out += "\n"
        i = nl + 1


def final_answer_end(text: str) -> int | None:
    """End offset of the first complete final answer ("The answer is N", "#### N", "The
    answer is 8 * 7 = 56", "The answer is 10 x^{2} + 1" at the end of its line), or None
    while it may still be growing. Generation can stop there; judging text cut at this
    offset gives the same verdict whether or not generation went on."""
    for m in _FINAL.finditer(text):
        more = _MORE.match(text, m.end())  # "8 * 7 = 56": the answer is the whole expression
        end = more.end() if more else m.end()
        rest = text[end:]
        if _GROWING.fullmatch(rest):
            return None  # "8", "8 ", "8 *", "8 * -": the expression may go on
        how = _goes_on(rest)
        if how == "skip":
            continue
        if how == "math":
            return _line_end(text, m.start("ans"))
        return None if how is None else end + (how == "stop")
    return None


def cut_at_final_answer(text: str) -> str:
    """The text up to its first complete final answer (all of it if there is none)."""
    end = final_answer_end(text)
    return text if end is None else text[:end]
