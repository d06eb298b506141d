"""Numeric variants of GSM8K-style problems whose solutions carry `<<expr=value>>` steps.

Given (question, solution) and a random.Random, `make_variant` draws new values for the
quantities the question gives, re-executes the annotated step chain exactly over
fractions.Fraction, and rewrites question and solution to the new numbers. Anything it
cannot do safely is a `Dropped(reason)`: a wrong-but-plausible training problem is worse
than no problem, so an ambiguity either keeps the number as it is (where that stays true)
or drops the problem.

Expressions are parsed by a small recursive-descent parser (numbers, + - * /, parentheses,
unary signs). Data text is never eval'ed. '%' is rejected rather than guessed at: GSM8K train
annotations never use it, and "50%" could mean 0.5 or a modulo.

Every number literal of a step expression is one of:
- a given: a numeral written in the question (as "48", "1,200", "$12.50", "20%");
- a percent: given/100 where the question writes that given as a percentage;
- a reference: the value of an earlier step;
- a constant: a value the question implies by a word ("twice", "dozen", "week",
  "fifteen"), or 1, 2, 100, 1/100, or part of a fraction or clock time in the question;
  left unchanged. A given equal to such a value is left unchanged too: "2 packages" may
  share its 2 with "2 slices per sandwich", and only an unchanged 2 keeps both true.
Givens keep their order and per-unit ceilings ("5 days a week" stays <= 7), so
comparisons the text makes ("the smaller house") stay true.
Any other literal comes from arithmetic done outside the annotations, which a new draw
would leave stale, so the problem is dropped.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

MAX_EXPR_LEN = 400  # the longest GSM8K train expression is far shorter
MAX_DEPTH = 40
MAX_DIGITS = 30
MAX_VALUE = 10 ** 12  # new values beyond this are not grade-school numbers
DRAW_TRIES = 8  # per given and draw, to find a value distinct from the others
MAX_DECIMALS = 2  # new non-integer values may have this many places (or the original's)

# Prefixes of every Dropped reason, so callers can count reasons by kind.
DROP_KINDS = (
    "no annotated steps",
    "unparsable expr",
    "inconsistent",
    "final answer",
    "no given quantities",
    "ambiguous literal",
    "unexplained literal",
    "no clean draw",
    "ambiguous text number",
    "rewrite failed",
)


@dataclass
class Variant:
    question: str
    solution: str
    answer: str
    changes: dict[str, str] = field(default_factory=dict)  # old given -> new given
    n_steps: int = 0


@dataclass
class Dropped:
    reason: str


# ---------------------------------------------------------------- expression parser

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|([-+*/()]))")


@dataclass
class _Lit:
    start: int  # span in the expression text
    end: int
    text: str
    value: Fraction


def _tokenize(s: str) -> list[tuple[str, str, int, int]]:
    if len(s) > MAX_EXPR_LEN:
        raise ValueError(f"expression longer than {MAX_EXPR_LEN} characters")
    out, i = [], 0
    while i < len(s):
        if s[i:].strip() == "":
            break
        m = _TOKEN.match(s, i)
        if not m:
            j = i + len(s[i:]) - len(s[i:].lstrip())
            raise ValueError(f"unexpected character {s[j]!r} at {j}")
        if m.group(1) is not None:
            if len(m.group(1)) > MAX_DIGITS:
                raise ValueError("number literal too long")
            out.append(("num", m.group(1), m.start(1), m.end(1)))
        else:
            out.append(("op", m.group(2), m.start(2), m.end(2)))
        i = m.end()
    return out


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ;
    unary := ('-'|'+') unary | primary ; primary := NUMBER | '(' expr ')'.
    A leading '+' occurs in GSM8K ("<<+10=10>>"); '//', '**', '%' and letters do not parse.
    The tree is ('lit', index) | ('neg', node) | ('bin', op, left, right)."""

    def __init__(self, s: str):
        self.toks = _tokenize(s)
        self.i = 0
        self.lits: list[_Lit] = []

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str, int, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self):
        if not self.toks:
            raise ValueError("empty expression")
        node = self.expr(0)
        if self.i != len(self.toks):
            raise ValueError(f"unexpected {self.peek()!r}")
        return node

    def expr(self, depth: int):
        node = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            node = ("bin", op, node, self.term(depth))
        return node

    def term(self, depth: int):
        node = self.unary(depth)
        while self.peek() in ("*", "/"):
            op = self.take()[1]
            node = ("bin", op, node, self.unary(depth))
        return node

    def unary(self, depth: int):
        if depth > MAX_DEPTH:
            raise ValueError("expression nested too deeply")
        if self.peek() in ("-", "+"):
            sign = self.take()[1]
            inner = self.unary(depth + 1)
            return ("neg", inner) if sign == "-" else inner
        return self.primary(depth)

    def primary(self, depth: int):
        if self.i >= len(self.toks):
            raise ValueError("expression ends early")
        kind, text, start, end = self.take()
        if kind == "num":
            self.lits.append(_Lit(start, end, text, Fraction(text)))
            return ("lit", len(self.lits) - 1)
        if text == "(":
            node = self.expr(depth + 1)
            if self.peek() != ")":
                raise ValueError("missing ')'")
            self.take()
            return node
        raise ValueError(f"unexpected {text!r}")


