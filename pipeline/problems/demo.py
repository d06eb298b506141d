"""The embedded demo dataset: GSM8K-style word problems, generated, exact.

Each template draws numbers from a seeded RNG, computes every step with `Fraction` (no
floats, no eval), and writes a reference solution in GSM8K's format: one line per step
with a calculator annotation `<<expr=value>>`, then `#### answer`. Numbers are drawn so
that answers come out whole or as short decimals.

Difficulty tiers, so that a 135M model solves some problems and fails others:
- tier 1: one step (add, subtract, multiply; a few unit conversions by a known factor),
  small numbers (operands up to 20, factors up to 10);
- tier 2: two steps (add/subtract/multiply, one even division), operands up to 15;
- tier 3: the original multi-step templates (2-4 steps with percentages, fractions, unit
  conversions, rates, larger numbers).
`DEFAULT_MIX` says which share of the dataset each tier gets.

Each template has several sentence structures, contexts (objects, units, settings),
names, optional scene-setting openers and several question phrasings, so that two draws
of one template usually differ in wording (Rouge-L F < 0.7), not only in their numbers:
the synthesis stage redraws templates (`redraw`) and drops near-duplicates of existing
problems by Rouge-L, so a template that only varied its numbers would be useless there.

Train and test never overlap: a problem's split is a function of its text (a hash), so a
question can only ever land in one split, whatever `n`, seed or mix is asked for.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from fractions import Fraction as F

# The embedded demo set's sizes, declared once (the CLI, the quick start, named sets and the
# cost model read them here)
N_TRAIN, N_TEST = 400, 200

# Tier -> share of the dataset. Tuned with SmolLM2-135M-Instruct, zero-shot, prompt
# solve_v2, greedy, on 200 demo test problems: tier 1 solved 29-33%, tier 2 5-15%, tier 3
# 0-10%; under this mix 26% overall (22.5% under {1: .65, 2: .2, 3: .15}). Tier 1 is where
# good and bad cases both abound; tiers 2 and 3 supply the harder error types.
DEFAULT_MIX: dict[int, float] = {1: 0.8, 2: 0.1, 3: 0.1}

# -- people, things, settings ----------------------------------------------------------

_PEOPLE = [("Ava", "f"), ("Ben", "m"), ("Chloe", "f"), ("Diego", "m"), ("Emma", "f"),
           ("Farid", "m"), ("Grace", "f"), ("Hiro", "m"), ("Isla", "f"), ("Jamal", "m"),
           ("Kira", "f"), ("Liam", "m"), ("Maya", "f"), ("Noah", "m"), ("Olga", "f"),
           ("Priya", "f"), ("Quinn", "m"), ("Rosa", "f"), ("Sam", "m"), ("Tariq", "m"),
           ("Uma", "f"), ("Victor", "m"), ("Wendy", "f"), ("Xavier", "m"), ("Yara", "f"),
           ("Zane", "m"), ("Amir", "m"), ("Bella", "f"), ("Carlos", "m"), ("Dana", "f"),
           ("Elias", "m"), ("Fatima", "f"), ("Gabe", "m"), ("Hana", "f"), ("Ivan", "m"),
           ("Julia", "f"), ("Kofi", "m"), ("Lena", "f"), ("Marco", "m"), ("Nora", "f")]
NAMES = [n for n, _ in _PEOPLE]


@dataclass(frozen=True)
class Person:
    name: str
    he: str   # she / he
    him: str  # her / him
    his: str  # her / his

    @property
    def He(self) -> str:
        return self.he.capitalize()

    @property
    def His(self) -> str:
        return self.his.capitalize()


def _person(r: random.Random, *not_: Person) -> Person:
    taken = {p.name for p in not_}
    name, g = r.choice([x for x in _PEOPLE if x[0] not in taken])
    return Person(name, *(("she", "her", "her") if g == "f" else ("he", "him", "his")))


@dataclass(frozen=True)
class Thing:
    one: str
    many: str
    box: str     # a container of them
    boxes: str
    get: tuple   # ways to gain some: "{P} buys 5 more"
    lose: tuple  # ways to lose some: "{P} gives away 5"


THINGS = [
    Thing("sticker", "stickers", "sheet", "sheets", ("buys", "is given", "wins"),
          ("gives away", "uses", "trades away")),
    Thing("marble", "marbles", "jar", "jars", ("finds", "wins", "buys"),
          ("loses", "gives away", "trades away")),
    Thing("apple", "apples", "basket", "baskets", ("picks", "buys", "is given"),
          ("eats", "gives away", "sells")),
    Thing("pencil", "pencils", "box", "boxes", ("buys", "is given", "finds"),
          ("gives away", "loses", "lends out")),
    Thing("cookie", "cookies", "tray", "trays", ("bakes", "buys", "is given"),
          ("eats", "gives away", "sells")),
    Thing("book", "books", "shelf", "shelves", ("buys", "borrows", "is given"),
          ("gives away", "sells", "donates")),
    Thing("seashell", "seashells", "bucket", "buckets", ("collects", "finds", "picks up"),
          ("gives away", "loses", "drops")),
    Thing("trading card", "trading cards", "binder", "binders", ("buys", "wins", "is given"),
          ("trades away", "gives away", "loses")),
    Thing("balloon", "balloons", "bunch", "bunches", ("buys", "blows up", "is given"),
          ("pops", "gives away", "lets go of")),
    Thing("stamp", "stamps", "album", "albums", ("collects", "buys", "is given"),
          ("gives away", "trades away", "sells")),
    Thing("egg", "eggs", "carton", "cartons", ("collects", "buys", "gathers"),
          ("uses", "cracks", "sells")),
    Thing("flower", "flowers", "vase", "vases", ("picks", "buys", "is given"),
          ("gives away", "sells", "drops")),
    Thing("toy car", "toy cars", "crate", "crates", ("buys", "wins", "is given"),
          ("gives away", "loses", "sells")),
    Thing("bead", "beads", "bag", "bags", ("buys", "finds", "is given"),
          ("uses", "loses", "drops")),
    Thing("cupcake", "cupcakes", "box", "boxes", ("bakes", "buys", "makes"),
          ("eats", "sells", "gives away")),
    Thing("orange", "oranges", "sack", "sacks", ("picks", "buys", "is given"),
          ("eats", "sells", "squeezes")),
    Thing("crayon", "crayons", "pack", "packs", ("buys", "finds", "is given"),
          ("breaks", "loses", "gives away")),
    Thing("coin", "coins", "jar", "jars", ("saves", "finds", "is given"),
          ("spends", "loses", "gives away")),
    Thing("rock", "rocks", "pail", "pails", ("collects", "finds", "picks up"),
          ("gives away", "drops", "loses")),
    Thing("button", "buttons", "tin", "tins", ("buys", "finds", "collects"),
          ("sews on", "loses", "uses")),
    Thing("candy", "candies", "bag", "bags", ("buys", "is given", "wins"),
          ("eats", "shares", "gives away")),
    Thing("comic book", "comic books", "stack", "stacks", ("buys", "borrows", "is given"),
          ("sells", "lends out", "gives away")),
    Thing("muffin", "muffins", "tray", "trays", ("bakes", "buys", "makes"),
          ("eats", "sells", "gives away")),
    Thing("paper crane", "paper cranes", "basket", "baskets", ("folds", "makes", "is given"),
          ("gives away", "loses", "hangs up")),
]

# Items with a price: (one, many).
ITEMS = [("notebook", "notebooks"), ("ticket", "tickets"), ("sandwich", "sandwiches"),
         ("toy car", "toy cars"), ("plant", "plants"), ("kite", "kites"),
         ("puzzle", "puzzles"), ("cup of lemonade", "cups of lemonade"),
         ("comic book", "comic books"), ("pair of socks", "pairs of socks"),
         ("bag of chips", "bags of chips"), ("candle", "candles"), ("mug", "mugs"),
         ("bracelet", "bracelets"), ("water bottle", "water bottles"),
         ("paintbrush", "paintbrushes"), ("yo-yo", "yo-yos"), ("sticker book", "sticker books")]
SHOPS = ["store", "market", "school fair", "corner shop", "gift shop", "bake sale",
         "craft fair", "museum shop", "toy shop", "flea market"]

# Scene-setting openers: no numbers, nothing the solution needs.
OPENERS = ["On Saturday morning", "After school", "This week", "During the summer holidays",
           "At the weekend", "On a rainy afternoon", "Before lunch", "For a class project",
           "At the county fair", "While on vacation", "In the morning", "During recess",
           "Before the party", "On a sunny day", "At the start of spring", "After dinner",
           "During the winter break", "On Sunday", "At camp", "In the afternoon"]
_LOWER_FIRST = {"A", "An", "The", "There", "Each", "Every", "One", "It", "Some", "Her", "His",
                "Their"}
_ALREADY_SET = {"On", "At", "In", "For", "During", "Before", "After", "Of", "Over", "While",
                "If", "This", "Every", "Last"}


def _n(k, one: str, many: str | None = None) -> str:
    """'1 hour', '3 hours'."""
    return f"{k} {one if k == 1 else (many or one + 's')}"


def _open(r: random.Random, sent: str, p: float = 0.4) -> str:
    """The sentence, sometimes after a scene-setting opener ("After school, ...")."""
    sent = _v(r, sent)
    if r.random() >= p:
        return sent
    first = sent.split(" ", 1)[0]
    if first in _ALREADY_SET or ":" in sent:
        return sent
    if first in _LOWER_FIRST:
        sent = sent[0].lower() + sent[1:]
    return f"{r.choice(OPENERS)}, {sent}"


_ALT = re.compile(r"\[([^\[\]]*)\]")


def _v(r: random.Random, text: str) -> str:
    """Resolve wording alternatives: "[costs|sells for]" becomes one of them."""
    while True:  # innermost first, so alternatives may nest
        out = _ALT.sub(lambda m: r.choice(m.group(1).split("|")), text)
        if out == text:
            return out
        text = out


def _fill(r: random.Random, sentences: list[str], p: float = 0.35) -> str:
    """Sometimes one scene-setting sentence (nothing the solution needs), with its space."""
    return " " + r.choice(sentences) if r.random() < p else ""


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _an(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


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


def money(x) -> str:
    """$12, $1.50 (cents always two places)."""
    x = F(x)
    return f"${x.numerator}" if x.denominator == 1 else f"${float(x):.2f}"


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


# -- the template registry -------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    name: str
    family: str
    tier: int
    fn: Callable  # (rng, steps) -> (question, answer) or None to redraw


TEMPLATES: dict[str, Template] = {}
# Templates renamed since problems were stored under the old name.
ALIASES = {"total_eggs": "t1_groups", "unit_feet_1": "t1_units"}


def template(family: str, tier: int):
    """Register a demo problem template of `family` at difficulty `tier`."""
    def deco(fn):
        TEMPLATES[fn.__name__] = Template(fn.__name__, family, tier, fn)
        return fn
    return deco


# == tier 1: one step, small numbers ===================================================
#
# Like every tier: facts and questions with several phrasings each ("[a|b|c]", see `_v`).


@template("addition and subtraction", 1)
def t1_gain(r, s):
    p, t = _person(r), r.choice(THINGS)
    a, b = r.randint(2, 15), r.randint(2, 12)
    get, own = r.choice(t.get), p.name + "'s"
    has = (f"[{p.name} has {a} {t.many}.|{p.name} starts with {a} {t.many}.|There are {a} {t.many} "
           f"in {own} {t.box}.|{p.name} already owns {a} {t.many}.|{p.name} counts {a} {t.many} in "
           f"{p.his} {t.box}.]")
    more = (f"[{p.He} {get} {b} more.|Then {p.he} {get} {b} more {t.many}.|Later, {p.he} {get} "
            f"another {b}.|After that, {p.name} {get} {b} more.|Today {p.he} {get} {b} more "
            f"{t.many}.]")
    ask = (f"[How many {t.many} does {p.name} have now?|How many {t.many} does {p.he} have "
           f"altogether?|What is the total number of {t.many} {p.name} has now?|How many {t.many} "
           f"does {p.name} end up with?|How many {t.many} are there now?]")
    q = r.choice([
        lambda: f"{_open(r, has)} {more} {ask}",
        lambda: f"{_open(r, has)} {more} {ask}",
        lambda: (f"If {p.name} [has|owns|starts with] {a} {t.many} and [then |later |]{get} {b} "
                 f"more, "
                 f"how many {t.many} does {p.he} have [in total|now|altogether|at the end]?"),
    ])()
    return q, s.op(f"{p.name} has {{calc}} {t.many}.", a, "+", b)


@template("addition and subtraction", 1)
def t1_combine(r, s):
    x, t = _person(r), r.choice(THINGS)
    y = _person(r, x)
    a, b = r.randint(2, 15), r.randint(2, 15)
    one = (f"[{x.name} has {a} {t.many}.|{x.name} brings {a} {t.many} to school.|{x.name} keeps "
           f"{a} {t.many} in a {t.box}.|{x.name} counts {a} {t.many}.|{x.name} owns {a} {t.many}.]")
    two = (f"[{y.name} has {b} {t.many}.|{y.name} brings {b}.|{y.name} has {b} more in another "
           f"{t.box}.|{y.name} counts {b} {t.many}.|Their friend {y.name} owns {b}.]")
    ask = (f"[How many {t.many} do they have altogether?|How many {t.many} do {x.name} and "
           f"{y.name} "
           f"have in total?|How many {t.many} do both of them have together?|What is the combined "
           f"number of {t.many}?|If they put them all together, how many {t.many} are there?]")
    q = r.choice([
        lambda: f"{_open(r, one)} {two} {ask}",
        lambda: f"{_open(r, one)} {two} {ask}",
        lambda: f"{_open(r, f'{x.name} has {a} {t.many} and {y.name} has {b} {t.many}.')} {ask}",
    ])()
    return q, s.op(f"Together they have {{calc}} {t.many}.", a, "+", b)


@template("addition and subtraction", 1)
def t1_lose(r, s):
    p, t = _person(r), r.choice(THINGS)
    a = r.randint(6, 20)
    b = r.randint(2, a - 2)
    lose = r.choice(t.lose)
    has = (f"[{p.name} has {a} {t.many}.|There are {a} {t.many} in {p.name}'s {t.box}.|{p.name} "
           f"owns {a} {t.many}.|{p.name} keeps {a} {t.many} in {p.his} {t.box}.|{p.name} starts "
           f"with {a} {t.many}.]")
    gone = (f"[{p.He} {lose} {b} of them.|Then {p.he} {lose} {b}.|Today {p.name} {lose} {b} "
            f"{t.many}.|Later {p.he} {lose} {b} of the {t.many}.]")
    ask = (f"[How many {t.many} does {p.name} have left?|How many {t.many} are left?|How many "
           f"{t.many} remain?|How many {t.many} does {p.he} still have?|How many {t.many} are left "
           f"now?]")
    q = r.choice([
        lambda: f"{_open(r, has)} {gone} {ask}",
        lambda: f"{_open(r, has)} {gone} {ask}",
        lambda: (f"{p.name} owns {a} {t.many}. After {p.he} {lose} {b}, how many {t.many} "
                 f"[remain|are left]?"),
    ])()
    return q, s.op(f"{p.name} has {{calc}} {t.many} left.", a, "-", b)


@template("comparisons", 1)
def t1_compare(r, s):
    x, t = _person(r), r.choice(THINGS)
    y = _person(r, x)
    a = r.randint(6, 20)
    b = r.randint(2, a - 2)
    one = (f"[{x.name} has {a} {t.many}.|{x.name} counted {a} {t.many}.|{x.name} owns {a} "
           f"{t.many}.|"
           f"{x.name} has a {t.box} with {a} {t.many}.]")
    two = (f"[{y.name} has {b} {t.many}.|{y.name} counted {b}.|{y.name} owns only {b}.|{y.name} "
           f"has {b} {t.many} in {y.his} {t.box}.]")
    ask = (f"[How many more {t.many} does {x.name} have than {y.name}?|How many fewer {t.many} "
           f"does "
           f"{y.name} have than {x.name}?|How many {t.many} would {y.name} need to get to have as "
           f"many as {x.name}?|What is the difference between the two numbers?|How many more does "
           f"{x.name} have?]")
    q = r.choice([
        lambda: f"{_open(r, one)} {two} {ask}",
        lambda: f"{_open(r, two)} {one} {ask}",
        lambda: (f"[What is the difference between|How far apart are|Compare] the {a} {t.many} "
                 f"that {x.name} [has|owns|collected] and the {b} {t.many} that {y.name} "
                 f"[has|owns|collected][?|. What is the difference?|. How many more does {x.name} "
                 f"have?]"),
    ])()
    return q, s.op(f"The difference is {{calc}} {t.many}.", a, "-", b)


@template("equal groups", 1)
def t1_groups(r, s):
    p, t = _person(r), r.choice(THINGS)
    a, b = r.randint(2, 10), r.randint(2, 10)
    boxes = (f"[There are {a} {t.boxes}.|{p.name} fills {a} {t.boxes}.|{p.name} has {a} {t.boxes} "
             f"of {t.many}.|{p.name} lines up {a} {t.boxes}.|On the table are {a} {t.boxes}.]")
    each = (f"[Each {t.box} holds {b} {t.many}.|There are {b} {t.many} in each {t.box}.|Every "
            f"{t.box} contains {b} {t.many}.|{p.name} puts {b} {t.many} in every {t.box}.]")
    ask = (f"[How many {t.many} are there in total?|How many {t.many} does {p.name} have "
           f"altogether?|How many {t.many} are in the {t.boxes}?|What is the total number of "
           f"{t.many}?|How many {t.many} is that in all?]")
    q = r.choice([
        lambda: f"{_open(r, boxes)} {each} {ask}",
        lambda: f"{_open(r, each)} {boxes} {ask}",
        lambda: (f"[Each|Every|One] {t.box} [has|holds|contains] {b} {t.many}. How many {t.many} "
                 f"[are in|fit in|come in|would {p.name} get in] {a} {t.boxes}?"),
    ])()
    return q, s.op(f"There are {{calc}} {t.many}.", a, "*", b)


@template("equal groups", 1)
def t1_price(r, s):
    p = _person(r)
    one, many = r.choice(ITEMS)
    n, c = r.randint(2, 9), r.randint(2, 10)
    shop = r.choice(SHOPS)
    price = (f"[One {one} costs ${c}.|At the {shop}, {many} are ${c} each.|Each {one} is ${c}.|"
             f"{_cap(many)} sell for ${c} apiece.|The price of one {one} is ${c}.]")
    buy = (f"[{p.name} buys {n} {many}.|{p.name} wants {n} of them.|{p.name} needs {n} {many} for "
           f"{p.his} class.|{p.name} orders {n} {many}.|{p.name} picks up {n} {many}.]")
    ask = (f"[How much money does {p.name} spend?|How much will {p.he} pay?|What is the total "
           f"cost?|"
           f"How much do {n} {many} cost?|How many dollars does {p.he} need?]")
    q = r.choice([
        lambda: f"{_open(r, price)} {buy} {ask}",
        lambda: f"{_open(r, buy)} {price} {ask}",
        lambda: (f"If {many} [sell for|cost|are priced at] ${c} [apiece|each], [what do|how much "
                 f"do|"
                 f"how many dollars do] {n} {many} cost[| in total| at the {shop}]?"),
    ])()
    return q, s.op(f"{n} {many} cost {{calc}} dollars.", n, "*", c)


# (big unit, small unit, factor, sentences about an amount {a} in the big unit)
_CONVERSIONS = [
    ("yards", "feet", 3, ["[A garden path|The hallway|A race lane|The school corridor] is {a} "
                          "yards long.",
                          "{P} [buys|needs|cuts] {a} yards of [fabric|ribbon|rope].",
                          "{P} [runs|walks|swims] {a} yards."]),
    ("weeks", "days", 7, ["{P} goes to [summer camp|the beach|a music course] for {a} weeks.",
                          "A [school project|holiday|science fair] lasts {a} weeks.",
                          "{P} visits {His} [grandparents|cousins|aunt] for {a} weeks."]),
    ("dozen", "eggs", 12, ["{P} [buys|needs|collects] {a} dozen eggs.",
                           "A [farm|shop|stall] sells {a} dozen eggs [at the market|on Saturday|in "
                           "a day].",
                           "The [bakery|cafe|school kitchen] uses {a} dozen eggs."]),
    ("feet", "inches", 12, ["A [board|plank|pipe|table] is {a} feet long.",
                            "{P} is building a [shelf|bench|fence] {a} feet wide.",
                            "A [snake|crocodile|lizard] at the zoo is {a} feet long."]),
    ("hours", "minutes", 60, ["A [bus ride|boat trip|car ride] takes {a} hours.",
                              "{P} practices [piano|violin|soccer] for {a} hours.",
                              "The [hike|party|game] lasts {a} hours."]),
    ("days", "hours", 24, ["A [storm|festival|power cut] lasts {a} days.",
                           "{P} leaves {His} [plant|fish|garden] alone for {a} days.",
                           "A [bike race|chess tournament|camping trip] goes on for {a} days."]),
    ("meters", "centimeters", 100, ["A [swimming pool|classroom|bus] is {a} meters long.",
                                    "{P} has a [ribbon|scarf|rope] {a} meters long.",
                                    "A [fence|wall|tree] is {a} meters tall."]),
    ("gallons", "quarts", 4, ["A [bucket|barrel|jug] holds {a} gallons of water.",
                              "{P} buys {a} gallons of [milk|juice|paint].",
                              "A [fish tank|cooler|sink] holds {a} gallons."]),
    ("years", "months", 12, ["{Ps} [puppy|cat|horse] is {a} years old.",
                             "{P} has lived in the [city|village|town] for {a} years.",
                             "A [tree|bench|statue] in the park is {a} years old."]),
    ("minutes", "seconds", 60, ["A [song|video|speech] lasts {a} minutes.",
                                "{P} [holds a plank|jogs in place|skips rope] for {a} minutes.",
                                "The [egg boils|bread toasts|soup heats] for {a} minutes."]),
    ("kilometers", "meters", 1000, ["{P} walks {a} kilometers to the lake.",
                                    "A bike trail is {a} kilometers long."]),
]


@template("unit conversion", 1)
def t1_units(r, s):
    p = _person(r)
    big, small, k, sents = r.choice(_CONVERSIONS)
    a = r.randint(2, 9)
    sent = r.choice(sents).format(a=a, P=p.name, Ps=p.name + "'s", His=p.his)
    ask = (f"[How many {small} is that?|What is that in {small}?|Give the answer in {small}.|How "
           f"many {small} does that make?|Write this in {small}.|Change it to {small}.]"
           if big != "dozen" else f"[How many {small} is that?|How many {small} does that make?]")
    q = r.choice([
        lambda: f"{_open(r, sent)} {ask}",
        lambda: f"{_open(r, sent)} {ask}",
        lambda: f"How many {small} [are there|are] in {a} {big}?{_fill(r, _UNIT_FILL, 0.6)}",
    ])()
    return q, s.op(f"{a} {big} is {{calc}} {small}.", a, "*", k)


_UNIT_FILL = ["It is for a school worksheet.", "The teacher wants it in smaller units.",
              "Show the answer as one number.", "This is a unit conversion question."]


_RATE_FILL = ["It is the same every time.", "The amount never changes.", "This goes on steadily.",
              "Nothing else changes."]


# (a rate with {b}, unit of the result, per-what in the plural, a question with {a})
_RATES = [
    ("{P} reads {b} pages [every|each] day", "pages", "days",
     "How many pages does {he} read in {a} days?"),
    ("{P} saves ${b} [every|each] week", "dollars", "weeks",
     "How much money does {he} save in {a} weeks?"),
    ("A car [travels|drives|goes] {b} miles [each|every] hour", "miles", "hours",
     "How far does the car go in {a} hours?"),
    ("{P} walks {b} blocks [each|every] day", "blocks", "days",
     "How many blocks does {he} walk in {a} days?"),
    ("A machine [makes|builds|packs] {b} toys [every|each] minute", "toys", "minutes",
     "How many toys does the machine make in {a} minutes?"),
    ("{P} earns ${b} for each lawn {he} mows", "dollars", "lawns",
     "How much does {he} earn for mowing {a} lawns?"),
    ("A hen lays {b} eggs [a|each|every] week", "eggs", "weeks",
     "How many eggs does the hen lay in {a} weeks?"),
    ("{P} does {b} push-ups every morning", "push-ups", "mornings",
     "How many push-ups does {he} do in {a} mornings?"),
    ("A baker [bakes|makes] {b} loaves [every|each] hour", "loaves", "hours",
     "How many loaves are baked in {a} hours?"),
    ("{P} plants {b} seeds in each row", "seeds", "rows",
     "How many seeds does {he} plant in {a} rows?"),
    ("A bus carries {b} people on each trip", "people", "trips",
     "How many people ride in {a} trips?"),
    ("{P} feeds the cat {b} treats [each|every|a] day", "treats", "days",
     "How many treats does the cat get in {a} days?"),
    ("A printer prints {b} pages [each|every|a] minute", "pages", "minutes",
     "How many pages does it print in {a} minutes?"),
    ("{P} drinks {b} glasses of water [each|every|a] day", "glasses", "days",
     "How many glasses does {he} drink in {a} days?"),
    ("A tailor sews {b} buttons on each coat", "buttons", "coats",
     "How many buttons go on {a} coats?"),
    ("{P} scores {b} points in [each|every] game", "points", "games",
     "How many points does {he} score in {a} games?"),
]


@template("rates and time", 1)
def t1_rate(r, s):
    p = _person(r)
    sent, unit, per, ask = r.choice(_RATES)
    a, b = r.randint(2, 9), r.randint(2, 10)
    sent = sent.format(P=p.name, b=b, he=p.he)
    ask = ask.format(a=a, he=p.he)
    ask = (f"[{ask}|[After|Over] {a} {per}, how many {unit} is that [in total|altogether|in all]?|"
           f"[Find|Work out] the [total|number of {unit}] for {a} {per}.|What is the total for {a} "
           f"{per}?|How many {unit} [in|over] {a} {per}?]")
    q = r.choice([
        lambda: f"{_open(r, sent + '.')}{_fill(r, _RATE_FILL)} {ask}",
        lambda: f"{_open(r, sent + '.')}{_fill(r, _RATE_FILL)} {ask}",
        lambda: (f"If {sent[0].lower() + sent[1:] if sent.startswith('A ') else sent}, how many "
                 f"{unit} [is that|are there] [for|in|after] {a} {per}?"),
    ])()
    return q, s.op(f"In {a} {per}: {{calc}} {unit}.", b, "*", a)


# == tier 2: two steps, small numbers ==================================================


@template("addition and subtraction", 2)
def t2_gain_lose(r, s):
    p, t = _person(r), r.choice(THINGS)
    a, b = r.randint(5, 15), r.randint(2, 10)
    c = r.randint(2, a + b - 1)
    get, lose, own = r.choice(t.get), r.choice(t.lose), p.name + "'s"
    has = (f"[{p.name} has {a} {t.many}.|There are {a} {t.many} in {own} {t.box}.|{p.name} starts "
           f"with {a} {t.many}.|{p.name} owns {a} {t.many}.]")
    more = (f"[{p.He} {get} {b} more.|Then {p.he} {get} {b} more {t.many}.|First {p.he} {get} "
            f"{b}.|Next, {p.name} {get} another {b}.]")
    less = (f"[Then {p.he} {lose} {c}.|After that, {p.he} {lose} {c} of them.|Later {p.name} "
            f"{lose} {c} {t.many}.|Next {p.he} {lose} {c}.]")
    ask = (f"[How many {t.many} does {p.name} have now?|How many {t.many} are left?|How many "
           f"{t.many} "
           f"does {p.he} have at the end?|How many {t.many} are there now?|How many does "
           f"{p.name} end up with?]")
    q = r.choice([
        lambda: f"{_open(r, has)} {more} {less} {ask}",
        lambda: f"{_open(r, has)} {more} {less} {ask}",
        lambda: (f"If {p.name} [has|starts with|owns] {a} {t.many}, {get} {b} more, and [then "
                 f"|]{lose} "
                 f"{c}, how many {t.many} does {p.he} [have|have left|end up with]?"),
    ])()
    x = s.op(f"After getting more, {p.name} has {{calc}} {t.many}.", a, "+", b)
    return q, s.op(f"Now {p.name} has {{calc}} {t.many}.", x, "-", c)


_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@template("addition and subtraction", 2)
def t2_three(r, s):
    p, t = _person(r), r.choice(THINGS)
    a, b, c = r.randint(2, 12), r.randint(2, 12), r.randint(2, 12)
    d = r.randint(0, 4)
    d1, d2, d3 = _DAYS[d:d + 3]
    y = _person(r, p)
    z = _person(r, p, y)
    get = r.choice(t.get)
    pool = (f"[{p.name}, {y.name} and {z.name} pool their {t.many}.|Three friends put their "
            f"{t.many} together.]")
    ask = (f"[How many {t.many} is that in all?|What is the total number of {t.many}?|How many "
           f"{t.many} are there altogether?|How many {t.many} in total?]")
    q = r.choice([
        lambda: (f"On {d1}, {p.name} {get} {a} {t.many}. [On|Then on] {d2}, {p.he} {get} {b}[,|] "
                 f"and "
                 f"on {d3}, {p.he} {get} {c}. [How many {t.many} does {p.he} get in all?|{ask}]"),
        lambda: (f"{_open(r, pool)} "
                 f"{p.name} has {a}, {y.name} has {b} and {z.name} has {c}. {ask}"),
        lambda: (f"There are three {t.boxes}. The first [holds|has] {a} {t.many}, the second "
                 f"[holds|has] {b}, "
                 f"and the third [holds|has] {c}. [How many {t.many} are in the {t.boxes} "
                 f"altogether?|{ask}]"),
        lambda: (f"{p.name} {get} {a} {t.many} on {d1}, {b} on {d2} and {c} on {d3}. {ask}"),
    ])()
    x = s.op(f"The first two give {{calc}} {t.many}.", a, "+", b)
    return q, s.op(f"All three give {{calc}} {t.many}.", x, "+", c)


@template("equal groups", 2)
def t2_groups_extra(r, s):
    p, t = _person(r), r.choice(THINGS)
    a, b, c = r.randint(2, 6), r.randint(2, 10), r.randint(2, 10)
    boxes = (f"[{p.name} has {a} {t.boxes} with {b} {t.many} in each.|{p.name} fills {a} "
             f"{t.boxes}, "
             f"{b} {t.many} to a {t.box}.|There are {a} full {t.boxes} of {t.many}, and a full "
             f"{t.box} "
             f"has {b}.|{p.name} {r.choice(t.get)} {a} {t.boxes} of {t.many}, {b} in every "
             f"{t.box}.]")
    extra = (f"[{p.He} also has {c} loose {t.many}.|There are {c} more {t.many} on the "
             f"table.|{p.name} "
             f"has {c} {t.many} left over.|Another {c} {t.many} are on their own.]")
    extra1 = (f"[There are {c} {t.many} on the table.|{p.name} has {c} loose {t.many}.|{c} "
              f"{t.many} "
              f"lie on a desk.]")
    ask = (f"[How many {t.many} are there in total?|How many {t.many} does {p.name} have "
           f"altogether?|How many {t.many} is that?|What is the total number of {t.many}?|How many "
           f"{t.many} are there counting all of them?]")
    q = r.choice([
        lambda: f"{_open(r, boxes)} {extra} {ask}",
        lambda: f"{_open(r, extra1)} {boxes.replace(p.name + ' has', 'There are also', 1)} {ask}",
    ])()
    x = s.op(f"The {t.boxes} hold {{calc}} {t.many}.", a, "*", b)
    return q, s.op(f"With the rest: {{calc}} {t.many}.", x, "+", c)


@template("money", 2)
def t2_change(r, s):
    p = _person(r)
    one, many = r.choice(ITEMS)
    n, c = r.randint(2, 5), r.randint(2, 10)
    bill = r.choice([20, 50])
    if n * c >= bill:
        return None
    shop = r.choice(SHOPS)
    buy = (f"[{p.name} buys {n} {many} for ${c} each.|At the {shop}, {p.name} buys {n} {many} that "
           f"cost ${c} apiece.|{p.name} orders {n} {many} at ${c} per {one}.|{p.name} picks out "
           f"{n} "
           f"{many}, and each {one} is ${c}.]")
    pay = (f"[{p.He} pays with a ${bill} bill.|{p.He} has ${bill}.|{p.He} hands the cashier "
           f"${bill}.|{p.He} brought ${bill} in {p.his} wallet.]")
    ask = (f"[How much change does {p.he} get?|How much money does {p.name} have left?|How many "
           f"dollars does {p.he} get back?|What is left after paying?|How much change should "
           f"{p.he} "
           f"receive?]")
    q = r.choice([
        lambda: f"{_open(r, buy)} {pay} {ask}",
        lambda: f"{_open(r, f'{p.name} has ${bill}.')} {buy} {ask}",
        lambda: (f"{_open(r, f'{_cap(many)} cost ${c} each.')} If {p.name} pays for {n} of them "
                 f"with ${bill}, [how much change does {p.he} get|how much money is left|how many "
                 f"dollars come back]?"),
    ])()
    x = s.op(f"The {many} cost {{calc}} dollars.", n, "*", c)
    return q, s.op("The change is {calc} dollars.", bill, "-", x)


@template("comparisons", 2)
def t2_times_total(r, s):
    x, t = _person(r), r.choice(THINGS)
    y = _person(r, x)
    a, k = r.randint(2, 10), r.randint(2, 4)
    times = {2: "[twice|2 times]", 3: "[three times|3 times]"}.get(k, f"{k} times")
    one = (f"[{x.name} has {a} {t.many}.|{x.name} {r.choice(t.get)} {a} {t.many}.|{x.name} owns "
           f"{a} {t.many}.|There are {a} {t.many} in {x.name}'s {t.box}.]")
    two = (f"[{y.name} has {times} as many {t.many}.|{y.name} has {times} as many as {x.name}.|"
           f"{y.name} owns {times} that number.|{y.name}'s {t.box} has {times} as many.]")
    ask = (f"[How many {t.many} do they have altogether?|How many {t.many} do {x.name} and "
           f"{y.name} "
           f"have together?|What is the total number of {t.many} the two children have?|How many "
           f"{t.many} is that in all?|How many {t.many} do both of them have?]")
    q = f"{_open(r, one)} {two} {ask}"
    b = s.op(f"{y.name} has {{calc}} {t.many}.", a, "*", k)
    return q, s.op(f"Together: {{calc}} {t.many}.", a, "+", b)


@template("comparisons", 2)
def t2_more_total(r, s):
    x, t = _person(r), r.choice(THINGS)
    y = _person(r, x)
    a, b = r.randint(3, 15), r.randint(2, 10)
    more = r.choice(["more", "fewer"]) if a > b + 1 else "more"
    one = (f"[{x.name} has {a} {t.many}.|{x.name} owns {a} {t.many}.|{x.name} counts {a} "
           f"{t.many}.|There are {a} {t.many} in {x.name}'s {t.box}.]")
    two = (f"[{y.name} has {b} {more} {t.many} than {x.name}.|{y.name} has {b} {more} than that.|"
           f"{y.name} owns {b} {more} {t.many} than {x.name} does.|{y.name}'s {t.box} has {b} "
           f"{more}.]")
    ask = (f"[How many {t.many} do they have altogether?|How many {t.many} do {x.name} and "
           f"{y.name} "
           f"have in total?|How many {t.many} do both of them have?|What is the total number of "
           f"{t.many} they own?|How many {t.many} is that together?]")
    q = f"{_open(r, one)} {two} {ask}"
    y_n = s.op(f"{y.name} has {{calc}} {t.many}.", a, "+" if more == "more" else "-", b)
    return q, s.op(f"Together: {{calc}} {t.many}.", a, "+", y_n)


@template("equal groups", 2)
def t2_share(r, s):
    p, t = _person(r), r.choice(THINGS)
    k, each, c = r.randint(2, 5), r.randint(2, 10), r.randint(2, 10)
    n = k * each
    who = r.choice(["friends", "cousins", "classmates", "neighbors", "teammates"])
    share = (f"[{p.name} shares {n} {t.many} equally among {k} {who}.|{p.name} splits {n} "
             f"{t.many} evenly between {k} {who}.]")
    divide = (f"[{p.name} divides {n} {t.many} evenly into {k} {t.boxes}.|{p.name} puts {n} "
              f"{t.many} into {k} {t.boxes}, the same number in each.]")
    q = r.choice([
        lambda: (f"{_open(r, share)} "
                 f"[Each of them already had {c} {t.many}.|Before that, each one had {c} "
                 f"{t.many}.] "
                 f"[How many {t.many} does each one have now?|How many does each of them have "
                 f"now?]"),
        lambda: (f"{k} {who} each have {c} {t.many}. {p.name} [gives them|hands out] {n} more "
                 f"{t.many}, "
                 f"split equally. [How many {t.many} does each of them have now?|How many does "
                 f"each one have now?]"),
        lambda: (f"{_open(r, divide)} "
                 f"[Then {p.he} adds {c} more {t.many} to each {t.box}.|Next, {c} more {t.many} go "
                 f"into every {t.box}.] "
                 f"[How many {t.many} are in each {t.box}?|How many {t.many} does one {t.box} hold "
                 f"now?]"),
    ])()
    x = s.op(f"Each gets {{calc}} {t.many}.", n, "/", k)
    return q, s.op(f"Each now has {{calc}} {t.many}.", x, "+", c)


_JOBS = ["babysitting", "mowing lawns", "walking dogs", "tutoring", "washing cars",
         "working at a cafe", "helping at a bakery", "selling lemonade", "raking leaves",
         "painting fences", "cleaning windows", "delivering newspapers"]


@template("rates and time", 2)
def t2_hours_pay(r, s):
    p = _person(r)
    h1, h2, w = r.randint(1, 6), r.randint(1, 6), r.randint(2, 10)
    d = r.randint(0, 5)
    d1, d2 = _DAYS[d:d + 2]
    job = r.choice(_JOBS)
    pay = (f"[{p.name} earns ${w} an hour {job}.|{p.name} makes ${w} per hour {job}.|For {job}, "
           f"{p.name} gets ${w} for every hour.|{p.name} is paid ${w} an hour for {job}.]")
    hours = (f"[{p.He} works {_n(h1, 'hour')} on {d1} and {_n(h2, 'hour')} on {d2}.|On {d1} {p.he} "
             f"works {_n(h1, 'hour')}, and on {d2} {p.he} works {_n(h2, 'hour')}.|{p.He} does it "
             f"for "
             f"{_n(h1, 'hour')} one day and {_n(h2, 'hour')} the next.|This week {p.he} puts in "
             f"{_n(h1, 'hour')} on {d1} and {_n(h2, 'hour')} on {d2}.]")
    hh1, hh2 = _n(h1, "hour"), _n(h2, "hour")
    hours2 = (f"[{p.name} works {hh1} on {d1} and {hh2} on {d2}.|This week {p.name} spends {hh1} "
              f"on {d1} and {hh2} on {d2} {job}.|On {d1}, {p.name} works {hh1}, and on {d2}, "
              f"{hh2}.]")
    ask = (f"[How much money does {p.he} earn?|How much does {p.he} make on the two days?|How many "
           f"dollars does {p.he} earn in all?|What does {p.he} earn altogether?|How much is {p.he} "
           f"paid in total?]")
    q = r.choice([
        lambda: f"{_open(r, pay)} {hours} {ask}",
        lambda: (f"{_open(r, hours2)} [{p.He} earns ${w} an hour.|{p.He} is paid ${w} per hour.|"
                 f"The pay is ${w} for each hour.] {ask}"),
    ])()
    h = s.op("Hours worked: {calc}.", h1, "+", h2)
    return q, s.op("Earned: {calc} dollars.", h, "*", w)


@template("rates and time", 2)
def t2_left_after(r, s):
    p = _person(r)
    b, d = r.randint(2, 10), r.randint(2, 6)
    total = b * d + r.randint(1, 20)
    kind = r.randint(0, 2)
    if kind == 0:
        what = r.choice(["book", "novel", "comic", "story book", "puzzle book", "diary"])
        has = (f"[A {what} has {total} pages.|{p.name}'s {what} is {total} pages long.|There are "
               f"{total} pages in {p.name}'s {what}.|{p.name} starts a {total}-page {what}.]")
        rate = (f"[{p.name} reads {b} pages a day for {d} days.|{p.name} reads {b} pages every day "
                f"for "
                f"{d} days.|For {d} days, {p.name} gets through {b} pages each day.|Each night "
                f"{p.name} "
                f"reads {b} pages, and {p.he} does this for {d} nights.]")
        ask = (f"[How many pages are left to read?|How many pages are still unread?|How many pages "
               f"does {p.he} still have to read?|What is left to read, in pages?]")
        q = f"{_open(r, has)} {rate} {ask}"
        x = s.op("Pages read: {calc}.", b, "*", d)
        return q, s.op("Pages left: {calc}.", total, "-", x)
    if kind == 1:
        goal = r.choice(["a bike", "a game", "a telescope", "a guitar", "a tent", "new shoes",
                         "a skateboard", "a camera"])
        want = (f"[{p.name} wants to buy {goal} that costs ${total}.|{p.name} is saving up for "
                f"{goal} "
                f"priced at ${total}.|{_cap(goal)} costs ${total}, and {p.name} wants it.]")
        save = (f"[{p.He} saves ${b} a week for {d} weeks.|Every week {p.he} puts away ${b}, for "
                f"{d} "
                f"weeks.|{p.He} adds ${b} to {p.his} piggy bank each week for {d} weeks.|For {d} "
                f"weeks "
                f"{p.he} saves ${b} a week.]")
        ask = (f"[How much more money does {p.he} need?|How many dollars is {p.he} still "
               f"short?|What "
               f"is still missing?|How much does {p.he} still have to save?]")
        q = f"{_open(r, want)} {save} {ask}"
        x = s.op("Saved: {calc} dollars.", b, "*", d)
        return q, s.op("Still needed: {calc} dollars.", total, "-", x)
    job = r.choice(["plant", "paint", "pack", "wash", "sort"])
    obj = {"plant": "trees", "paint": "fence posts", "pack": "boxes", "wash": "cars",
           "sort": "letters"}[job]
    who = r.choice(["A team", "A group of volunteers", "A crew", "The class"])
    todo = (f"[{who} has to {job} {total} {obj}.|There are {total} {obj} to {job}.|{who} must "
            f"{job} "
            f"{total} {obj}.|{total} {obj} are waiting for {who.lower()} to {job} them.]")
    rate = (f"[They {job} {b} {obj} every hour for {d} hours.|They can {job} {b} per hour and work "
            f"for {d} hours.|For {d} hours they {job} {b} {obj} an hour.|In each of {d} hours they "
            f"{job} {b}.]")
    ask = (f"[How many {obj} are still left to {job}?|How many {obj} remain?|How many are not done "
           f"yet?|How many {obj} still need work?]")
    q = f"{_open(r, todo)} {rate} {ask}"
    x = s.op(f"Done: {{calc}} {obj}.", b, "*", d)
    return q, s.op(f"Left: {{calc}} {obj}.", total, "-", x)


# == tier 3: multi-step (the original templates, now with many phrasings) ==============
#
# Written as facts, each with several phrasings ("[a|b|c]", resolved by `_v`), and a
# question with several phrasings: two draws of a template share most of their words only
# when they pick the same phrasing for every fact, which is rare.


_SALE_ITEMS = ["jacket", "bike", "lamp", "backpack", "chair", "video game", "tent", "guitar",
               "watch", "pair of boots", "desk", "scooter", "camera", "rug", "sofa", "helmet"]
_STORES = ["store", "shop", "sports shop", "department store", "outlet", "market stall"]


@template("percentages", 3)
def pct_sale(r, s):
    p = _person(r)
    c, d = r.choice(range(20, 400, 4)), r.choice([10, 15, 20, 25, 30, 40, 50])
    item, shop = r.choice(_SALE_ITEMS), r.choice(_STORES)
    price = (f"[A {item} costs ${c}.|The price of a {item} is ${c}.|A {item} is priced at ${c}.|"
             f"{p.name} sees a {item} that sells for ${c}.|At the {shop}, a {item} has a price tag "
             f"of ${c}.|{p.name} wants a {item}, which usually costs ${c}.]")
    off = (f"[It is on sale for {d}% off.|This week the {shop} takes {d}% off.|There is a {d}% "
           f"discount on it today.|The {shop} is having a sale with {d} percent off everything.|"
           f"{p.name} has a coupon for {d}% off.]")
    ask = (f"[How much does the {item} cost on sale?|What is the sale price?|How much does "
           f"{p.name} "
           f"pay for the {item}?|What does the {item} cost after the discount?|Find the price "
           f"after "
           f"the discount.|How many dollars does it cost now?]")
    q = r.choice([
        lambda: f"{price} {off}{_fill(r, _SHOP_FILL)} {ask}",
        lambda: f"{_open(r, price)} {off} {ask}",
        lambda: (f"[What is|Find|Work out] the price of a ${c} {item} after a {d}% [discount|price "
                 f"cut]"
                 f"[?|.| at the {shop}.]"),
        lambda: (f"If a {item} [costs|is|sells for] ${c} and the {shop} gives {d}% off, [what is "
                 f"the new "
                 f"price|how much is it on sale|how much does {p.name} pay]?"),
    ])()
    o = s.op("The discount is {calc} dollars.", c, "*", F(d, 100))
    return q, s.op("The sale price is {calc} dollars.", c, "-", o)


_SHOP_FILL = ["The shop is busy today.", "It is the end of the season.", "The weather is cold.",
              "There is a long line at the till.", "It is a holiday weekend."]

# (the whole with {n}, its members, those with the property, the others)
_PCT_GROUPS = [
    ("[A school has {n} students.|There are {n} students at a school.|{n} students go to a "
     "school.]",
     "students", "play a sport", "do not play a sport"),
    ("[An orchard has {n} trees.|There are {n} trees in an orchard.]", "trees", "are apple trees",
     "are not apple trees"),
    ("[A library has {n} books.|There are {n} books in a library.]", "books", "are novels",
     "are not novels"),
    ("[A parking lot holds {n} cars.|There are {n} cars in a parking lot.]", "cars", "are electric",
     "are not electric"),
    ("[A town has {n} houses.|There are {n} houses in a town.]", "houses", "have solar panels",
     "do not have solar panels"),
    ("[A club has {n} members.|{n} people belong to a club.]", "members", "come to every meeting",
     "do not come to every meeting"),
    ("[A farm has {n} animals.|There are {n} animals on a farm.]", "animals", "are sheep",
     "are not sheep"),
    ("[A factory makes {n} toys a day.|Each day a factory builds {n} toys.]", "toys",
     "are painted red", "are not painted red"),
    ("[A stadium has {n} seats.|There are {n} seats in a stadium.]", "seats", "are taken",
     "are empty"),
    ("[A bakery sells {n} loaves of bread.|{n} loaves of bread are sold at a bakery.]", "loaves",
     "are whole wheat", "are not whole wheat"),
]


@template("percentages", 3)
def pct_not(r, s):
    n, pc = r.choice(range(100, 1200, 20)), r.choice([5, 10, 15, 20, 25, 35, 40, 45, 60, 75])
    whole, members, yes, no = r.choice(_PCT_GROUPS)
    whole = whole.format(n=n)
    part = (f"[{pc}% of them {yes}.|Of these, {pc}% {yes}.|{pc} percent of the {members} {yes}.|"
            f"A survey shows that {pc}% {yes}.]")
    ask = (f"[How many {members} {no}?|How many of them {no}?|Find the number of {members} that "
           f"{no}.|"
           f"How many {no}?|What is the number of {members} that {no}?]")
    q = r.choice([
        lambda: f"{_open(r, whole)} {part} {ask}",
        lambda: f"{whole} If {pc}% of the {members} {yes}, how many of them {no}?",
        lambda: f"{whole} [Exactly|Only|Just] {pc}% {yes}; the rest {no}. {ask}",
    ])()
    k = s.op(f"{_cap(members)} that {yes}: {{calc}}.", n, "*", F(pc, 100))
    return q, s.op(f"{_cap(members)} that {no}: {{calc}}.", n, "-", k)


_EXPENSES = ["rent", "groceries", "bus fares", "bills", "food", "music lessons", "a gym pass"]


@template("percentages", 3)
def pct_raise(r, s):
    p = _person(r)
    w, pc = r.choice(range(200, 900, 20)), r.choice([5, 10, 20, 25])
    rent = r.choice(range(50, 200, 10))
    exp = r.choice(_EXPENSES)
    job = r.choice(["at a bakery", "at a hotel", "in an office", "at a garage", "at a school",
                    "in a hospital", "at a bookshop"])
    pay = (f"[{p.name} earns ${w} per week {job}.|{p.name} makes ${w} a week {job}.|{p.name} has a "
           f"job {job} that pays ${w} each week.|Each week, {p.name} is paid ${w} for working "
           f"{job}.]")
    rise = (f"[{p.He} gets a raise of {pc}%.|{p.His} boss raises {p.his} pay by {pc}%.|Then "
            f"{p.his} "
            f"weekly pay goes up by {pc} percent.|{p.He} is given a {pc}% raise.]")
    cost = (f"[{p.He} spends ${rent} per week on {exp}.|Every week {p.he} pays ${rent} for {exp}.|"
            f"{p.His} weekly spending on {exp} is ${rent}.|Out of {p.his} pay, ${rent} a week goes "
            f"to {exp}.]")
    ask = (f"[How much money does {p.name} have left each week?|What does {p.he} keep each week "
           "after the raise?|How many dollars are left over every week?|How much is left each "
           f"week "
           f"after the raise?]")
    q = r.choice([
        lambda: f"{_open(r, pay)} {rise} {cost} {ask}",
        lambda: f"{pay} {rise} {cost} {ask}",
        lambda: (f"After a {pc}% raise on a weekly wage of ${w}, {p.name} spends ${rent} a week on "
                 f"{exp}. {ask}"),
    ])()
    inc = s.op("The raise is {calc} dollars.", w, "*", F(pc, 100))
    new = s.op("The new pay is {calc} dollars.", w, "+", inc)
    return q, s.op("After spending, {calc} dollars are left.", new, "-", rent)


@template("unit conversion", 3)
def unit_yards(r, s):
    p = _person(r)
    yd, ft = r.randint(4, 40), r.randint(1, 11)
    what = r.choice(["ribbon", "rope", "piece of fabric", "garden hose", "string", "roll of tape",
                     "strip of wallpaper", "piece of yarn"])
    use = r.choice(["a project", "a costume", "a gift", "the garden", "a school play", "a kite"])
    feet = _n(ft, "foot", "feet")
    has = (f"[{p.name} has a {what} {yd} yards long.|A {what} is {yd} yards long.|{p.name} buys a "
           f"{yd}-yard {what}.|There is a {what} that measures {yd} yards.]")
    cut = (f"[{p.He} cuts off {feet}.|{p.name} uses {feet} of it for {use}.|{p.He} needs {feet} of "
           f"it "
           f"for {use}.|Then {feet} is cut off for {use}.]")
    ask = (f"[How many feet of it are left?|How many feet remain?|What length, in feet, is left?|"
           f"In feet, how much of the {what} is left over?|How many feet are not used?]")
    q = r.choice([
        lambda: f"{_open(r, has)} {cut} {ask}",
        lambda: f"{p.name} cuts {feet} from a {yd}-yard {what}. {ask}",
    ])()
    total = s.op(f"The {what} is {{calc}} feet long.", yd, "*", 3)
    if ft >= total:
        return None
    return q, s.op("Left: {calc} feet.", total, "-", ft)


@template("unit conversion", 3)
def unit_kg(r, s):
    g, c = r.choice(range(150, 900, 50)), r.randint(2, 12)
    ing = r.choice(["flour", "sugar", "butter", "rice", "oats", "cheese", "potatoes", "apples"])
    dish, dishes = r.choice([("cake", "cakes"), ("loaf", "loaves"), ("batch of cookies", "batches"),
                             ("pie", "pies"), ("pot of soup", "pots of soup"), ("tray", "trays")])
    p = _person(r)
    per = (f"[A recipe needs {g} grams of {ing} for one {dish}.|Each {dish} takes {g} grams of "
           f"{ing}.|"
           f"Every {dish} uses {g} g of {ing}.|One {dish} is made with {g} grams of {ing}.]")
    many = (f"[{p.name} is making {c} {dishes}.|{p.name} bakes {c} {dishes} for a party.|{c} "
            f"{dishes} "
            f"are needed for a fair.|{p.name} wants to cook {c} {dishes}.]")
    ask = (f"[How many kilograms of {ing} are needed?|How much {ing} is that, in kilograms?|Find "
           f"the "
           f"total mass of {ing} in kilograms.|How many kilograms of {ing} does that take?|"
           f"Give the weight of the {ing} in kilograms.]")
    q = r.choice([
        lambda: f"{_open(r, per)} {many} {ask}",
        lambda: f"{many} {per} {ask}",
        lambda: (f"How many kilograms of {ing} do {c} {dishes} [need|take|use] if [each one|every "
                 f"{dish}] [uses|needs|takes] {g} grams?"),
    ])()
    tot = s.op("For all of them: {calc} grams.", g, "*", c)
    return q, s.op("In kilograms: {calc}.", tot, "/", 1000)


@template("unit conversion", 3)
def unit_minutes(r, s):
    h, m = r.randint(1, 3), r.randint(5, 55)
    what = r.choice(["movie", "train ride", "concert", "hike", "flight", "football match", "play",
                     "road trip", "swim meet", "science fair"])
    p = _person(r)
    hh = _n(h, "hour")
    fill = [f"{p.name} checks the schedule.", "It starts right after lunch.",
            "Everyone enjoys it.", f"{p.name} brings a snack.", "The tickets were sold out.",
            f"{p.name} goes with {p.his} family."]
    fact = (f"[A {what} lasts {hh} and {m} minutes.|The {what} takes {hh} {m} minutes.|{p.name} "
            f"goes "
            f"to a {what} that runs for {hh} and {m} minutes.|{p.name}'s {what} is {hh} and {m} "
            f"minutes "
            f"long.]")
    ask = (f"[How many minutes long is the {what}?|Write its length in minutes only.|How long is "
           f"it "
           f"in minutes?|What is that in minutes?|How many minutes is that in all?]")
    q = r.choice([
        lambda: f"{_open(r, fact)}{_fill(r, fill, 0.6)} {ask}",
        lambda: (f"How many minutes are in {hh} and {m} minutes, the [length|running time] of "
                 f"[a|{p.name}'s|the school's] {what}?{_fill(r, fill)}"),
        lambda: (f"[Change|Convert|Turn] {hh} and {m} minutes into minutes.[ That is how long the "
                 f"{what} "
                 f"takes.| It is the time {p.name} spends at the {what}.]"),
    ])()
    hm = s.op("The hours are {calc} minutes.", h, "*", 60)
    return q, s.op("In total: {calc} minutes.", hm, "+", m)


@template("rates and time", 3)
def rate_trip(r, s):
    p = _person(r)
    v1, t1 = r.choice(range(30, 70, 5)), r.randint(1, 4)
    v2, t2 = r.choice(range(40, 80, 5)), r.randint(1, 3)
    unit = r.choice(["miles", "kilometers"])
    verb = r.choice(["drives", "rides a motorbike", "travels by bus", "sails", "rides a train"])
    first = (f"[{p.name} {verb} at {v1} {unit} per hour for {_n(t1, 'hour')}.|For the first "
             f"{_n(t1, 'hour')}, {p.name} goes {v1} {unit} an hour.|{p.name} {verb} for "
             f"{_n(t1, 'hour')} at a speed of {v1} {unit} per hour.|On a trip, {p.name} travels "
             f"{_n(t1, 'hour')} at {v1} {unit} an hour.]")
    second = (f"[Then {p.he} goes {v2} {unit} per hour for {_n(t2, 'hour')}.|For the next "
              f"{_n(t2, 'hour')} the speed is {v2} {unit} an hour.|After that, {p.he} speeds up to "
              f"{v2} {unit} per hour for {_n(t2, 'more hour')}.|The last {_n(t2, 'hour')} {p.he} "
              f"travels at {v2} {unit} an hour.]")
    ask = (f"[How many {unit} does {p.name} go in total?|What is the whole distance?|How far does "
           f"{p.he} travel?|How many {unit} is the trip?|Find the total distance in {unit}.]")
    q = r.choice([
        lambda: f"{_open(r, first)} {second} {ask}",
        lambda: (f"How many {unit} does {p.name} [cover|travel|go] if {p.he} {verb} "
                 f"{_n(t1, 'hour')} at {v1} "
                 f"{unit} an hour and {_n(t2, 'hour')} at {v2} {unit} an hour?"),
    ])()
    a = s.op(f"First part: {{calc}} {unit}.", v1, "*", t1)
    b = s.op(f"Second part: {{calc}} {unit}.", v2, "*", t2)
    return q, s.op(f"Total: {{calc}} {unit}.", a, "+", b)


@template("rates and time", 3)
def rate_wage(r, s):
    p = _person(r)
    h, d, w = r.randint(3, 9), r.randint(2, 6), r.choice(range(8, 30))
    where = r.choice(["a bakery", "a library", "a farm stand", "a bike shop", "a pet store",
                      "a museum", "a garden center", "a cinema", "a swimming pool"])
    pay = (f"[{p.name} earns ${w} per hour.|{p.name} has a job at {where} that pays ${w} an hour.|"
           f"At {where}, {p.name} is paid ${w} for every hour.|{p.name} makes ${w} an hour at "
           f"{where}.]")
    hours = (f"[{p.He} works {h} hours a day, {d} days a week.|{p.He} works {d} days each week, "
             f"{h} "
             f"hours each day.|Every week {p.he} does {d} shifts of {h} hours.|{p.He} is there {h} "
             f"hours a day on {d} days of the week.]")
    hours1 = (f"[{p.name} works {h} hours a day, {d} days a week.|{p.name} works {d} days each "
              f"week, "
              f"{h} hours each day.|Every week {p.name} does {d} shifts of {h} hours.]")
    pay1 = (f"[{p.He} earns ${w} per hour.|The job at {where} pays ${w} an hour.|{p.He} is paid "
            f"${w} for every hour.]")
    fill = [f"{p.name} is saving for a trip.", f"{p.He} likes the job."]
    ask = (f"[How much does {p.name} earn in a week?|What is {p.his} weekly pay?|How many dollars "
           f"does {p.he} make each week?|How much money does {p.he} get for one week of work?]")
    q = r.choice([
        lambda: f"{_open(r, pay)}{_fill(r, fill)} {hours} {ask}",
        lambda: f"{_open(r, hours1)} {pay1} {ask}",
        lambda: (f"[How much money|How many dollars] does {p.name} [make|earn] in a week at "
                 f"{where} if "
                 f"{p.he} [works|is there] {d} days, {h} hours [a|each] day, [at|for] ${w} "
                 f"[an|per] hour?"),
    ])()
    hrs = s.op("Weekly hours: {calc}.", h, "*", d)
    return q, s.op("Weekly pay: {calc} dollars.", hrs, "*", w)


@template("rates and time", 3)
def rate_tank(r, s):
    rate = r.choice([2, 3, 4, 5, 6, 8, 10, 12])
    minutes, have = r.randint(5, 40), r.choice(range(10, 200, 10))
    cap = have + rate * minutes
    what = r.choice(["tank", "pool", "bathtub", "barrel", "fish tank", "water trough", "pond"])
    unit = r.choice(["liters", "gallons"])
    src = r.choice(["tap", "hose", "pump", "pipe"])
    size = (f"[A {what} holds {cap} {unit}.|A {what} can hold {cap} {unit} of water.|The {what} "
            f"has "
            f"room for {cap} {unit}.|When full, a {what} contains {cap} {unit}.]")
    now = (f"[It already contains {have} {unit}.|Right now there are {have} {unit} in it.|It has "
           f"{have} {unit} of water in it.|{have} {unit} are already inside.]")
    flow = (f"[A {src} adds {rate} {unit} per minute.|Water flows in from a {src} at {rate} {unit} "
            f"each minute.|A {src} pours in {rate} {unit} a minute.|Every minute, the {src} puts "
            f"in "
            f"{rate} more {unit}.]")
    ask = (f"[How many minutes does it take to fill the {what}?|How long, in minutes, until it is "
           f"full?|After how many minutes is the {what} full?|How many minutes are needed to fill "
           f"it up?|When will it be full, in minutes from now?]")
    q = r.choice([
        lambda: f"{size} {now} {flow} {ask}",
        lambda: f"{flow} {size} {now} {ask}",
        lambda: f"{_open(r, size)} {now} {flow} {ask}",
    ])()
    need = s.op(f"Still needed: {{calc}} {unit}.", cap, "-", have)
    return q, s.op("Time: {calc} minutes.", need, "/", rate)


_FRAC_WORDS = {(1, 2): "half", (1, 3): "a third", (1, 4): "a quarter", (2, 3): "two thirds",
               (3, 4): "three quarters", (2, 5): "two fifths", (1, 5): "a fifth"}


def _frac(r, a, b) -> str:
    return r.choice([f"{a}/{b}", _FRAC_WORDS[(a, b)]])


@template("fractions", 3)
def frac_cookies(r, s):
    a, b = r.choice([(1, 2), (1, 3), (1, 4), (2, 3), (3, 4), (2, 5)])
    c, d = r.choice([(1, 2), (1, 3), (1, 4), (1, 5)])
    n = b * d * r.randint(2, 12)
    seller, goods, verb = r.choice([("baker", "cookies", "made"), ("farmer", "apples", "picked"),
                                    ("shop", "T-shirts", "had"), ("florist", "roses", "had"),
                                    ("bakery", "muffins", "baked"), ("fisherman", "fish", "caught"),
                                    ("toy store", "kites", "had"), ("gardener", "plants", "grew")])
    f1, f2 = _frac(r, a, b), _frac(r, c, d)
    have = (f"[A {seller} {verb} {n} {goods}.|A {seller} starts the day with {n} {goods}.|There "
            f"are "
            f"{n} {goods} for sale at a {seller}'s stall.|A {seller} has {n} {goods} to sell.]")
    am = (f"[{_cap(f1)} of them were sold in the morning.|In the morning {f1} of them are "
          f"sold.|Before noon, customers buy {f1} of the {goods}.|{_cap(f1)} of the {goods} "
          f"sell early in the day.]")
    pm = (f"[Then {f2} of the rest are sold in the afternoon.|In the afternoon, {f2} of the "
          f"remaining "
          f"{goods} are sold.|Later, {f2} of what is left is sold.|After lunch, buyers take {f2} "
          f"of "
          f"the leftover {goods}.]")
    ask = (f"[How many {goods} are left?|How many {goods} are not sold?|How many {goods} remain at "
           f"the end of the day?|Find how many {goods} the {seller} still has.|How many {goods} go "
           f"unsold?]")
    q = f"{_open(r, have)} {am} {pm} {ask}"
    morning = s.op("Sold in the morning: {calc}.", n, "*", F(a, b))
    rest = s.op("Left after the morning: {calc}.", n, "-", morning)
    aft = s.op("Sold in the afternoon: {calc}.", rest, "*", F(c, d))
    return q, s.op("Left at the end: {calc}.", rest, "-", aft)


@template("fractions", 3)
def frac_marbles(r, s):
    p, t = _person(r), r.choice(THINGS)
    k = r.choice([2, 3, 4, 5])
    n = k * r.randint(3, 30)
    part = _frac(r, 1, k)
    to = r.choice(["a friend", "a cousin", "a neighbor", "a younger brother", "a classmate"])
    has = (f"[{p.name} has {n} {t.many}.|{p.name} had {n} {t.many}.|There are {n} {t.many} in "
           f"{p.name}'s {t.box}.|{p.name} owns {n} {t.many}.]")
    give = (f"[{p.He} gives {part} of them to {to}.|{p.He} gave {part} of them to {to}.|{p.name} "
            f"hands {part} to {to}.|{_cap(part)} of them go to {to}.]")
    ask = (f"[How many {t.many} does {p.name} keep?|How many {t.many} are left?|How many does "
           f"{p.he} have now?|How many {t.many} stay with {p.name}?]")
    q = r.choice([
        lambda: f"{_open(r, has)} {give} {ask}",
        lambda: (f"Out of {n} {t.many}, {p.name} [gives|hands|passes] {part} to {to} and keeps the "
                 f"rest. {ask}"),
    ])()
    given = s.op("Given away: {calc}.", n, "/", k)
    return q, s.op("Kept: {calc}.", n, "-", given)


# (packs of A, one pack, A, packs of B, one pack, B)
_TWO_PACKS = [("packs", "pack", "pencils", "boxes", "box", "pens"),
              ("bags", "bag", "apples", "crates", "crate", "oranges"),
              ("sheets", "sheet", "stickers", "books", "book", "stamps"),
              ("boxes", "box", "crayons", "tubs", "tub", "markers"),
              ("trays", "tray", "cupcakes", "tins", "tin", "cookies"),
              ("bags", "bag", "marbles", "jars", "jar", "beads"),
              ("cartons", "carton", "eggs", "bags", "bag", "rolls"),
              ("nets", "net", "balls", "racks", "rack", "bats")]


@template("multi-step totals", 3)
def total_tools(r, s):
    p = _person(r)
    a, k = r.randint(2, 9), r.choice([6, 8, 10, 12, 24])
    b, m = r.randint(2, 7), r.choice([3, 4, 5, 10])
    pa, pa1, xa, pb, pb1, xb = r.choice(_TWO_PACKS)
    one = (f"[{p.name} buys {a} {pa} of {xa} with {k} {xa} in each.|There are {k} {xa} in each of "
           f"{a} {pa}.|{p.name} has {a} {pa} holding {k} {xa} each.|For the school fair, {p.name} "
           f"orders {a} {pa} of {xa}, {k} per {pa1}.]")
    two = (f"[{p.He} also buys {b} {pb} of {xb} with {m} {xb} in each.|There are also {b} {pb} "
           f"with "
           f"{m} {xb} apiece.|Next come {b} {pb} of {xb}, {m} in every {pb1}.|{p.He} adds {b} {pb} "
           f"that hold {m} {xb} each.]")
    ask = (f"[How many {xa} and {xb} are there in total?|How many items is that altogether?|Count "
           f"all the {xa} and {xb} together.|How many things is that in all?|What is the total "
           f"number of {xa} and {xb}?]")
    q = f"{_open(r, one)} {two} {ask}"
    x = s.op(f"{_cap(xa)}: {{calc}}.", a, "*", k)
    y = s.op(f"{_cap(xb)}: {{calc}}.", b, "*", m)
    return q, s.op("Total: {calc}.", x, "+", y)


# (two kinds, their counts of legs or wheels, what is counted, where)
_LEGS = [("cows", 4, "hens", 2, "legs", "A farmer has"),
         ("horses", 4, "chickens", 2, "legs", "A ranch has"),
         ("dogs", 4, "ducks", 2, "legs", "A pet shelter has"),
         ("sheep", 4, "geese", 2, "legs", "A farm has"),
         ("cars", 4, "bikes", 2, "wheels", "A parking lot has"),
         ("tricycles", 3, "bicycles", 2, "wheels", "A toy shop sells"),
         ("spiders", 8, "beetles", 6, "legs", "A science class keeps"),
         ("goats", 4, "turkeys", 2, "legs", "A petting zoo has"),
         ("trucks", 6, "cars", 4, "wheels", "A car park has")]


@template("multi-step totals", 3)
def total_legs(r, s):
    c, h = r.randint(3, 40), r.randint(3, 60)
    xa, ka, xb, kb, what, where = r.choice(_LEGS)
    p = _person(r)
    fact = (f"[{where} {c} {xa} and {h} {xb}.|There are {c} {xa} and {h} {xb}.|{p.name} counts {c} "
            f"{xa} and {h} {xb}.|{p.name} sees {c} {xa} and {h} {xb} on a visit.]")
    ask = (f"[How many {what} are there in total?|Count all of their {what}.|How many {what} do "
           f"they "
           f"have altogether?|If {p.name} adds up every {what[:-1]}, what number does {p.he} get?|"
           f"What is the total number of {what}?]")
    q = r.choice([
        lambda: f"{_open(r, fact)} {ask}",
        lambda: (f"How many {what} do {c} {xa} and {h} {xb} have [altogether|in total|all together|"
                 f"between them][?| at {p.name}'s farm?| if you count them all?]"),
    ])()
    x = s.op(f"{_cap(xa)}: {{calc}} {what}.", c, "*", ka)
    y = s.op(f"{_cap(xb)}: {{calc}} {what}.", h, "*", kb)
    return q, s.op(f"All {what}: {{calc}}.", x, "+", y)


_PAIRS = [("notebooks", "pens"), ("sandwiches", "juices"), ("tickets", "snacks"),
          ("plants", "pots"), ("kites", "balls"), ("candles", "cards"), ("shirts", "hats"),
          ("burgers", "drinks")]


@template("money", 3)
def total_change(r, s):
    p = _person(r)
    x, y, n, m = r.randint(2, 9), r.randint(1, 4), r.randint(2, 6), r.randint(2, 8)
    bill = r.choice([50, 100])
    ia, ib = r.choice(_PAIRS)
    prices = (f"[{_cap(ia)} cost ${x} each and {ib} cost ${y} each.|At the {r.choice(SHOPS)}, "
              f"{ia} are ${x} apiece and {ib} are ${y} apiece.|One of the {ia} costs ${x}, and one "
              f"of "
              f"the {ib} costs ${y}.]")
    buy = (f"[{p.name} buys {n} {ia} and {m} {ib}.|{p.name} picks {n} {ia} and {m} {ib}.|{p.name} "
           f"gets {n} {ia} and {m} {ib} for a party.]")
    pay = (f"[{p.He} pays with a ${bill} bill.|{p.He} hands over ${bill}.|{p.He} has ${bill} to "
           f"spend.|{p.He} pays with ${bill}.]")
    ask = (f"[How much change does {p.name} get?|How much money is left?|What change does {p.he} "
           f"get "
           f"back?|How many dollars should come back?|How much does {p.he} have left?]")
    q = r.choice([
        lambda: f"{_open(r, prices)} {buy} {pay} {ask}",
        lambda: f"{buy} {prices} {pay} {ask}",
        lambda: (f"{_open(r, f'{p.name} has ${bill}.')} {p.He} buys {n} {ia} at ${x} each and {m} "
                 f"{ib} at ${y} each. {ask}"),
    ])()
    a = s.op(f"{_cap(ia)}: {{calc}} dollars.", n, "*", x)
    b = s.op(f"{_cap(ib)}: {{calc}} dollars.", m, "*", y)
    t = s.op("Total cost: {calc} dollars.", a, "+", b)
    if t >= bill:
        return None
    return q, s.op("Change: {calc} dollars.", bill, "-", t)


# (daily thing, verb)
_DAILY = [("pages", "reads"), ("miles", "runs"), ("laps", "swims"), ("words", "writes"),
          ("minutes of piano", "practices"), ("push-ups", "does"), ("photos", "takes")]


@template("comparisons", 3)
def cmp_reading(r, s):
    x = _person(r)
    y = _person(r, x)
    a, d1, b, d2 = r.randint(5, 40), r.randint(2, 10), r.randint(5, 40), r.randint(2, 10)
    if a * d1 == b * d2:
        return None
    unit, verb = r.choice(_DAILY)
    one = (f"[{x.name} {verb} {a} {unit} a day for {d1} days.|For {d1} days, {x.name} {verb} {a} "
           f"{unit} each day.|{x.name}: {a} {unit} daily for {d1} days.|Over {d1} days, {x.name} "
           f"{verb} {a} {unit} every day.]")
    two = (f"[{y.name} {verb} {b} {unit} a day for {d2} days.|{y.name} {verb} {b} {unit} each day "
           f"for {d2} days.|{y.name}: {b} {unit} daily for {d2} days.|Over {d2} days, {y.name} "
           f"{verb} "
           f"{b} {unit} each day.]")
    ask = (f"[How many more {unit} does the one who did more have?|What is the difference between "
           f"their totals?|By how many {unit} do their totals differ?|How far apart are their "
           f"totals?|"
           f"Find the difference between the two totals.]")
    q = f"{_open(r, one)} {two} {ask}"
    u = unit.split()[0]
    xt = s.op(f"{x.name}: {{calc}} {u}.", a, "*", d1)
    yt = s.op(f"{y.name}: {{calc}} {u}.", b, "*", d2)
    return q, (s.op(f"The difference is {{calc}} {u}.", xt, "-", yt) if xt > yt
               else s.op(f"The difference is {{calc}} {u}.", yt, "-", xt))


@template("comparisons", 3)
def cmp_jars(r, s):
    a, k = r.randint(5, 60), r.randint(2, 6)
    c1, c2, things = r.choice([("Jar A", "jar B", "candies"),
                               ("The red box", "the blue box", "crayons"),
                               ("Team Red", "Team Blue", "points"),
                               ("The small shelf", "the big shelf", "books"),
                               ("The first bag", "the second bag", "marbles"),
                               ("The old tree", "the young tree", "apples")])
    c1l = c1[0].lower() + c1[1:] if c1.startswith("The") else c1
    times = {2: "twice"}.get(k, f"{k} times")
    one = f"[{c1} has {a} {things}.|There are {a} {things} in {c1l}.|{c1} holds {a} {things}.]"
    two = (f"[{_cap(c2)} has {times} as many {things} as {c1l}.|{_cap(c2)} holds "
           f"{times} that number.|{_cap(c2)} has {k} times as many.]")
    ask = (f"[How many more {things} does {c2} have than {c1l}?|Find how many more {things} are in "
           f"{c2}.|What is the difference between them?|How many {things} more are in {c2}?]")
    q = r.choice([
        lambda: f"{_open(r, one)} {two} {ask}",
        lambda: (f"If {c1l} [has|holds|contains] {a} {things} and {c2} has {k} times that many, "
                 f"[what is "
                 f"the difference between them|how many more are in {c2}|by how much do they "
                 f"differ]?"),
    ])()
    b = s.op(f"{_cap(c2)} has {{calc}} {things}.", a, "*", k)
    return q, s.op(f"{_cap(c2)} has {{calc}} more.", b, "-", a)


@template("comparisons", 3)
def cmp_price(r, s):
    k = r.choice([3, 4, 5, 6])
    unit = r.choice([F(1, 2), F(3, 4), 1, F(5, 4), F(3, 2), 2])
    pack = unit * k
    single = unit + r.choice([F(1, 4), F(1, 2), 1])
    m = k * r.randint(2, 6)
    one, many = r.choice([("apple", "apples"), ("orange", "oranges"), ("pen", "pens"),
                          ("bagel", "bagels"), ("lemon", "lemons"), ("notebook", "notebooks"),
                          ("candle", "candles"), ("peach", "peaches")])
    p = _person(r)
    a_, b_ = r.choice([("shop A", "shop B"), ("the market", "the corner shop"),
                       ("a farm stand", "a kiosk"), ("the first store", "the second store")])
    deal = (f"[{_cap(a_)} sells {k} {many} for {money(pack)}.|At {a_}, a bundle of {k} {many} "
            f"costs {money(pack)}.|{_cap(many)} are {k} for {money(pack)} at {a_}.|{_cap(a_)} "
            f"offers {k} {many} for {money(pack)}.]")
    single_ = (f"[{_cap(b_)} sells one {one} for {money(single)}.|{_cap(b_)} charges "
               f"{money(single)} for a single {one}.|At {b_}, each {one} is {money(single)}.|One "
               f"{one} "
               f"costs {money(single)} at {b_}.]")
    ask = (f"[How much money is saved by buying {m} {many} at {a_} instead?|How much cheaper is it "
           f"to "
           f"buy {m} {many} at {a_}?|What do you save on {m} {many} by shopping at {a_}?|{p.name} "
           f"needs "
           f"{m} {many}. How many dollars does {p.he} save with the better deal?]")
    q = r.choice([
        lambda: f"{_open(r, deal)} {single_} {ask}",
        lambda: f"{single_} {deal} {ask}",
    ])()
    a = s.op(f"One {one} at the cheaper place costs {{calc}} dollars.", pack, "/", k)
    ca = s.op("There: {calc} dollars.", a, "*", m)
    cb = s.op("At the other place: {calc} dollars.", single, "*", m)
    return q, s.op("Saved: {calc} dollars.", cb, "-", ca)


# -- families, tiers, drawing ----------------------------------------------------------

FAMILIES: dict[str, list] = {}
for _t in TEMPLATES.values():
    FAMILIES.setdefault(_t.family, []).append(_t.fn)
TIERS: dict[int, list[Template]] = {}
for _t in TEMPLATES.values():
    TIERS.setdefault(_t.tier, []).append(_t)


def split_of(question: str) -> str:
    """A fixed fifth of all possible questions is test; the rest is train."""
    return "test" if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 5 == 0 else "train"


def _make(t: Template, r: random.Random) -> dict | None:
    s = _Steps()
    out = t.fn(r, s)
    if out is None:
        return None
    q, ans = out
    q = re.sub(r"\s+", " ", _v(r, q)).strip()
    sol = "\n".join(s.lines) + f"\n#### {fmt(ans)}"
    pid = f"demo-{hashlib.sha256(q.encode()).hexdigest()[:12]}"
    return {"pid": pid, "question": q, "solution": sol, "answer": fmt(ans),
            "meta": {"family": t.family, "template": t.name, "tier": t.tier,
                     "steps": len(s.lines)}}


def _norm_mix(mix: dict[int, float] | None) -> dict[int, float]:
    mix = DEFAULT_MIX if mix is None else mix
    bad = [t for t in mix if t not in TIERS]
    if bad or any(w < 0 for w in mix.values()) or not sum(mix.values()) > 0:
        raise ValueError(f"bad tier mix {mix!r}: tiers are {sorted(TIERS)}, weights >= 0")
    total = sum(mix.values())
    return {t: w / total for t, w in sorted(mix.items()) if w > 0}


def quotas(n: int, mix: dict[int, float] | None = None) -> dict[int, int]:
    """How many of n problems each tier gets (largest remainder: they sum to n)."""
    mix = _norm_mix(mix)
    raw = {t: n * w for t, w in mix.items()}
    q = {t: int(v) for t, v in raw.items()}
    for t in sorted(raw, key=lambda t: (q[t] - raw[t], t))[:n - sum(q.values())]:
        q[t] += 1
    return q


def _stream(seed: int, mix: dict[int, float] | None = None):
    mix = _norm_mix(mix)
    r = random.Random(seed)
    tiers, weights = list(mix), list(mix.values())
    seen: set[str] = set()
    while True:
        tier = r.choices(tiers, weights)[0]
        p = _make(r.choice(TIERS[tier]), r)
        if p is None or p["question"] in seen:
            continue
        seen.add(p["question"])
        yield p


def demo_splits(n_train: int, n_test: int, seed: int = 0,
                mix: dict[int, float] | None = None) -> dict[str, list[dict]]:
    """n_train and n_test problems, each split holding the tiers in the mix's proportions
    (exactly, by largest remainder). For one seed and mix a smaller request is a subset
    of a larger one: each (split, tier) takes the first problems the stream offers it."""
    want = {"train": quotas(n_train, mix), "test": quotas(n_test, mix)}
    have = {sp: {t: 0 for t in q} for sp, q in want.items()}
    out: dict[str, list[dict]] = {"train": [], "test": []}
    left = n_train + n_test
    if not left:
        return out
    for i, p in enumerate(_stream(seed, mix)):
        sp, tier = split_of(p["question"]), p["meta"]["tier"]
        if have[sp].get(tier, 0) < want[sp].get(tier, 0):
            have[sp][tier] += 1
            out[sp].append(p)
            left -= 1
            if not left:
                return out
        if i > 200 * (n_train + n_test) + 10_000:
            raise RuntimeError(f"demo: cannot find {n_train}+{n_test} distinct problems")
    raise AssertionError("unreachable")


def generate(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    """n demo problems of one split (the same seed gives the same problems)."""
    return demo_splits(n if split == "train" else 0, n if split == "test" else 0, seed)[split]


def draw(tier: int | None = None, family: str | None = None,
         rng: random.Random | None = None, split: str | None = "train") -> dict:
    """One fresh problem of a tier and/or family (either may be None: any). With neither,
    the tier follows DEFAULT_MIX. Only train-split questions by default (split=None: any):
    new problems must never be copies of held-out test questions."""
    rng = rng or random.Random()
    pool = [t for t in TEMPLATES.values()
            if (tier is None or t.tier == tier) and (family is None or t.family == family)]
    if not pool:
        raise ValueError(f"no demo template with tier={tier!r} family={family!r}")
    for _ in range(10_000):
        if tier is None and family is None:
            mix = _norm_mix(None)
            t = rng.choice(TIERS[rng.choices(list(mix), list(mix.values()))[0]])
        else:
            t = rng.choice(pool)
        p = _make(t, rng)
        if p is not None and (split is None or split_of(p["question"]) == split):
            return p
    raise RuntimeError(f"demo: no draw for tier={tier!r} family={family!r}")


def redraw(meta: dict, rng: random.Random, exclude: Collection[str] = ()) -> dict | None:
    """A new problem from the same template (hence family and tier) as `meta`, the meta of
    an existing demo problem; None if the template is unknown. Questions in `exclude`
    (e.g. the source's) are never returned.

    A redraw is always a train-split question: the synthesizer turns redraws into training
    data, and a question whose text hashes to the test split is, by construction, a
    held-out test problem (or could become one with a larger n); training on it would
    contaminate the test split and inflate the measured gain. So such draws are redrawn."""
    name = ALIASES.get(meta.get("template", ""), meta.get("template", ""))
    t = TEMPLATES.get(name)
    if t is None:
        return None
    for _ in range(10_000):
        p = _make(t, rng)
        if p is not None and split_of(p["question"]) == "train" and p["question"] not in exclude:
            return p
    raise RuntimeError(f"demo: template {name} yields no new train question")
