"""One-shot selection cost, side by side in one run on the same candidates and dev set:

1. naive: every dev prompt (demonstration + question) encoded from scratch with plain
   left padding, generated to the full max_new_tokens;
2. ours: the demonstration's prefix run once per candidate and its KV cache shared by
   all dev rows, each row stopped once its final answer is complete;
3. the likelihood proxy: forward passes only (the zero-shot pass once per dev set).
Both generation paths are judged on text cut at the first complete final answer, so
their one-shot scores must be identical; the script checks that, prints seconds per
candidate and the ratios (goals: ours >= 2x faster than naive; proxy >= 5x cheaper than
ours), and the Spearman correlation of proxy and one-shot scores.

Needs a store with kept candidates and a dev set: by default it builds one (demo data,
extraction of 64 train problems, offline analysis, clustering, offline synthesis).
Usage: python benchmarks/selection.py [--n 12] [--db PATH]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scipy.stats import spearmanr  # noqa: E402

from pipeline.answers import cut_at_final_answer, judge  # noqa: E402
from pipeline.select import (  # noqa: E402
    OneShot,
    Proxy,
    SelectParams,
    _demo_turns,
    dev_set,
    oneshot_score,
)
from pipeline.store import Store  # noqa: E402
from pipeline.target import LocalTarget, render  # noqa: E402


def build(db: Path) -> Store:
    from pipeline.cluster import ClusterParams, cluster
    from pipeline.data import import_demo
    from pipeline.extract import extract
    from pipeline.keyphrases import analyze_bad_cases
    from pipeline.synthesize import SynthParams, synthesize
    from pipeline.target import GenParams

    s = Store(db)
    if not s.candidates(status="kept"):
        import_demo(s, 400, 200)
        rid = extract(s, "demo", "train", limit=64, params=GenParams(max_new_tokens=160))
        analyze_bad_cases(s, run_id=rid, instructor="offline")
        cluster(s, ClusterParams())
        synthesize(s, SynthParams(budget=80, synthesizer="offline"))
    return s


def naive_score(t: LocalTarget, tmpl: str, cand: dict, dev: list[dict], max_new: int):
    """Plain left padding, no shared prefix, no early stop."""
    import torch

    tok, model = t._tok, t._model
    demo = _demo_turns(cand, tmpl)
    texts = [tok.apply_chat_template(demo + render(tmpl, d["question"]), tokenize=False,
                                     add_generation_prompt=True) for d in dev]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    rows, n_tok = [], 0
    for d, gen in zip(dev, out[:, enc["input_ids"].shape[1]:]):
        stop = (gen == tok.eos_token_id) | (gen == tok.pad_token_id)
        n = int(stop.nonzero()[0]) if stop.any() else len(gen)
        n_tok += n
        text = cut_at_final_answer(tok.decode(gen[:n], skip_special_tokens=True))
        rows.append({"pid": d["pid"], "half": d["half"], "zero_correct": d["zero_correct"],
                     "correct": bool(judge(text, d["answer"])["correct"])})
    return oneshot_score(cand["cand_id"], rows), n_tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12, help="candidates")
    ap.add_argument("--db", default="/tmp/sei-bench-select/sei.duckdb")
    ap.add_argument("--n-good", type=int, default=10)
    ap.add_argument("--n-bad", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    a = ap.parse_args()
    db = Path(a.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    s = build(db)
    cands = s.candidates(status="kept")[:a.n]
    dev = dev_set(s, 1, a.n_good, a.n_bad)
    p = SelectParams(n_good=a.n_good, n_bad=a.n_bad, max_new_tokens=a.max_new_tokens,
                     batch_size=len(dev))
    t = LocalTarget().load()
    ours, prx = OneShot(t, p), Proxy(t, p)
    tmpl = ours.tmpl
    ours.score(cands[0], dev[:2])  # warm-up

    t0 = time.perf_counter()
    naive = [naive_score(t, tmpl, c, dev, a.max_new_tokens) for c in cands]
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = [ours.score(c, dev) for c in cands]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    proxy = [prx.score(c, dev)[0] for c in cands]
    t_proxy = time.perf_counter() - t0

    same = all(abs(n[0]["score"] - f[0]["score"]) < 1e-12 for n, f in zip(naive, fast))
    tok_naive = sum(n[1] for n in naive)
    tok_ours = sum(sum(r["completion_tokens"] or 0 for r in f[1]) for f in fast)
    rho = spearmanr([f[0]["score"] for f in fast], [x["score"] for x in proxy]).statistic
    k = len(cands)
    print(f"\n{k} candidates x {len(dev)} dev problems ({a.n_good} good + {a.n_bad} bad), "
          f"max_new_tokens={a.max_new_tokens}, {os.cpu_count()} cores")
    print(f"{'path':44} {'s/candidate':>12} {'gen tokens':>11}")
    print(f"{'naive (no prefix reuse, full length)':44} {t_naive / k:12.2f} {tok_naive:11d}")
    print(f"{'ours (prefix KV reuse + early stop)':44} {t_ours / k:12.2f} {tok_ours:11d}")
    print(f"{'proxy (forward passes only)':44} {t_proxy / k:12.2f} {'-':>11}")
    print(f"\nidentical one-shot scores naive vs ours: {same}")
    print(f"ours vs naive: {t_naive / t_ours:.2f}x faster (goal >= 2x)")
    print(f"proxy vs ours: {t_ours / t_proxy:.2f}x cheaper (goal >= 5x)")
    print(f"Spearman(proxy, one-shot) over {k} candidates: {rho:.3f}")
    print("scores:", [round(f[0]["score"], 3) for f in fast])


if __name__ == "__main__":
    main()