def _parse(s: str):
    p = _Parser(s)
    return p.parse(), p.lits


def _eval(node, vals: list[Fraction]) -> Fraction:
    if node[0] == "lit":
        return vals[node[1]]
    if node[0] == "neg":
        return -_eval(node[1], vals)
    _, op, left, right = node
    a, b = _eval(left, vals), _eval(right, vals)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ValueError("division by zero")
    return a / b


def parse_expr(s: str) -> Fraction:
    """Exact value of an arithmetic expression; ValueError for anything outside the grammar
    (letters, '**', '%', implicit products) and for division by zero."""
    node, lits = _parse(s)
    return _eval(node, [lit.value for lit in lits])


# ---------------------------------------------------------------- numbers as text

def _decimals(v: Fraction) -> int | None:
    """Places needed to write v exactly as a decimal; None if it does not terminate."""
    d, k = v.denominator, 0
    while d % 10 == 0:
        d //= 10
        k += 1
    n2 = n5 = 0
    while d % 2 == 0:
        d //= 2
        n2 += 1
    while d % 5 == 0:
        d //= 5
        n5 += 1
    return None if d != 1 else k + max(n2, n5)


def fmt_num(v: Fraction, places: int | None = None, commas: bool = False) -> str:
    """GSM8K style: integers plain, decimals without trailing zeros (or `places` of them)."""
    dp = _decimals(v)
    if dp is None:
        raise ValueError(f"{v} has no finite decimal form")
    dp = max(dp, places or 0)
    sign = "-" if v < 0 else ""
    scaled = abs(v) * 10 ** dp
    assert scaled.denominator == 1
    digits = str(scaled.numerator).rjust(dp + 1, "0")
    whole, frac = digits[:len(digits) - dp], digits[len(digits) - dp:]
    if commas:
        whole = f"{int(whole):,}"
    if places is None:
        frac = frac.rstrip("0")
    return sign + whole + ("." + frac if frac else "")


_NUM_TEXT = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w]|[.,]\d)")


@dataclass
class _Occ:
    start: int
    end: int
    value: Fraction
    places: int  # decimals as written
    commas: bool
    fixed: bool = False  # part of a fraction or a clock time: never changed
    percent: bool = False


def _numbers(text: str) -> list[_Occ]:
    out = []
    for m in _NUM_TEXT.finditer(text):
        whole, frac = m.group(1), m.group(2)
        value = Fraction(whole.replace(",", "") + ("." + frac if frac else ""))
        before = text[m.start() - 1] if m.start() else ""
        after = text[m.end()] if m.end() < len(text) else ""
        rest = text[m.end():m.end() + 9].lstrip().lower()
        out.append(_Occ(m.start(), m.end(), value, len(frac or ""), "," in whole,
                        fixed=bool(before) and before in "/:" or bool(after) and after in "/:",
                        percent=after == "%" or rest.startswith("percent")))
    return out


def _an(number: str) -> bool:
    """Whether a numeral is read with a leading vowel sound (an 8, an 11, an 18,000)."""
    digits = number.lstrip("$").split(".")[0].replace(",", "")
    return digits.startswith("8") or (len(digits) % 3 == 2 and digits[:2] in ("11", "18"))


_ARTICLE = re.compile(r"(?:^|(?<=\W))(an?)\s+\$?$", re.I)


