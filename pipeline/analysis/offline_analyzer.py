"""The offline analyzer: error keyphrases from evidence, with no instructor model.

It reads the wrong output against the question and the reference solution and reports
what it can show, most specific first:

- every arithmetic step it can parse (`a op b = c`, `<<a op b=c>>`) re-computed exactly;
  steps with units ("$5 per hour * 5 hours = $25") or said in words ("adding $50 and $200,
  which equals $100") too, what rests on those ranked after everything else;
- a missing or unparsable final answer, repetition loops, truncation at the token limit;
- quantities that appear from nowhere (not in the question, not an earlier result, not a
  common conversion constant) and given quantities that are never used;
- stopping early (the final answer is a reference intermediate value), a wrong final step
  after correct intermediate values, a copied question quantity, a scale slip (x10, x100).

Keyphrases name the step or quantity ("multiplication error: 12*7 given as 74 instead
of 84"), so that similar mistakes cluster together while the text stays checkable.
Arithmetic is parsed by a small recursive-descent parser over Fractions: model output
is never eval'ed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import regex

from pipeline.problems.answers import normalize

ANALYZER = "offline-analyzer-v1"

_NUM = r"\$?\d[\d,]*(?:\.\d+)?|\$?\.\d+"
_OPS = {"+": "addition", "-": "subtraction", "*": "multiplication", "/": "division"}
_OPCHARS = {"x": "*", "×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "\\times": "*",
            "\\cdot": "*", "\\div": "/"}
# Constants a solution may use without them being in the question.
_CONSTANTS = {Fraction(c) for c in (0, 1, 2, 3, 4, 7, 10, 12, 24, 52, 60, 100, 1000, 365)}
# The operation group is possessive ("++"): a chain "2 * 2 * ... * 2" with no "=" after it
# otherwise backtracks through every way of splitting the spaces between its terms
# (exponential; one GSM8K output of 80 terms hung the analyzer). Giving back terms can never
# make a match: the chain must end right before "=". The regex module's timeout bounds
# whatever else a text could do (STEP_TIMEOUT_S; the case is then recorded as failed).
STEP_TIMEOUT_S = 5.0
_STEP = regex.compile(
    r"(?<![\d.])(?P<expr>(?:\(|\$)?\s*-?(?:" + _NUM + r")"
    r"(?:\s*(?:[-+*/x×÷·−–]|\\times|\\cdot|\\div)\s*"
    r"\(?\s*\$?-?(?:" + _NUM + r")\s*\)?)++)\s*=\s*\$?\s*(?P<val>-?(?:" + _NUM + r"))"
    # The value is a whole number that ends the claim: in a chain "0.10*52 = 0.1*52 = 5.2"
    # the middle is another expression, not the value of the first (a bullet on the next
    # line is not an operator).
    r"(?![\d,.]*\d)(?![ \t]*(?:[-+*/x×÷·−–]|\\times|\\cdot|\\div)[ \t]*\(?[ \t]*\$?-?\.?\d)")
_ANNOT = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_OF_FRAC = re.compile(r"(\d+\s*/\s*\d+)\s+of\s+(?=\$?\d)")
_OF_PCT = re.compile(r"(\d+(?:\.\d+)?)\s*%\s+of\s+(?=\$?\d)")
# An operation said in words, with its result: "adding $50 and $200, which equals $100",
# "dividing $100 by 2, which equals $50", "12 times 3 is 36" (read as "a + b = c").
_W = r"(\$?\d+(?:,\d{3})*(?:\.\d+)?)(?!\d|\.\d)"
_IN_WORDS = re.compile(
    r"(?:\b(add(?:ing)?|the\s+sum\s+of)\s+" + _W + r"\s+and\s+" + _W
    + r"|\b(multiply(?:ing)?|divid(?:e|ing))\s+" + _W + r"\s+by\s+" + _W
    + r"|\b(subtract(?:ing)?)\s+" + _W + r"\s+from\s+" + _W
    + r"|(?<![\w.$])" + _W + r"\s+(plus|minus|times|multiplied\s+by|divided\s+by)\s+" + _W + ")"
    r"(?:\s*,)?\s*(?:(?:(?:which|that|this)\s+)?(?:equals|is\s+equal\s+to|gives(?:\s+us)?|makes"
    r"|is)\s|=|we\s+get\s|to\s+get\s)\s*" + _W, re.I)
# Units between a number and its operator or "=" ("$5 per hour * 5 hours = 25 hours",
# "90 megabytes / 5 megabytes per second = 16"), read past as "$" is. An addition or a
# subtraction of different units ("2 hours - 30 minutes = 90 minutes") is not read.
_UNIT_WORDS = re.compile(r"(?<=\d)(?:[ \t]+[A-Za-z]+){1,3}"
                         r"(?=[ \t]*(?:=|[-+*/×÷·x][ \t]*\(?[ \t]*\$?\.?\d))")


def num(s: str) -> Fraction | None:
    """A number written in text ('$1,200', '3/4') as an exact Fraction; None if it is not one."""
    s = s.replace("$", "").replace(",", "").strip()
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def show(x: Fraction) -> str:
    """A Fraction written back for people: an integer, else a short decimal."""
    if x.denominator == 1:
        return str(x.numerator)
    f = float(x)
    return f"{f:.4f}".rstrip("0").rstrip(".")


# -- a tiny exact arithmetic parser ----------------------------------------------------

def _tokens(expr: str) -> list[str]:
    for k, v in _OPCHARS.items():
        expr = expr.replace(k, v)
    expr = expr.replace("$", "").replace(",", "")
    toks = re.findall(r"\d+(?:\.\d+)?|\.\d+|[-+*/()]", expr)
    if "".join(toks) != re.sub(r"\s+", "", expr):
        raise ValueError(f"cannot parse {expr!r}")
    return toks


def evaluate(expr: str) -> Fraction:
    """Exact value of + - * / ( ) over decimals; ValueError on anything else."""
    toks, pos = _tokens(expr), [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else None

    def take():
        if pos[0] >= len(toks):
            raise ValueError("unexpected end")
        pos[0] += 1
        return toks[pos[0] - 1]

    def atom():
        t = take() if peek() is not None else None
        if t == "-":
            return -atom()
        if t == "(":
            v = sum_()
            if take() != ")":
                raise ValueError("unbalanced")
            return v
        if t is None or not re.match(r"[\d.]", t):
            raise ValueError(f"unexpected {t!r}")
        return Fraction(t)

    def prod():
        v = atom()
        while peek() in ("*", "/"):
            op, r = take(), atom()
            if op == "/" and r == 0:
                raise ValueError("division by zero")
            v = v * r if op == "*" else v / r
        return v

    def sum_():
        v = prod()
        while peek() in ("+", "-"):
            op, r = take(), prod()
            v = v + r if op == "+" else v - r
        return v

    v = sum_()
    if pos[0] != len(toks):
        raise ValueError("trailing tokens")
    return v


def _ops_of(expr: str) -> list[str]:
    toks = _tokens(expr)
    return [t for i, t in enumerate(toks) if t in _OPS and i > 0 and toks[i - 1] not in "+-*/("]


def _said(m: re.Match) -> str:
    """An operation said in words (_IN_WORDS) written as a step: "a + b = c"."""
    g = [x for x in m.groups() if x is not None]
    if g[0][0].isdigit() or g[0][0] == "$":  # "12 times 3 is 36"
        a, verb, b = g[:3]
    else:
        verb, a, b = g[:3]
        if verb.lower().startswith("subtract"):  # "subtracting a from b" is b - a
            a, b = b, a
    verb = verb.lower()
    op = ("+" if verb.startswith(("add", "the", "plus")) else
          "-" if verb.startswith(("subtract", "minus")) else
          "/" if verb.startswith("divid") else "*")
    return f"{a} {op} {b} = {g[-1]}"


# How the text steps are read from is written, in order (_plain; _in_text undoes them).
# The first _STRICT are read first; operations said in words and units read past are a
# looser reading, of steps that reading alone finds ("worded").
_REWRITES = ((_ANNOT, ""), (_OF_FRAC, r"\1*"), (_OF_PCT, r"\1/100*"), (_IN_WORDS, _said),
             (_UNIT_WORDS, ""))
_STRICT = 3


def _plain(text: str, layers: int = _STRICT) -> str:
    """The text steps are read from: annotations dropped, "1/5 of 70 = 14" and "25% of 80 =
    20" written as the products they are; with all the layers, also operations said in
    words ("adding $50 and $200, which equals $100") written as steps, and units before an
    operator or "=" left out."""
    for pattern, repl in _REWRITES[:layers]:
        text = pattern.sub(repl, text)
    return text


class AnalyzerTimeout(ValueError):
    """A text the offline analyzer could not read in its time bound (the case is recorded
    as failed and the analysis goes on)."""


def _mixed_units(text: str, m, ops: list[str]) -> bool:
    """Whether a step adds or subtracts different units ("2 hours - 30 minutes = 90"): the
    units were left out to read it, and its numbers do not add up as written."""
    if not set(ops) & {"+", "-"}:
        return False
    full = len(_REWRITES)
    written = text[_in_text(text, m.start("expr"), full):_in_text(text, m.start("val"), full)]
    units = {" ".join(u.split()).lower().rstrip("s") for u in _UNIT_WORDS.findall(written)}
    return len(units) > 1


def steps_in(text: str) -> list[dict]:
    """Arithmetic claims in a text: expr, claimed value, true value (None if unparsable),
    and whether only the looser reading found it ("worded": said in words, or read past
    units; "$5 per hour * 5 hours = 25 hours")."""
    out, seen, keys = [], set(), set()
    full = len(_REWRITES)
    try:
        found = [(None, m) for m in _ANNOT.finditer(text)] + [
            (layers, m) for layers in (_STRICT, full)
            for m in _STEP.finditer(_plain(text, layers), timeout=STEP_TIMEOUT_S)]
    except TimeoutError:
        raise AnalyzerTimeout(f"the arithmetic steps of a {len(text)}-character text could "
                              f"not be read within {STEP_TIMEOUT_S:g} s") from None
    for layers, m in found:
        annot, worded = layers is None, layers == full
        expr, val = m.group(1 if annot else "expr"), m.group(2 if annot else "val")
        claimed = num(val)
        expr = expr.strip().lstrip("$").strip()
        if claimed is None or (expr, val) in seen:
            continue
        seen.add((expr, val))
        try:
            true, ops = evaluate(expr), _ops_of(expr)
            key = (tuple(_tokens(expr)), claimed)
        except ValueError:
            true, ops, key = None, [], None
        if not ops or (worded and (key in keys or _mixed_units(text, m, ops))):
            continue
        keys.add(key)
        operands = [Fraction(t) for t in _tokens(expr) if re.match(r"[\d.]", t)]
        # where the step starts in the text itself (after a line break it starts from), and
        # in _plain(text) (`at`)
        lead = m.group(0)[:len(m.group(0)) - len(m.group(0).lstrip())]
        pos = m.start() if annot else _in_text(text, m.start() + lead.rfind("\n") + 1, layers)
        out.append({"expr": re.sub(r"\s+", "", expr), "claimed": claimed, "true": true,
                    "ops": ops, "operands": operands, "worded": worded, "pos": pos,
                    "at": len(_plain(text[:pos])) if worded else m.start()})
    return sorted(out, key=lambda s: s["at"])


def numbers_in(text: str) -> list[Fraction]:
    """Every number in a text, fractions such as '3 / 4' included, in order."""
    vals = []
    for m in re.finditer(r"(?<![\w.])-?(?:" + _NUM + r")(?:\s*/\s*\d+)?", text):
        s = m.group(0)
        if "/" in s:
            a, b = s.split("/")
            x, y = num(a), num(b)
            if x is not None and y:
                vals.append(x / y)
            continue
        v = num(s.rstrip("."))
        if v is not None:
            vals.append(v)
    return vals


_VALUE = re.compile(r"(?<![\w.])-?(?:" + _NUM + r")(?:\s*/\s*\d+)?")
_OP_BEFORE = re.compile(r"(?:[-+*/×÷·]|(?<=[\d\s])x|\\times|\\cdot|\\div)[ \t]*\(?[ \t]*$")
_OP_AFTER = re.compile(r"[ \t]*\)?[ \t]*(?:[-+*/×÷·=]|x[ \t]*\(?\$?\d|\\times|\\cdot|\\div)")


def _values(text: str, both: bool = False) -> list[tuple[Fraction, int, int]]:
    """The values an output writes, with where: numbers as numbers_in reads them, except the
    numbering of a list ("2. The number is 6") and an "a / b" that is a division inside a
    calculation ("110 / 2 = 50", "2 * 10 / 2"; not a proper fraction, "4 + 2/5"), read as
    its two numbers (with both, also as the fraction)."""
    out = []
    for m in _VALUE.finditer(text):
        s, line = m.group(0), text[text.rfind("\n", 0, m.start()) + 1:m.start()]
        if not line.strip() and re.match(r"\d{1,2}[.)][ \t]", text[m.start():]):
            continue  # a list number
        if "/" not in s:
            v = num(s)
            if v is not None:
                out.append((v, m.start(), m.end()))
            continue
        a, b = s.split("/")
        x, y = num(a), num(b)
        calc = (_OP_BEFORE.search(line) or _OP_AFTER.match(text, m.end())) \
            and not (x is not None and y is not None and 0 < x < y)
        if calc:
            j = m.start() + s.index("/") + 1
            out += [(v, i, k) for v, i, k in ((x, m.start(), m.start() + len(a.rstrip())),
                                               (y, j + len(b) - len(b.lstrip()), m.end()))
                    if v is not None]
        if (both or not calc) and x is not None and y:
            out.append((x / y, m.start(), m.end()))
    return out


# -- evidence: exact pieces of the output, in whole words -------------------------------

def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) widened so that no word is cut in two, without spaces at its ends."""
    start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
    while 0 < start < len(text) and _word(text[start - 1]) and _word(text[start]):
        start -= 1
    while 0 < end < len(text) and _word(text[end - 1]) and _word(text[end]):
        end += 1
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _span(text: str, start: int, end: int) -> str:
    """text[start:end] in whole words: an exact substring of the text that starts and ends
    on word boundaries."""
    a, b = _widen(text, start, end)
    return text[a:b]


