"""The embedded demo dataset: GSM8K-style word problems, generated, exact.

Each template draws numbers from a seeded RNG, computes every step with `Fraction` (no
floats, no eval), and writes a reference solution in GSM8K's format: one line per step
with a calculator annotation `<<expr=value>>`, then `#### answer`. Numbers are drawn so
that answers come out whole or as short decimals.

Train and test never overlap: a problem's split is a function of its text (a hash), so a
question can only ever land in one split, whatever `n` or seed is asked for.
"""

from __future__ import annotations

import hashlib
import random
from fractions import Fraction as F

NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jamal",
         "Kira", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]


def fmt(x: F) -> str:
    """Whole numbers as integers, else a short exact decimal, else a fraction."""
    x = F(x)
    if x.denominator == 1:
        return str(x.numerator)
    for places in (1, 2, 3):
        scaled = x * 10**places
        if scaled.denominator == 1:
            return f"{float(x):.{places}f}"
    return f"{x.numerator}/{x.denominator}"


class _Steps:
    """Collects solution lines; each step's value is computed here, exactly."""

    def __init__(self):
        self.lines: list[str] = []

    def op(self, text: str, a, sym: str, b) -> F:
        a, b = F(a), F(b)
        v = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[sym]
        expr = f"{fmt(a)}{sym}{fmt(b)}"
        self.lines.append(text.format(calc=f"{expr} = <<{expr}={fmt(v)}>>{fmt(v)}"))
        return v


# Each template: rng, name -> (question, steps, answer) or None to redraw.

def pct_sale(r, s, name):
    p, d = r.choice(range(20, 400, 4)), r.choice([10, 15, 20, 25, 30, 40, 50])
    item = r.choice(["jacket", "bike", "lamp", "backpack", "chair"])
    q = f"A {item} costs ${p}. It is on sale for {d}% off. How much does the {item} cost on sale?"
    off = s.op("The discount is {calc} dollars.", p, "*", F(d, 100))
    return q, s.op("The sale price is {calc} dollars.", p, "-", off)


def pct_not(r, s, name):
    n, p = r.choice(range(100, 1200, 20)), r.choice([5, 10, 15, 20, 25, 35, 40, 45, 60, 75])
    q = (f"A school has {n} students. {p}% of them play a sport. "
         f"How many students do not play a sport?")
    k = s.op("Students who play a sport: {calc}.", n, "*", F(p, 100))
    return q, s.op("Students who do not: {calc}.", n, "-", k)


def pct_raise(r, s, name):
    w, p, rent = r.choice(range(200, 900, 20)), r.choice([5, 10, 20, 25]), r.choice(range(50, 200, 10))
    q = (f"{name} earns ${w} per week. {name} gets a raise of {p}%, and then spends ${rent} "
         f"per week on rent. How much money does {name} have left each week?")
    inc = s.op("The raise is {calc} dollars.", w, "*", F(p, 100))
    new = s.op("The new pay is {calc} dollars.", w, "+", inc)
    return q, s.op("After rent, {calc} dollars are left.", new, "-", rent)


def unit_yards(r, s, name):
    yd, ft = r.randint(4, 40), r.randint(1, 11)
    q = (f"{name} has a ribbon {yd} yards long and cuts off {ft} feet. "
         f"How many feet of ribbon are left?")
    total = s.op("The ribbon is {calc} feet long.", yd, "*", 3)
    if ft >= total:
        return None
    return q, s.op("Left: {calc} feet.", total, "-", ft)


def unit_kg(r, s, name):
    g, c = r.choice(range(150, 900, 50)), r.randint(2, 12)
    q = (f"A recipe needs {g} grams of flour for one cake. How many kilograms of flour are "
         f"needed for {c} cakes?")
    tot = s.op("For all cakes: {calc} grams.", g, "*", c)
    return q, s.op("In kilograms: {calc}.", tot, "/", 1000)


def unit_minutes(r, s, name):
    h, m = r.randint(1, 3), r.randint(5, 55)
    q = f"A movie lasts {h} hours and {m} minutes. How many minutes long is the movie?"
    hm = s.op("The hours are {calc} minutes.", h, "*", 60)
    return q, s.op("In total: {calc} minutes.", hm, "+", m)


def unit_feet_1(r, s, name):
    yd = r.randint(3, 90)
    q = f"A garden path is {yd} yards long. How many feet long is the path?"
    return q, s.op("The path is {calc} feet long.", yd, "*", 3)


