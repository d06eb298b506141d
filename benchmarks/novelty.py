"""Novelty filter against brute-force rouge-score, on GSM8K questions.

    python benchmarks/novelty.py [--brute-sample 100] [--big 10000] [--brute-all]

1. 2,000 candidates against a 2,000-question pool: GSM8K train questions not in the pool plus
   perturbed near-duplicates (number changes, word swaps, deletions, truncations), so drops
   occur. Brute force (RougeScorer, every pair, the same sequential rule) over all 2,000
   candidates is ~6M pure-Python LCS tables (most of an hour), so by default it runs on a fixed
   random sample of candidates: each sampled candidate is checked against the pool plus the
   batch candidates before it that our run kept, decisions and drop scores must be identical,
   and the brute-force time for 2,000 is EXTRAPOLATED from the sample (mean per candidate x
   2,000). --brute-all runs the full sequential brute force instead and compares kept sets.
2. Ours alone at --big x --big (pool: GSM8K train questions topped up with perturbed
   variants; candidates: the remaining train questions and perturbed variants).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from rouge_score import rouge_scorer  # noqa: E402

from pipeline.problems.novelty import ROUGE_THRESHOLD, filter_novel  # noqa: E402

GSM8K = HERE.parent.parent / "shared" / "data" / "benchmarks" / "gsm8k" / "train.jsonl"
NUM = re.compile(r"\d+")


def load_questions() -> list[str]:
    with open(GSM8K) as fh:
        return [json.loads(line)["question"] for line in fh]


def perturb(text: str, rng: random.Random, donors: list[str]) -> str:
    """A near-duplicate of text, from untouched to heavily edited (so F spreads around 0.7)."""
    words = NUM.sub(lambda m: str(rng.randint(1, 999)) if rng.random() < 0.5 else m.group(),
                    text).split()
    for _ in range(rng.randint(0, max(1, len(words) // 3))):
        op = rng.random()
        i = rng.randrange(len(words))
        if op < 0.4:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        elif op < 0.7 and len(words) > 3:
            del words[i]
        else:
            words.insert(i, rng.choice(rng.choice(donors).split()))
    if rng.random() < 0.2:
        words = words[:max(3, int(len(words) * rng.uniform(0.5, 1.0)))]
    return " ".join(words)


def brute_decision(scorer, cand: str, others: list[str]) -> tuple[bool, float]:
    """(kept, best F) by scoring cand against every text, as self-instruct does."""
    best = 0.0
    for other in others:
        best = max(best, scorer.score(cand, other)["rougeL"].fmeasure)
    return best < ROUGE_THRESHOLD, best


def part1(qs: list[str], rng: random.Random, sample: int, brute_all: bool) -> dict:
    pool = qs[:2000]
    fresh = qs[2000:3200]
    cands = fresh + [perturb(rng.choice(pool + fresh), rng, qs) for _ in range(800)]
    rng.shuffle(cands)

    t0 = time.perf_counter()
    res = filter_novel(cands, pool)
    ours_s = time.perf_counter() - t0
    kept = [r.kept for r in res]

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    if brute_all:
        idx = list(range(len(cands)))
    else:
        idx = sorted(random.Random(1).sample(range(len(cands)), sample))
    mismatches = 0
    t0 = time.perf_counter()
    brute_kept = []
    for i in idx:
        # Full run: the brute force's own kept list; sample: ours before i (stated above).
        prior = brute_kept if brute_all else [j for j in range(i) if kept[j]]
        ok, best = brute_decision(scorer, cands[i], pool + [cands[j] for j in prior])
        if brute_all and ok:
            brute_kept.append(i)
        if ok != kept[i] or (not ok and best != res[i].score):
            mismatches += 1
    brute_s = time.perf_counter() - t0
    brute_2000 = brute_s if brute_all else brute_s / len(idx) * len(cands)
    return {"ours_s": ours_s, "brute_s": brute_s, "brute_2000_s": brute_2000,
            "checked": len(idx), "mismatches": mismatches, "n": len(cands),
            "dropped": kept.count(False), "extrapolated": not brute_all}


def part2(qs: list[str], rng: random.Random, big: int) -> dict:
    half = min(len(qs) * 2 // 3, big)
    pool = qs[:half] + [perturb(rng.choice(qs[:half]), rng, qs) for _ in range(big - half)]
    rest = qs[half:]
    cands = rest[:big] + [perturb(rng.choice(qs), rng, qs) for _ in range(big - len(rest))]
    rng.shuffle(cands)
    t0 = time.perf_counter()
    res = filter_novel(cands, pool)
    secs = time.perf_counter() - t0
    return {"s": secs, "n_pool": len(pool), "n_cand": len(cands),
            "dropped": sum(not r.kept for r in res),
            "from_batch": sum(r.nearest_text_source == "batch" for r in res if not r.kept)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brute-sample", type=int, default=100)
    ap.add_argument("--brute-all", action="store_true")
    ap.add_argument("--big", type=int, default=10_000)
    args = ap.parse_args()
    qs = load_questions()
    random.Random(0).shuffle(qs)

    p1 = part1(qs, random.Random(2), args.brute_sample, args.brute_all)
    assert p1["mismatches"] == 0, f"{p1['mismatches']} decisions differ from rouge-score"
    p2 = part2(qs, random.Random(3), args.big)

    label = "extrapolated from" if p1["extrapolated"] else "full run,"
    how = "extrapolated" if p1["extrapolated"] else "measured"
    rows = [("ours, 2,000 x 2,000 pool", f"{p1['ours_s']:.2f}"),
            (f"brute force, 2,000 x 2,000 ({how})", f"{p1['brute_2000_s']:.1f}"),
            ("  speed ratio brute / ours", f"{p1['brute_2000_s'] / p1['ours_s']:.0f}x"),
            (f"ours, {p2['n_cand']:,} x {p2['n_pool']:,} pool", f"{p2['s']:.2f}")]
    print(f"\nNovelty filter, Rouge-L >= {ROUGE_THRESHOLD}, GSM8K train questions + variants")
    print(f"{'case':<46}{'seconds':>10}")
    for name, value in rows:
        print(f"{name:<46}{value:>10}")
    print(f"\n2,000 x 2,000: {p1['dropped']} of {p1['n']} dropped; brute force {label} "
          f"{p1['checked']} candidates ({p1['brute_s']:.1f} s): {p1['mismatches']} mismatches")
    print(f"{p2['n_cand']:,} x {p2['n_pool']:,}: {p2['dropped']} dropped "
          f"({p2['from_batch']} by an earlier candidate of the batch)")


if __name__ == "__main__":
    main()