def _replace_spans(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply (start, end, new) edits; an article before a new numeral follows it (a 80 -> an
    80)."""
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
        m = _ARTICLE.search(text, max(0, start - 5), start)
        if m and new[:1].isdigit():
            article = "an" if _an(new) else "a"
            if m.group(1)[0].isupper():
                article = article.capitalize()
            text = text[:m.start(1)] + article + text[m.end(1):]
    return text


# ---------------------------------------------------------------- words that imply numbers

_WORD_VALUES = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000, "million": 1000000,
    "twice": 2, "double": 2, "doubled": 2, "half": (2, Fraction(1, 2)), "halves": 2,
    "pair": 2, "pairs": 2, "both": 2, "triple": 3, "tripled": 3, "thrice": 3,
    "third": 3, "thirds": 3, "quadruple": 4, "quarter": (4, Fraction(1, 4)),
    "quarters": (4, Fraction(1, 4)), "fourth": 4, "fourths": 4, "fifth": 5, "fifths": 5,
    "sixth": 6, "sixths": 6, "seventh": 7, "sevenths": 7, "eighth": 8, "eighths": 8,
    "ninth": 9, "ninths": 9, "tenth": 10, "tenths": 10,
    "dozen": 12, "dozens": 12, "percent": 100, "cents": 100, "cent": 100,
    "minute": 60, "minutes": 60, "hour": 60, "hours": (60, 24), "day": 24, "days": (24, 7),
    "week": 7, "weeks": (7, 52), "year": (12, 52, 365), "years": (12, 52, 365),
    "month": (12, 30, 4), "months": (12, 30, 4), "feet": 12, "foot": 12, "yard": 3,
    "yards": 3, "pound": 16, "pounds": 16, "gallon": 4, "gallons": 4, "quart": 4,
    "quarts": 4, "meter": 100, "meters": 100, "kilogram": 1000, "kilograms": 1000,
    "liter": 1000, "liters": 1000, "decade": 10, "decades": 10, "century": 100,
}


def _implied(question: str) -> set[Fraction]:
    """Values the question states in words or units: constants a solution may use."""
    out: set[Fraction] = set()
    for w in re.findall(r"[a-z]+", question.lower()):
        v = _WORD_VALUES.get(w)
        for x in (v if isinstance(v, tuple) else (v,) if v is not None else ()):
            out.add(Fraction(x))
    if "%" in question:
        out.add(Fraction(100))
    return out


# 1/100 is how solutions write a percent ("20*.01"); 2 and 100 are too common to demand a word.
_ALWAYS_CONSTANT = {Fraction(1), Fraction(2), Fraction(100), Fraction(1, 100)}

# A count per unit has a ceiling ("5 days a week" must not become "9 days a week").
_CAPS = [
    (re.compile(r"\s*days?\s+(?:a|an|per|each|every|of the)\s+week"), 7),
    (re.compile(r"\s*hours?\s+(?:a|an|per|each|every|of the)\s+(?:day|night)"), 24),
    (re.compile(r"\s*(?:minutes?|mins?)\s+(?:a|an|per|each|every|of the)\s+hour"), 60),
    (re.compile(r"\s*seconds?\s+(?:a|an|per|each|every|of the)\s+minute"), 60),
    (re.compile(r"\s*months?\s+(?:a|an|per|each|every|of the)\s+year"), 12),
    (re.compile(r"\s*weeks?\s+(?:a|an|per|each|every|of the)\s+year"), 52),
    (re.compile(r"\s*days?\s+(?:a|an|per|each|every|of the)\s+month"), 30),
    (re.compile(r"\s*days?\s+(?:a|an|per|each|every|of the)\s+year"), 365),
    (re.compile(r"\s*(?:%|percent)"), 100),
]


def _caps(question: str, occs: list[_Occ]) -> dict[Fraction, Fraction]:
    """Ceiling for each given value that counts something per unit, or is a percentage."""
    out: dict[Fraction, Fraction] = {}
    low = question.lower()
    for o in occs:
        for pat, cap in _CAPS:
            if pat.match(low, o.end) and o.value <= cap:
                out[o.value] = min(out.get(o.value, Fraction(cap)), Fraction(cap))
    return out


# ---------------------------------------------------------------- the step chain

_ANN = re.compile(r"<<([^<>]*)>>")
_FINAL = re.compile(r"^####\s*(.*?)\s*$", re.M)


@dataclass
class _Step:
    start: int  # span of "<<...>>" in the solution
    end: int
    expr: str
    value_text: str
    node: tuple
    lits: list[_Lit]
    value: Fraction


def _steps(solution: str) -> tuple[list[_Step], list[str]]:
    steps, problems = [], []
    for k, m in enumerate(_ANN.finditer(solution), 1):
        expr, eq, value_text = m.group(1).rpartition("=")
        if not eq:
            problems.append(f"unparsable expr in step {k}: no '=' in {m.group(1)!r}")
            continue
        try:
            node, lits = _parse(expr)
            got = _eval(node, [lit.value for lit in lits])
        except ValueError as e:
            problems.append(f"unparsable expr in step {k}: {expr!r} ({e})")
            continue
        try:
            stated = parse_expr(value_text)
        except ValueError as e:
            problems.append(f"unparsable expr in step {k}: value {value_text!r} ({e})")
            continue
        if got != stated:
            problems.append(f"inconsistent: step {k} value {value_text} != {expr}")
            continue
        steps.append(_Step(m.start(), m.end(), expr, value_text, node, lits, got))
    return steps, problems


def _final_value(solution: str) -> Fraction | None:
    found = _FINAL.findall(solution)
    if not found:
        return None
    try:
        return parse_expr(found[-1].replace(",", "").replace("$", ""))
    except ValueError:
        return None


def check_chain(solution: str) -> list[str]:
    """Problems with the solution's annotated chain; empty if every step's stated value is
    the exact value of its expression and the `#### ` answer is the last step's value."""
    steps, problems = _steps(solution)
    if not steps and not problems:
        return ["no annotated steps"]
    final = _final_value(solution)
    if final is None:
        problems.append("final answer: no parsable '#### ' line")
    elif steps and not problems and final != steps[-1].value:
        problems.append(f"final answer: {fmt_num(final)} is not the last step's value "
                        f"{steps[-1].value_text}")
    return problems


# ---------------------------------------------------------------- classification

@dataclass
class _Role:
    kind: str  # "given", "pct", "ref", "const"
    key: Fraction | int | None = None  # given value, or index of the referenced step


def _classify(question: str, steps: list[_Step]) -> tuple[list[list[_Role]], str | None]:
    occs = _numbers(question)
    givens = {o.value for o in occs if not o.fixed}
    fixed = {o.value for o in occs if o.fixed}
    percents = {o.value for o in occs if o.percent and not o.fixed}
    implied = _implied(question)
    roles: list[list[_Role]] = []
    for k, step in enumerate(steps):
        row = []
        for lit in step.lits:
            v = lit.value
            earlier = [j for j in range(k) if steps[j].value == v]
            pct = [g for g in percents if g / 100 == v]
            # An earlier value that is also a given or a worded constant ("one-fifth" after
            # a step worth 5) could be either; guessing wrong makes a wrong problem.
            alt = v in givens or v in fixed or pct or v in implied or v in _ALWAYS_CONSTANT
            if len(earlier) > 1 or (earlier and alt):
                return roles, (f"ambiguous literal {lit.text} in step {k + 1}: it is "
                               "more than one earlier value, given or constant")
            if earlier:
                row.append(_Role("ref", earlier[0]))
            elif v in fixed or v in (0, 1):
                row.append(_Role("const"))  # kept as written in the question
            elif v in givens and (v in implied or v in _ALWAYS_CONSTANT):
                # "2 packages" beside a "2 slices per sandwich" the question never states:
                # left as it is, both readings stay true.
                row.append(_Role("const"))
            elif v in givens:
                row.append(_Role("given", v))
            elif pct and (pct[0] in implied or pct[0] in _ALWAYS_CONSTANT):
                row.append(_Role("const"))  # its given stays, as above, so this stays too
            elif pct:
                row.append(_Role("pct", pct[0]))
            elif v in implied or v in _ALWAYS_CONSTANT:
                row.append(_Role("const"))
            else:
                return roles, f"unexplained literal {lit.text} in step {k + 1}"
        roles.append(row)
    return roles, None


# ---------------------------------------------------------------- drawing new values

def _draw(v: Fraction, rng: random.Random, cap: Fraction | None) -> Fraction:
    """A value of the same kind as v within [v/2, 2v]: integers stay integers with the same
    roundness where possible, decimals keep their places and stay non-integer."""
    if v.denominator == 1:
        n = v.numerator
        q = 10 ** (len(str(n)) - len(str(n).rstrip("0")))
        lo, hi = max(2, math.ceil(n / 2)), 2 * n
        if cap is not None:
            hi = min(hi, math.floor(cap) if n == cap else math.ceil(cap) - 1)
        while q > 1 and hi // q - math.ceil(lo / q) < 3:
            q //= 10  # too few round values in range: allow finer ones
        a, b = math.ceil(lo / q), hi // q
        return Fraction(rng.randint(a, b) * q) if b >= a else v
    dp = _decimals(v) or 0
    q = Fraction(1, 10 ** dp)
    top = 2 * v if cap is None else min(2 * v, cap)
    a, b = math.ceil(v / 2 / q), math.floor(top / q)
    return rng.randint(a, b) * q if b >= a else v


def _draw_all(givens: list[Fraction], stay: set[Fraction], others: set[Fraction],
              caps: dict[Fraction, Fraction], rng: random.Random
              ) -> dict[Fraction, Fraction] | None:
    """New values for the givens, or None. The question's numbers keep their order (numbers
    that stay are fixed points), so "the smaller house" and "costs more at the gate" stay
    true; new values differ from each other and from `others`. A few tries per given,
    since small ones have few candidates."""
    new: dict[Fraction, Fraction] = {}
    order = sorted(set(givens) | stay)
    low = None  # the image of the previous number in order
    for i, v in enumerate(order):
        if v not in givens:
            if low is not None and v <= low:
                return None
            low = v
            continue
        high = next((w for w in order[i + 1:] if w not in givens), None)
        for _ in range(DRAW_TRIES):
            x = _draw(v, rng, caps.get(v))
            if (x != v and x not in new.values() and x not in others
                    and (low is None or x > low) and (high is None or x < high)
                    and (v.denominator == 1 or x.denominator != 1)):
                new[v] = x
                low = x
                break
        else:
            return None
    return new


def _run(steps: list[_Step], roles: list[list[_Role]],
         new: dict[Fraction, Fraction]) -> list[Fraction] | str:
    """New step values, or why this draw is not clean."""
    out: list[Fraction] = []
    for step, row in zip(steps, roles):
        vals = []
        for lit, role in zip(step.lits, row):
            if role.kind == "given":
                vals.append(new.get(role.key, role.key))
            elif role.kind == "pct":
                vals.append(new.get(role.key, role.key) / 100)
            elif role.kind == "ref":
                vals.append(out[role.key])
            else:
                vals.append(lit.value)
        try:
            v = _eval(step.node, vals)
        except ValueError:
            return "division by zero"
        old = step.value
        if (v > 0) != (old > 0) or (v < 0) != (old < 0):
            return "sign change"
        if old.denominator == 1 and v.denominator != 1:
            return "non-integer"
        dp = _decimals(v)
        if dp is None or dp > max(MAX_DECIMALS, _decimals(old) or 0):
            return "non-integer"  # not a short finite decimal
        if abs(v) > MAX_VALUE:
            return "too large"
        out.append(v)
    return out


# ---------------------------------------------------------------- rewriting

_ECHO_END = re.compile(r"(?:=|\bequals?|\bis)\s*\$?\s*$", re.I)
_TEXT_ARITH = re.compile(
    r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:\s*[-+*/x×÷]\s*\$?\d[\d,]*(?:\.\d+)?)+)"
    r"\s*=\s*\$?(\d[\d,]*(?:\.\d+)?)(?![\w]|\.\d)")