def _snip(text: str, at: int, width: int = 60) -> str:
    """From `at` (where a step starts in the text) to the end of its line, at most about
    `width` characters."""
    eol = text.find("\n", at)
    return _span(text, at, min(at + width, eol if eol >= 0 else len(text)))


def _tail(text: str, n: int = 80) -> str:
    """The last n characters or so of the text, in whole words."""
    return _span(text, len(text) - n, len(text))


def _line_of(text: str, start: int, end: int, width: int = 80) -> str:
    """The line around text[start:end], at most about `width` characters, in whole words."""
    a = max(text.rfind("\n", 0, start) + 1, start - width // 2)
    eol = text.find("\n", end)
    return _span(text, a, min(eol if eol >= 0 else len(text), max(end, a + width)))


def _answer_span(output: str, pred: str | None) -> str:
    """Where the output states its final answer: the line of the last place it writes the
    extracted answer, in a line that says "answer" if there is one; "" if it does not
    write it as such."""
    hits = list(re.finditer(r"(?<![\w.])" + re.escape(pred) + r"(?!\w|\.\d)", output)) \
        if pred else []
    said = [m for m in hits if "answer" in output[output.rfind("\n", 0, m.start()) + 1:
                                                  m.start()].lower()]
    m = (said or hits or [None])[-1]
    return _line_of(output, m.start(), m.end()) if m else ""


def _number_span(output: str, value: Fraction) -> str:
    """The line of the first place the output writes a value of this value, read as
    _values reads it ("3/4" is 0.75, "110 / 2 = 50" has no 55); "" if none."""
    for v, a, b in _values(output):
        if v == value:
            return _line_of(output, a, b)
    return ""


def _phrase_span(output: str, phrase: str, width: int = 80) -> str:
    """A repeated phrase as the output writes it: the phrase is the output's own line, or its
    words lower-cased with the punctuation at their ends left out."""
    i = output.find(phrase)
    if i < 0:
        m = re.search(r"[.,;:!?]*\s+[.,;:!?]*".join(map(re.escape, phrase.split())), output,
                      re.I)
        if m is None:
            return ""
        i = m.start()
    return _span(output, i, i + width)


def _unsub(pattern: re.Pattern, repl, old: str, p: int) -> int:
    """Where position p of pattern.sub(repl, old) lies in old."""
    shift = 0
    for m in pattern.finditer(old):
        start, n = m.start() + shift, len(repl(m) if callable(repl) else m.expand(repl))
        if p < start:
            break
        if p < start + n:
            return m.start() + min(p - start, len(m.group(0)))
        shift += n - len(m.group(0))
    return p - shift


def _in_text(text: str, p: int, layers: int = _STRICT) -> int:
    """Where position p of _plain(text, layers) lies in the text itself."""
    texts = [text]
    for pattern, repl in _REWRITES[:layers - 1]:
        texts.append(pattern.sub(repl, texts[-1]))
    for (pattern, repl), old in reversed(list(zip(_REWRITES[:layers], texts))):
        p = _unsub(pattern, repl, old, p)
    return p


def evidence_span(output: str, evidence: str) -> tuple[int, int] | None:
    """Where a keyphrase's evidence sits in the output: the first place the output has it
    exactly on word boundaries, else (evidence written by an older analyzer, with its
    spaces collapsed and words cut) the place its words are, widened to whole words."""
    output, evidence = output or "", (evidence or "").strip()
    if not evidence:
        return None
    i = output.find(evidence)
    while i >= 0:
        if _widen(output, i, i + len(evidence)) == (i, i + len(evidence)):
            return i, i + len(evidence)
        i = output.find(evidence, i + 1)
    m = re.search(r"\s+".join(map(re.escape, evidence.split())), output)
    return _widen(output, m.start(), m.end()) if m else None


# -- checks ------------------------------------------------------------------------------

def _norm_line(line: str) -> str:
    """A line with its numbering ("3.", "Step 2:"), punctuation and case left out."""
    line = re.sub(r"^\s*(?:\d+[.)]|[-*•]|step \d+:?)\s*", "", line.lower())
    return " ".join(re.findall(r"[\w$%]+", line))


def _repetition(output: str) -> tuple[str, int] | None:
    """A loop, not a restatement: the same line of 6 or more words twice or more (its
    numbering and punctuation aside; three times for a line that says "answer"), or the
    same 12 words three times or more. A phrase of 6 words seen three times ("the total
    cost of the jacket") is how these models restate the question: flagged as a loop, it
    was wrong in 5 of 50 hand-checked keyphrases (tests/data/analyzer_precision.json)."""
    lines = [(ln.strip(), _norm_line(ln)) for ln in output.splitlines()]
    counts = Counter(n for _, n in lines if len(n.split()) >= 6)
    # a line that states the answer, written first and again last, is a restatement ("The
    # answer is 2 * 2 * 16 = 64." twice): a loop only from three times on
    loops = [(x, n) for x, n in counts.most_common() if n >= 2 + ("answer" in x.split())]
    if loops:
        line, n = loops[0]
        if n >= 2:
            raw = next(r for r, x in lines if x == line)
            return re.sub(r"^\s*(?:\d+[.)]|[-*•]|step \d+:?)\s*", "", raw, flags=re.I), n
    words = output.split()
    grams = Counter(tuple(w.lower().strip(".,;:!?") for w in words[i:i + 12])
                    for i in range(0, max(0, len(words) - 11)))
    if grams:
        g, n = grams.most_common(1)[0]
        if n >= 3:
            return " ".join(g), n
    return None


def _topic(question: str) -> str:
    """A few content words of the question's ask, to make keyphrases specific."""
    ask = re.split(r"(?<=[.?!])\s+", question.strip())[-1]
    m = re.search(r"how (?:many|much) ([a-z ]+?)(?: does| do| is| are| did| will| would|\?|$)",
                  ask.lower())
    return m.group(1).strip() if m else ""


Finding = tuple[int, str, str]  # (priority: lower is more specific, keyphrase, evidence)


@dataclass
class _Case:
    """One bad case, with what the checks read from it computed once."""
    question: str
    output: str
    pred: str | None
    p: Fraction | None                   # the predicted answer as a number
    ref: Fraction | None                 # the reference answer as a number
    completion_tokens: int | None
    max_new_tokens: int | None
    topic: str
    q_nums: set
    ref_steps: list[dict]
    ref_vals: list
    steps: list[dict]                    # the output's arithmetic steps


def _rank(priority: int, step: dict) -> int:
    """A finding's priority; what rests on a step only the looser reading found comes after
    every other finding (it fills the places they leave)."""
    return 4 if step["worded"] else priority


def _arithmetic(c: _Case) -> list[Finding]:
    """Arithmetic re-checked, step by step."""
    found = []
    for s in c.steps:
        if s["true"] is not None and s["true"] != s["claimed"]:
            kind = _OPS[s["ops"][0]] if len(set(s["ops"])) == 1 else "multi-operation arithmetic"
            found.append((_rank(0, s), f"{kind} error: {s['expr']} given as "
                                       f"{show(s['claimed'])} instead of {show(s['true'])}",
                          _snip(c.output, s["pos"])))
    return found


def _wrong_operation(c: _Case) -> list[Finding]:
    """Wrong operation on the same operands as a reference step."""
    found = []
    for s in c.steps:
        for r in c.ref_steps:
            if (sorted(s["operands"]) == sorted(r["operands"]) and len(s["operands"]) == 2
                    and s["ops"] != r["ops"] and s["true"] not in (None, r["true"])):
                found.append((_rank(1, s), f"used {_OPS[s['ops'][0]]} instead of "
                                           f"{_OPS[r['ops'][0]]} on {show(r['operands'][0])} "
                                           f"and {show(r['operands'][1])}",
                              _snip(c.output, s["pos"])))
                break
    return found


def _loop_or_cut(c: _Case) -> list[Finding]:
    """A repetition loop, and an output cut at the token limit (second to a loop)."""
    found = []
    output, max_new = c.output, c.max_new_tokens
    truncated = bool(c.completion_tokens and max_new and c.completion_tokens >= max_new)
    rep = _repetition(output)
    if rep:
        found.append((0, f"repetition loop: repeats \"{rep[0][:40]}\" {rep[1]} times",
                      _phrase_span(output, rep[0])))
    if truncated:
        found.append((1 if rep else 0,
                      f"output truncated at the {max_new}-token limit"
                      + (" before a final answer" if "answer is" not in output.lower() else ""),
                      _tail(output)))
    return found


def _no_answer(c: _Case) -> list[Finding]:
    """An empty output, no final answer, or one that is not a number."""
    if not c.output.strip():
        return [(0, "empty output", "")]
    if c.pred is None:
        return [(0, "no final answer stated", _tail(c.output))]
    if c.p is None:
        return [(1, f"final answer \"{c.pred[:30]}\" is not a number",
                 _answer_span(c.output, c.pred))]
    return []


def _wrong_answer_shape(c: _Case) -> list[Finding]:
    """What the wrong final answer is: an intermediate result, a given number, off by a
    power of ten or a sign; or a wrong last step after correct intermediate values."""
    p, ref, ref_vals = c.p, c.ref, c.ref_vals
    if p is None or ref is None or p == ref:
        return []
    found = []
    k = ref_vals.index(p) + 1 if p in ref_vals[:-1] else 0
    if k:
        found.append((1, f"stopped early: final answer {show(p)} is the result of step {k} "
                         f"of {len(ref_vals)}" + (f" ({c.topic})" if c.topic else ""),
                      _answer_span(c.output, c.pred)))
    elif p in c.q_nums:
        # not a copy when the output computes it ("dividing $100 by 2, which equals $50"),
        # nor then a scale slip (the value is a given quantity's)
        if not any(s["claimed"] == s["true"] == p and p not in s["operands"] for s in c.steps):
            found.append((1, f"final answer copies the given quantity {show(p)} from the "
                             f"question", _answer_span(c.output, c.pred)))
    elif ref and p / ref in (10, 100, 1000, Fraction(1, 10), Fraction(1, 100),
                             Fraction(1, 1000)):
        found.append((1, f"scale error: answer {show(p)} is {show(p / ref)} times the "
                         f"correct {show(ref)}", _answer_span(c.output, c.pred)))
    elif p == -ref:
        found.append((1, f"sign error: answer {show(p)} instead of {show(ref)}", ""))
    # The reference's intermediate values the output reaches: values it writes (not list
    # numbers, nor "a / b" inside a calculation), but not a given quantity unless a correct
    # step of the output computes it, nor only the result of a wrong step.
    right = {s["claimed"] for s in c.steps if s["true"] == s["claimed"]}
    wrong = {s["claimed"] for s in c.steps if s["true"] not in (None, s["claimed"])}
    reached = {v for v, _, _ in _values(c.output)
               if v in right or (v not in c.q_nums and v not in wrong)}
    hit = [v for v in ref_vals[:-1] if v in reached]
    if hit and not k and len(ref_vals) > 1:
        found.append((2, f"wrong final step after correct intermediate value {show(hit[-1])}: "
                         f"{show(p)} instead of {show(ref)}",
                      _number_span(c.output, hit[-1])))
    return found


def _link_values(before: str) -> set:
    """What the calculation that `before` ends with ("... 6 x 3 + 2 = ") comes to, and what
    each of its terms comes to (18 and 2)."""
    m = re.search(r"=[ \t]*\$?[ \t]*$", before)
    if not m:
        return set()
    i = m.start()  # the calculation: back to the first character that cannot be in one
    while i and (before[i - 1] in "-+*/×÷·()$.,0123456789 \t"
                 or before[i - 1] == "x" and before[i - 2:i - 1] in (" ", *"0123456789")):
        i -= 1
    expr, vals = before[i:m.start()], set()
    for e in [expr] + re.split(r"(?<=[\d\s)])[-+](?=[\s\d$(])", expr):
        try:
            vals.add(evaluate(e))
        except ValueError:
            pass
    return vals


def _grounding(c: _Case) -> list[Finding]:
    """Numbers that come from nowhere, and given numbers never used."""
    output = c.output
    if not output.strip():
        return []
    found = []
    known = set(c.q_nums) | _CONSTANTS
    plain = _plain(output)
    for s in c.steps:
        # Any number the output wrote before this step came from somewhere: a step the
        # parser cannot read ("12 apples * $9 = $108", "20 by 20 yards: 400 yards").
        before = plain[:s["at"]]
        known.update(numbers_in(before))
        known.update(v for v, _, _ in _values(before, both=True))
        # a link of a chain starts from what the link before comes to, or one of its terms
        # ("$5 * 5 = 25 * $5 = $125", "6 x 3 + 2 = 18 + 2 = 20")
        known.update(_link_values(_plain(output[:s["pos"]], len(_REWRITES))))
        for o in s["operands"]:
            if o not in known and o.denominator == 1 and o > 12:
                found.append((_rank(2, s), f"ungrounded quantity {show(o)} used in "
                                           f"{s['expr']} (not in the question or earlier "
                                           f"steps)",
                              _snip(output, s["pos"])))
                break
        known.add(s["claimed"])
        if s["true"] is not None:
            known.add(s["true"])
    # "2 * 10 / 2" uses 10 (and is 5 as a fraction); a list's numbering uses nothing; a
    # given fraction is used as it is or as its inverse ("1/2 of them" as "110 / 2")
    used = {v for v, _, _ in _values(output, both=True)}
    missed = [x for x in numbers_in(c.question) if x not in (0, 1) and x not in used
              and not (x.denominator != 1 and 1 / x in used)]
    if missed and len(c.ref_vals) > 0:
        word = re.search(re.escape(show(missed[0])) + r"\s+([a-z]+)", c.question)
        found.append((3, f"ignored the given quantity {show(missed[0])}"
                         + (f" {word.group(1)}" if word else ""), ""))
    return found


def _fallback(c: _Case) -> Finding:
    """When no check found anything: a wrong result, with how much of it could be checked."""
    if c.p is None or c.ref is None:
        return (4, "wrong final answer with no checkable steps", _tail(c.output))
    checked = [x for x in c.steps if x["true"] is not None]
    how = ((f"though its {len(checked)} arithmetic steps check out" if len(checked) > 1
            else "though its one arithmetic step checks out") if checked
           else "with no checkable arithmetic")
    return (4, f"wrong result {show(c.p)} instead of {show(c.ref)} {how}"
            + (f" ({c.topic})" if c.topic else ""), _tail(c.output))


# In this order; ties in priority keep it.
CHECKS = (_arithmetic, _wrong_operation, _loop_or_cut, _no_answer, _wrong_answer_shape,
          _grounding)


def _answer_value(pred: str | None) -> Fraction | None:
    """The final answer as a number: "16", "$1,200", "3/4", or a number with its unit ("16
    seconds", "18 dollars", read as the judge reads it); None if it is not one."""
    if not pred:
        return None
    v = num(pred)
    return v if v is not None else num(normalize(pred))


def analyze_case(question: str, solution: str, reference: str, output: str, pred: str | None,
                 completion_tokens: int | None = None,
                 max_new_tokens: int | None = None) -> list[dict]:
    """One to three keyphrases with their evidence, most specific first."""
    output = output or ""
    ref_steps = steps_in(solution or "")
    c = _Case(question=question, output=output, pred=pred,
              p=_answer_value(pred), ref=num(reference) if reference else None,
              completion_tokens=completion_tokens, max_new_tokens=max_new_tokens,
              topic=_topic(question), q_nums=set(numbers_in(question)), ref_steps=ref_steps,
              ref_vals=[s["claimed"] for s in ref_steps], steps=steps_in(output))
    found = [f for check in CHECKS for f in check(c)] or [_fallback(c)]
    found.sort(key=lambda f: f[0])
    out, seen = [], set()
    for _, text, ev in found:
        if text not in seen:
            seen.add(text)
            out.append({"text": text, "evidence": ev})
    return out[:3]