def rate_trip(r, s, name):
    v1, t1, v2, t2 = r.choice(range(30, 70, 5)), r.randint(1, 4), r.choice(range(40, 80, 5)), r.randint(1, 3)
    q = (f"{name} drives at {v1} miles per hour for {t1} hours, then at {v2} miles per hour "
         f"for {t2} hours. How many miles does {name} drive in total?")
    a = s.op("First part: {calc} miles.", v1, "*", t1)
    b = s.op("Second part: {calc} miles.", v2, "*", t2)
    return q, s.op("Total: {calc} miles.", a, "+", b)


def rate_wage(r, s, name):
    h, d, w = r.randint(3, 9), r.randint(2, 6), r.choice(range(8, 30))
    q = (f"{name} works {h} hours a day, {d} days a week, and earns ${w} per hour. "
         f"How much does {name} earn in a week?")
    hours = s.op("Weekly hours: {calc}.", h, "*", d)
    return q, s.op("Weekly pay: {calc} dollars.", hours, "*", w)


def rate_tank(r, s, name):
    rate = r.choice([2, 3, 4, 5, 6, 8, 10, 12])
    minutes, have = r.randint(5, 40), r.choice(range(10, 200, 10))
    cap = have + rate * minutes
    q = (f"A tank holds {cap} liters and already contains {have} liters. A tap adds {rate} "
         f"liters per minute. How many minutes does it take to fill the tank?")
    need = s.op("Still needed: {calc} liters.", cap, "-", have)
    return q, s.op("Time: {calc} minutes.", need, "/", rate)


def frac_cookies(r, s, name):
    a, b = r.choice([(1, 2), (1, 3), (1, 4), (2, 3), (3, 4), (2, 5)])
    c, d = r.choice([(1, 2), (1, 3), (1, 4), (1, 5)])
    n = b * d * r.randint(2, 12)
    q = (f"A baker made {n} cookies. She sold {a}/{b} of them in the morning and {c}/{d} "
         f"of the rest in the afternoon. How many cookies are left?")
    morning = s.op("Sold in the morning: {calc}.", n, "*", F(a, b))
    rest = s.op("Left after the morning: {calc}.", n, "-", morning)
    aft = s.op("Sold in the afternoon: {calc}.", rest, "*", F(c, d))
    return q, s.op("Left at the end: {calc}.", rest, "-", aft)


def frac_marbles(r, s, name):
    k = r.choice([2, 3, 4, 5, 6])
    n = k * r.randint(3, 30)
    q = (f"{name} has {n} marbles and gives 1/{k} of them to a friend. "
         f"How many marbles does {name} keep?")
    given = s.op("Given away: {calc}.", n, "/", k)
    return q, s.op("Kept: {calc}.", n, "-", given)


def total_tools(r, s, name):
    a, p, b, qn = r.randint(2, 9), r.choice([6, 8, 10, 12, 24]), r.randint(2, 7), r.choice([3, 4, 5, 10])
    q = (f"{name} buys {a} packs of pencils with {p} pencils in each pack and {b} boxes of pens "
         f"with {qn} pens in each box. How many pencils and pens does {name} buy in total?")
    x = s.op("Pencils: {calc}.", a, "*", p)
    y = s.op("Pens: {calc}.", b, "*", qn)
    return q, s.op("Total: {calc}.", x, "+", y)


def total_legs(r, s, name):
    c, h = r.randint(3, 40), r.randint(3, 60)
    q = f"A farmer has {c} cows and {h} hens. How many legs do the animals have in total?"
    x = s.op("Cow legs: {calc}.", c, "*", 4)
    y = s.op("Hen legs: {calc}.", h, "*", 2)
    return q, s.op("All legs: {calc}.", x, "+", y)


def total_change(r, s, name):
    x, y, n, m = r.randint(2, 9), r.randint(1, 4), r.randint(2, 6), r.randint(2, 8)
    bill = r.choice([50, 100])
    q = (f"Notebooks cost ${x} each and pens cost ${y} each. {name} buys {n} notebooks and "
         f"{m} pens and pays with a ${bill} bill. How much change does {name} get?")
    a = s.op("Notebooks: {calc} dollars.", n, "*", x)
    b = s.op("Pens: {calc} dollars.", m, "*", y)
    t = s.op("Total cost: {calc} dollars.", a, "+", b)
    if t >= bill:
        return None
    return q, s.op("Change: {calc} dollars.", bill, "-", t)