def _text_arith_errors(visible: str) -> int:
    """Unannotated 'a op b = c' arithmetic in the visible text that does not hold."""
    bad = 0
    for m in _TEXT_ARITH.finditer(visible):
        lhs = re.sub(r"[x×]", "*", m.group(1)).replace("÷", "/")
        lhs = lhs.replace(",", "").replace("$", "")
        try:
            if parse_expr(lhs) != Fraction(m.group(2).replace(",", "")):
                bad += 1
        except ValueError:
            continue
    return bad


# Plain number words; hyphenated ones ("one-half", "twenty-five") are left alone.
_NUM_WORD = re.compile(r"(?<![\w-])(?:two|three|four|five|six|seven|eight|nine|ten|eleven|"
                       r"twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|"
                       r"nineteen|twenty)(?![\w-])", re.I)


def _visible(solution: str) -> str:
    return _ANN.sub("", solution)


def _styled(v: Fraction, occ: _Occ) -> str:
    places = occ.places if occ.places and (_decimals(v) or 0) <= occ.places else None
    return fmt_num(v, places, occ.commas)


def _rewrite_text(seg: str, base: int, mapping_at: Callable[[int], dict[Fraction, set]],
                  givens: dict[Fraction, Fraction],
                  echo: list[tuple[Fraction, Fraction]] | None,
                  after_step: tuple[Fraction, Fraction] | None
                  ) -> list[tuple[int, int, str]] | str:
    """Edits for one stretch of visible text between annotations."""
    occs = _numbers(seg)
    edits: list[tuple[int, int, str]] = []
    done: set[int] = set()
    # The value echoed right after '>>' is that step's value.
    if after_step and occs and seg[:occs[0].start].strip() in ("", "$") \
            and occs[0].value == after_step[0]:
        o = occs[0]
        edits.append((base + o.start, base + o.end, _styled(after_step[1], o)))
        done.add(0)
    # The arithmetic written out just before '<<' ("48/2 =", "14 plus 8 equals") mirrors
    # the expression's literals, constants included, in order.
    if echo is not None and _ECHO_END.search(seg):
        line_start = seg.rfind("\n") + 1
        inside = [i for i, o in enumerate(occs) if o.start >= line_start][-len(echo):]
        if len(inside) == len(echo):
            if [occs[i].value for i in inside] == [old for old, _ in echo]:
                for i, (_, new) in zip(inside, echo):
                    edits.append((base + occs[i].start, base + occs[i].end,
                                  _styled(new, occs[i])))
                    done.add(i)
    for i, o in enumerate(occs):
        mapping = mapping_at(base + o.start)
        if i in done or o.value not in mapping:
            continue
        targets = mapping[o.value]
        if len(targets) > 1:
            return f"ambiguous text number {seg[o.start:o.end]}"
        new = next(iter(targets))
        if new != o.value:
            edits.append((base + o.start, base + o.end, _styled(new, o)))
    # "The four bags cost ..." names a given in words; it becomes the new numeral.
    for m in _NUM_WORD.finditer(seg):
        value = Fraction(_WORD_VALUES[m.group(0).lower()])
        if value not in givens:
            continue
        targets = mapping_at(base + m.start()).get(value, set())
        if len(targets) > 1:
            return f"ambiguous text number {m.group(0)}"
        edits.append((base + m.start(), base + m.end(), fmt_num(givens[value])))
    return edits


