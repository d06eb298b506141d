"""The offline synthesizer's variant engine on real GSM8K train problems, and its parser."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from pipeline.problems.variants import Dropped, Variant, check_chain, make_variant, parse_expr

N_RECORDS = 500
# Measured: 250 of the first 500 train records (50.0%) give a Variant with Random(index).
MIN_YIELD = 0.45
KNOWN_PREFIXES = ("no annotated steps", "unparsable expr", "inconsistent", "final answer",
                  "no given quantities", "ambiguous literal", "unexplained literal",
                  "no clean draw", "ambiguous text number", "rewrite failed")
_NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")
_ANN = re.compile(r"<<([^<>]*)=([^<>=]*)>>")


@pytest.fixture(scope="module")
def train(bench) -> list[dict]:
    lines = (bench / "gsm8k" / "train.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:N_RECORDS]]


@pytest.fixture(scope="module")
def results(train) -> list[tuple[dict, Variant | Dropped]]:
    return [(r, make_variant(r["question"], r["answer"], random.Random(i)))
            for i, r in enumerate(train)]


def _numbers(text: str) -> set[Fraction]:
    return {Fraction(x.replace(",", "")) for x in _NUM.findall(text)}


def _final(solution: str) -> Fraction:
    return Fraction(solution.rsplit("####", 1)[1].strip().replace(",", ""))


# ---------------------------------------------------------------- parse_expr

def test_parse_expr_precedence_and_associativity():
    assert parse_expr("2+3*4") == 14
    assert parse_expr("(2+3)*4") == 20
    assert parse_expr("100-50-30-15") == 5
    assert parse_expr("48/2/3") == 8
    assert parse_expr("2*(3+(4-1))*5") == 60


def test_parse_expr_unary_decimals_and_exact_division():
    assert parse_expr("-3+5") == 2
    assert parse_expr("-(2-5)") == 3
    assert parse_expr("2*-3") == -6
    assert parse_expr("+10") == 10
    assert parse_expr("0.2*50") == 10
    assert parse_expr(".5+.25") == Fraction(3, 4)
    assert parse_expr("1/3*3") == 1  # exact, where floats would give 0.999...
    assert parse_expr("10/4") == Fraction(5, 2)
    assert parse_expr(" 12 / 60 ") == Fraction(1, 5)


@pytest.mark.parametrize("bad", [
    "2x+3", "2**3", "__import__('os').system('true')", "5%2", "560//10", "1,200", "1 2",
    "(1+2", "1+2)", "", "3*", "1/0", "5.", "abs(-3)",
    "1+" * 300 + "1",  # past the length limit
    "(" * 100 + "1" + ")" * 100,  # past the nesting limit
    "-" * 150 + "1",
])
def test_parse_expr_rejects_outside_the_grammar(bad):
    with pytest.raises(ValueError):
        parse_expr(bad)


# ---------------------------------------------------------------- check_chain

def test_check_chain_on_real_and_tampered_solutions(train):
    sol = train[0]["answer"]
    assert check_chain(sol) == []
    wrong_step = check_chain(sol.replace("<<48/2=24>>", "<<48/2=25>>"))
    assert wrong_step and wrong_step[0].startswith("inconsistent")
    wrong_final = check_chain(sol.replace("#### 72", "#### 73"))
    assert wrong_final and wrong_final[0].startswith("final answer")
    assert check_chain("Half of 48 is 24.\n#### 24") == ["no annotated steps"]
    assert check_chain(sol.replace("48/2=24", "48x2=24"))[0].startswith("unparsable expr")


# ---------------------------------------------------------------- make_variant on GSM8K

def test_yield_and_variant_invariants_on_gsm8k_train(results):
    variants = [(r, v) for r, v in results if isinstance(v, Variant)]
    reasons = Counter(re.sub(r"\d[\d.,]*", "N", v.reason).split(":")[0]
                      for _, v in results if isinstance(v, Dropped))
    print(f"\nvariants: {len(variants)}/{len(results)}; top drops: {reasons.most_common(6)}")
    assert len(variants) >= MIN_YIELD * len(results)
    for rec, v in variants:
        assert check_chain(v.solution) == [], (rec["question"], v.solution)
        steps = _ANN.findall(v.solution)
        assert len(steps) == v.n_steps == len(_ANN.findall(rec["answer"]))
        assert _final(v.solution) == Fraction(steps[-1][1]) == Fraction(v.answer)
        assert v.question != rec["question"]
        assert v.changes and all(old != new for old, new in v.changes.items())
        in_question = _numbers(v.question)
        assert all(Fraction(new) in in_question for new in v.changes.values()), v.question
        # The givens keep their order, so the text's comparisons still hold.
        pairs = sorted((Fraction(a), Fraction(b)) for a, b in v.changes.items())
        assert [b for _, b in pairs] == sorted(b for _, b in pairs)
        # Every step keeps its sign (what is left stays left) and integer steps stay integers.
        for (_, new_value), (_, old_value) in zip(steps, _ANN.findall(rec["answer"])):
            a, b = Fraction(new_value), Fraction(old_value)
            assert (a > 0, a < 0) == (b > 0, b < 0)
            assert b.denominator != 1 or a.denominator == 1
        # Integers stay integers, decimals stay decimals.
        assert all(Fraction(a).denominator == 1 or Fraction(b).denominator != 1
                   for a, b in v.changes.items())


def test_drop_reasons_come_from_the_known_set(results):
    drops = [v.reason for _, v in results if isinstance(v, Dropped)]
    assert drops
    for reason in drops:
        assert isinstance(reason, str) and reason.startswith(KNOWN_PREFIXES), reason


def test_same_seed_same_variants_other_seed_other_variants(train):
    def run(seed: int) -> list:
        rng = random.Random(seed)
        return [make_variant(r["question"], r["answer"], rng) for r in train[:60]]

    first = run(7)
    assert first == run(7)
    assert first != run(8)


def test_half_as_many_keeps_its_meaning(train):
    rec = train[0]  # Natalia: 48 clips in April, half as many in May
    v = make_variant(rec["question"], rec["answer"], random.Random(3))
    assert isinstance(v, Variant)
    (old, new), = v.changes.items()
    x = Fraction(new)
    assert old == "48" and f"to {new} of her friends" in v.question
    assert Fraction(v.answer) == x + x / 2
    assert f"<<{new}/2=" in v.solution and f"{new}/2 = " in v.solution


def test_percentages_and_totals_stay_consistent(train):
    rec = train[429]  # 2300 books, 80% English, 60% of those published in the country
    assert rec["question"].startswith("In the school's library, there are 2300")
    for seed in range(5):
        v = make_variant(rec["question"], rec["answer"], random.Random(seed))
        assert isinstance(v, Variant)
        n, english, local = (Fraction(v.changes[k]) for k in ("2300", "80", "60"))
        assert f"{v.changes['80']}%" in v.question and f"{v.changes['60']}%" in v.question
        assert english <= 100 and local <= 100
        books = n * english / 100
        assert Fraction(v.answer) == books - books * local / 100


def test_formatting_of_thousands_and_cents_is_kept(train):
    emily = train[367]  # "$1,000,000 per year ... $20,000 per year"
    v = make_variant(emily["question"], emily["answer"], random.Random(0))
    assert isinstance(v, Variant)
    assert f"${int(v.changes['1000000']):,} per year" in v.question
    assert f"${int(v.changes['20000']):,} per year" in v.question
    beef = train[132]  # "$5.50 per pound"
    v = make_variant(beef["question"], beef["answer"], random.Random(0))
    assert isinstance(v, Variant)
    assert re.search(r"\$\d+\.\d\d per pound", v.question), v.question
    assert "$5.50" not in v.question


def test_days_a_week_stays_within_a_week(train):
    rec = train[15]  # "He sells 500 movies a day for 5 days a week"
    for seed in range(20):
        v = make_variant(rec["question"], rec["answer"], random.Random(seed))
        assert isinstance(v, Variant)
        days = int(re.search(r"(\d+) days a week", v.question).group(1))
        assert 2 <= days <= 7 and days != 5


def test_a_difference_does_not_turn_negative():
    # "four" is a constant the draw leaves alone; 5 may be drawn as 3, which would leave -1.
    answers = set()
    for seed in range(60):
        v = make_variant("Ann has 5 marbles and loses four. How many marbles are left?",
                         "5-4=<<5-4=1>>1\n#### 1", random.Random(seed))
        assert isinstance(v, Variant)
        answers.add(Fraction(v.answer))
    assert min(answers) > 0 and len(answers) > 3


def test_article_follows_the_new_number(train):
    rec = train[3]  # "a 120-page book"
    questions = []
    for seed in range(300):
        v = make_variant(rec["question"], rec["answer"], random.Random(seed))
        if isinstance(v, Variant):
            questions.append(v.question)
    assert any("reading an 8" in q for q in questions)
    assert not any(re.search(r"\ba 8\d", q) for q in questions)


def test_worded_given_in_the_solution_becomes_the_new_numeral(train):
    rec = train[45]  # question "4 bags of Reese's", solution "The four bags of Reese's"
    v = make_variant(rec["question"], rec["answer"], random.Random(45))
    assert isinstance(v, Variant)
    assert f"The {v.changes['4']} bags of Reese's cost" in v.solution
    assert "four bags" not in v.solution


# ---------------------------------------------------------------- drops, by construction

def test_drops_name_their_reason(train):
    rng = random.Random(0)
    q, sol = train[0]["question"], train[0]["answer"]
    assert make_variant(q, "She sold 72.\n#### 72", rng) == Dropped("no annotated steps")
    assert make_variant(q, sol.replace("=24>>", "=25>>"), rng).reason.startswith(
        "inconsistent: step 1 value 25 != 48/2")
    assert make_variant(q, sol.replace("<<48/2", "<<48x2"), rng).reason.startswith(
        "unparsable expr")
    assert make_variant(q, sol.replace("#### 72", "#### 24"), rng).reason.startswith(
        "final answer")
    # 7 comes from nowhere in the question: arithmetic done outside the annotations.
    eggs = make_variant("Each box holds 6 eggs. How many eggs are in 4 boxes after 9 are eaten?",
                        "6*4=<<6*4=24>>24 eggs\n24-7=<<24-7=17>>17\n#### 17", rng)
    assert eggs == Dropped("unexplained literal 7 in step 2")
    # The second 8 may be the given 8 blue pens or the 8 red pens just computed.
    pens = make_variant("Sam has 4 red pens and 8 blue pens. He doubles his red pens. "
                        "How many pens does he have?",
                        "4*2=<<4*2=8>>8 red\n8+8=<<8+8=16>>16\n#### 16", rng)
    assert pens.reason.startswith("ambiguous literal 8 in step 2")
    week = make_variant("A week has seven days. How many days are in two weeks?",
                        "7*2=<<7*2=14>>14\n#### 14", rng)
    assert week.reason.startswith("no given quantities")
    assert make_variant(q, sol, rng, max_draws=0).reason.startswith("no clean draw after 0")