def total_eggs(r, s, name):
    n, k = r.choice([6, 10, 12, 18, 30]), r.randint(2, 25)
    q = f"A box holds {n} eggs. How many eggs are in {k} boxes?"
    return q, s.op("Eggs: {calc}.", k, "*", n)


def cmp_reading(r, s, name):
    other = r.choice([x for x in NAMES if x != name])
    a, d1, b, d2 = r.randint(5, 40), r.randint(2, 10), r.randint(5, 40), r.randint(2, 10)
    if a * d1 == b * d2:
        return None
    q = (f"{name} reads {a} pages a day for {d1} days. {other} reads {b} pages a day for {d2} "
         f"days. How many more pages does the one who read more read?")
    x = s.op(f"{name} reads {{calc}} pages.", a, "*", d1)
    y = s.op(f"{other} reads {{calc}} pages.", b, "*", d2)
    return q, (s.op("The difference is {calc} pages.", x, "-", y) if x > y
               else s.op("The difference is {calc} pages.", y, "-", x))


def cmp_jars(r, s, name):
    a, k = r.randint(5, 60), r.randint(2, 6)
    q = (f"Jar A has {a} candies. Jar B has {k} times as many candies as jar A. "
         f"How many more candies does jar B have than jar A?")
    b = s.op("Jar B has {calc} candies.", a, "*", k)
    return q, s.op("Jar B has {calc} more.", b, "-", a)


def cmp_price(r, s, name):
    k = r.choice([3, 4, 5, 6])
    unit = r.choice([F(1, 2), F(3, 4), 1, F(5, 4), F(3, 2), 2])
    pack = unit * k
    single = unit + r.choice([F(1, 4), F(1, 2), 1])
    m = k * r.randint(2, 6)
    q = (f"Shop A sells {k} apples for ${fmt(pack)}. Shop B sells one apple for ${fmt(single)}. "
         f"How much money is saved by buying {m} apples at shop A instead of shop B?")
    a = s.op("One apple at shop A costs {calc} dollars.", pack, "/", k)
    ca = s.op("At shop A: {calc} dollars.", a, "*", m)
    cb = s.op("At shop B: {calc} dollars.", single, "*", m)
    return q, s.op("Saved: {calc} dollars.", cb, "-", ca)


FAMILIES: dict[str, list] = {
    "percentages": [pct_sale, pct_not, pct_raise],
    "unit conversion": [unit_yards, unit_kg, unit_minutes, unit_feet_1],
    "rates and time": [rate_trip, rate_wage, rate_tank],
    "fractions": [frac_cookies, frac_marbles],
    "multi-step totals": [total_tools, total_legs, total_change, total_eggs],
    "comparisons": [cmp_reading, cmp_jars, cmp_price],
}


def split_of(question: str) -> str:
    """A fixed fifth of all possible questions is test; the rest is train."""
    return "test" if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 5 == 0 else "train"


def _stream(seed: int):
    r = random.Random(seed)
    fams = list(FAMILIES)
    seen: set[str] = set()
    while True:
        fam = r.choice(fams)
        tmpl = r.choice(FAMILIES[fam])
        s = _Steps()
        out = tmpl(r, s, r.choice(NAMES))
        if out is None:
            continue
        q, ans = out
        if q in seen:
            continue
        seen.add(q)
        sol = "\n".join(s.lines) + f"\n#### {fmt(ans)}"
        pid = f"demo-{hashlib.sha256(q.encode()).hexdigest()[:12]}"
        yield {"pid": pid, "question": q, "solution": sol, "answer": fmt(ans),
               "meta": {"family": fam, "template": tmpl.__name__, "steps": len(s.lines)}}


def demo_splits(n_train: int, n_test: int, seed: int = 0) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "test": []}
    want = {"train": n_train, "test": n_test}
    for p in _stream(seed):
        sp = split_of(p["question"])
        if len(out[sp]) < want[sp]:
            out[sp].append(p)
        if all(len(out[k]) >= want[k] for k in want):
            return out
    raise AssertionError("unreachable")


def generate(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    return demo_splits(n if split == "train" else 0, n if split == "test" else 0, seed)[split]