def _prose_values(solution: str, steps: list[_Step], new: dict[Fraction, Fraction],
                  values: list[Fraction], kept: set[Fraction], pct_keys: set[Fraction]):
    """mapping_at(position): the values the prose may mention there, old -> new: changed
    givens and their percents, the values of steps that start before the end of the
    mention's line, and the numbers that stay (to themselves). A number with two targets
    is ambiguous."""
    def mapping_at(p: int) -> dict[Fraction, set]:
        eol = solution.find("\n", p)
        eol = len(solution) if eol < 0 else eol
        out: dict[Fraction, set] = {v: {v} for v in kept}
        for g, x in new.items():
            out.setdefault(g, set()).add(x)
        for g in pct_keys:
            out.setdefault(g / 100, set()).add(new[g] / 100)
        for j, s in enumerate(steps):
            if s.start < eol:
                out.setdefault(s.value, set()).add(values[j])
        return out

    return mapping_at


def _rewrite(question: str, solution: str, steps: list[_Step], roles: list[list[_Role]],
             new: dict[Fraction, Fraction], values: list[Fraction],
             kept: set[Fraction]) -> tuple[str, str] | str:
    """The question and solution with the new givens and step values written in, or why
    not (a string)."""
    q_edits = [(o.start, o.end, _styled(new[o.value], o)) for o in _numbers(question)
               if not o.fixed and o.value in new]
    new_q = _replace_spans(question, q_edits)

    def lit_value(k: int, i: int) -> Fraction:
        role, lit = roles[k][i], steps[k].lits[i]
        if role.kind == "given":
            return new.get(role.key, role.key)
        if role.kind == "pct":
            return new.get(role.key, role.key) / 100
        if role.kind == "ref":
            return values[role.key]
        return lit.value

    pct_keys = {r.key for row in roles for r in row if r.kind == "pct" and r.key in new}
    mapping_at = _prose_values(solution, steps, new, values, kept, pct_keys)
    edits: list[tuple[int, int, str]] = []
    pos = 0
    for k in range(len(steps) + 1):
        seg_end = steps[k].start if k < len(steps) else len(solution)
        seg = solution[pos:seg_end]
        echo = ([(lit.value, lit_value(k, i)) for i, lit in enumerate(steps[k].lits)]
                if k < len(steps) else None)
        after = (steps[k - 1].value, values[k - 1]) if k > 0 else None
        if k == len(steps):
            m = _FINAL.search(seg)
            if m:  # the final line is rewritten whole below
                seg = seg[:m.start()]
        got = _rewrite_text(seg, pos, mapping_at, new, echo, after)
        if isinstance(got, str):
            return got
        edits += got
        if k < len(steps):
            s = steps[k]
            expr = _replace_spans(s.expr, [(lit.start, lit.end, fmt_num(lit_value(k, i)))
                                           for i, lit in enumerate(s.lits)])
            edits.append((s.start, s.end, f"<<{expr}={fmt_num(values[k])}>>"))
            pos = s.end
    new_s = _replace_spans(solution, edits)
    finals = list(_FINAL.finditer(new_s))
    if not finals:
        return "rewrite failed: final line lost"
    m = finals[-1]
    new_s = new_s[:m.start()] + f"#### {fmt_num(values[-1])}" + new_s[m.end():]
    return new_q, new_s


