"""A large corpus of realistic wrong solutions for the benchmarks, built without a model.

Demo problems' reference solutions are perturbed the way small models go wrong (an
arithmetic slip, a wrong operation, stopping early, a repetition loop, truncation, a
missing answer) and the offline analyzer writes keyphrases for them, exactly as it does
for real bad cases. Deterministic by seed."""

from __future__ import annotations

import random
import re

from pipeline.analysis.offline_analyzer import analyze_case
from pipeline.problems.answers import extract_answer
from pipeline.problems.demo import demo_splits

_ANN = re.compile(r"<<[^>]*>>")


def wrong_output(p: dict, r: random.Random) -> str:
    lines = _ANN.sub("", p["solution"]).split("\n")[:-1]
    kind = r.randrange(6)
    nums = re.findall(r"= (\d+(?:\.\d+)?)", lines[-1])
    if kind == 0 and nums:  # arithmetic slip in the last step
        bad = str(int(float(nums[-1])) + r.choice([-10, -2, -1, 1, 2, 10]))
        lines[-1] = lines[-1].replace(f"= {nums[-1]}", f"= {bad}")
        return "\n".join(lines) + f"\nThe answer is {bad}."
    if kind == 1 and len(lines) > 1:  # stopped early
        v = re.findall(r"= (\d+(?:\.\d+)?)", lines[0])
        return lines[0] + f"\nThe answer is {v[-1] if v else 0}."
    if kind == 2:  # repetition loop, truncated
        return lines[0] + "\n" + (lines[0] + " ") * 6
    if kind == 3:  # no final answer
        return "Let's think about the problem. We need to find the total. " + lines[0]
    if kind == 4:  # wrong operation
        m = re.search(r"(\d+)\*(\d+) = (\d+)", lines[0])
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            return f"{a} + {b} = {a + b}\nThe answer is {a + b}."
    return f"The answer is {float(p['answer']) * r.choice([10, 100, 2, 3]):g}."


def build(n: int, seed: int = 0) -> list[dict]:
    """n bad cases (question, reference, wrong output) with their keyphrases."""
    r = random.Random(seed)
    probs = demo_splits(n, 0, seed)["train"]
    out = []
    for p in probs:
        o = wrong_output(p, r)
        pred, _ = extract_answer(o)
        out.append(dict(p, output=o, pred=pred,
                        keyphrases=analyze_case(p["question"], p["solution"], p["answer"], o, pred,
                                           200 if "truncated" in o else 60, 200)))
    return out