# ---------------------------------------------------------------- the engine

def make_variant(question: str, solution: str, rng: random.Random,
                 max_draws: int = 20) -> Variant | Dropped:
    """A new problem with new given quantities whose annotated chain re-executes exactly."""
    steps, problems = _steps(solution)
    if problems:
        return Dropped(problems[0])
    if not steps:
        return Dropped("no annotated steps")
    final = _final_value(solution)
    if final is None or final != steps[-1].value:
        return Dropped("final answer is not the last step's value")
    roles, why = _classify(question, steps)
    if why:
        return Dropped(why)
    used = sorted({r.key for row in roles for r in row if r.kind in ("given", "pct")})
    if not used:
        return Dropped("no given quantities found in question (or none used by the steps)")
    occs = _numbers(question)
    caps = _caps(question, occs)
    # New givens must not collide with numbers that stay: the question's other numbers and
    # the constants the steps use.
    # Order is kept among the question's plain numbers; parts of fractions and clock times
    # are not quantities to compare.
    stay = {o.value for o in occs if not o.fixed} - set(used)
    consts = {lit.value for st, row in zip(steps, roles)
              for lit, r in zip(st.lits, row) if r.kind == "const"}
    others = consts | {o.value for o in occs}  # old givens too: 3->5 beside 5->8 confuses
    old_errors = _text_arith_errors(_visible(solution))
    fails: Counter[str] = Counter()
    for _ in range(max_draws):
        new = _draw_all(used, stay, others, caps, rng)
        if new is None:
            fails["no distinct ordered values"] += 1
            continue
        values = _run(steps, roles, new)
        if isinstance(values, str):
            fails[values] += 1
            continue
        got = _rewrite(question, solution, steps, roles, new, values, stay | consts)
        if isinstance(got, str):
            return Dropped(got)
        new_q, new_s = got
        # Verify the output itself: the chain re-executes and the prose arithmetic that
        # held before still holds.
        bad = check_chain(new_s)
        if bad:
            return Dropped(f"rewrite failed: {bad[0]}")
        if _text_arith_errors(_visible(new_s)) > old_errors:
            fails["stale text arithmetic"] += 1
            continue
        changes = {fmt_num(g): fmt_num(x) for g, x in new.items()}
        return Variant(new_q, new_s, fmt_num(values[-1]), changes, len(steps))
    worst = fails.most_common(1)[0][0] if fails else "no draws"
    return Dropped(f"no clean draw after {max_draws} draws (mostly {worst})")
