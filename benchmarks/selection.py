"""One-shot selection cost, side by side in one run on the same candidates and dev set:

1. naive: every dev prompt (demonstration + question) encoded from scratch with plain
   left padding, generated to the full max_new_tokens by transformers' generate(), one
   candidate's dev rows per batch;
2. naive at the same batch width as ours (several candidates' rows in one generate()),
   the fair baseline for batching: same rows per batch, same outputs;
3. ours: each candidate's demonstration prefilled once for its dev rows, several
   candidates per batch, KV written into reserved room, each row stopped (and dropped from
   the batch) once its final answer is complete;
4. the likelihood proxy: forward passes only (the zero-shot pass once per dev set).
All generation paths are judged on text cut at the first complete final answer, so their
one-shot scores must be identical; the script checks that, prints seconds per candidate
and the ratios (goals: ours >= 2x faster than naive; proxy >= 5x cheaper than ours), and
the Spearman correlation of proxy and one-shot scores.

Needs a store with kept candidates and a dev set: by default it builds one (demo data,
extraction of 64 train problems, offline analysis, clustering, offline synthesis).
Usage: python benchmarks/selection.py [--n 16] [--batch-size 160] [--db PATH]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scipy.stats import spearmanr  # noqa: E402

from pipeline.models.target import LocalTarget, render  # noqa: E402
from pipeline.problems.answers import cut_at_final_answer, judge  # noqa: E402
from pipeline.stages.select import (  # noqa: E402
    OneShot,
    Proxy,
    SelectParams,
    _demo_turns,
    dev_set,
    oneshot_score,
)
from pipeline.storage.store import Store  # noqa: E402


def build(db: Path) -> Store:
    from pipeline.models.target import GenParams
    from pipeline.problems.data import import_demo
    from pipeline.stages.analyze import analyze_bad_cases
    from pipeline.stages.cluster import ClusterParams, cluster
    from pipeline.stages.extract import extract
    from pipeline.stages.synthesize import SynthParams, synthesize

    s = Store(db)
    if not s.candidates(status="kept"):
        import_demo(s, 400, 200)
        rid = extract(s, "demo", "train", limit=64, params=GenParams(max_new_tokens=160))
        analyze_bad_cases(s, run_id=rid, instructor="offline")
        cluster(s, ClusterParams())
        synthesize(s, SynthParams(budget=80, synthesizer="offline"))
    return s


def naive_scores(t: LocalTarget, tmpl: str, cands: list[dict], dev: list[dict], max_new: int):
    """Plain left padding, no shared prefix, no early stop: every candidate's dev rows in
    one generate() call. Returns [(score row, generated tokens)] per candidate."""
    import torch

    tok, model = t._tok, t._model
    texts = [tok.apply_chat_template(_demo_turns(c, tmpl) + render(tmpl, d["question"]),
                                     tokenize=False, add_generation_prompt=True)
             for c in cands for d in dev]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    res = []
    for k, c in enumerate(cands):
        rows, n_tok = [], 0
        gens = out[k * len(dev):(k + 1) * len(dev), enc["input_ids"].shape[1]:]
        for d, gen in zip(dev, gens):
            stop = (gen == tok.eos_token_id) | (gen == tok.pad_token_id)
            n = int(stop.nonzero()[0]) if stop.any() else len(gen)
            n_tok += n
            text = cut_at_final_answer(tok.decode(gen[:n], skip_special_tokens=True))
            rows.append({"pid": d["pid"], "half": d["half"], "zero_correct": d["zero_correct"],
                         "correct": bool(judge(text, d["answer"])["correct"])})
        res.append((oneshot_score(c["cand_id"], rows), n_tok))
    return res


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="candidates")
    ap.add_argument("--db", default="/tmp/sei-bench-select/sei.duckdb")
    ap.add_argument("--n-good", type=int, default=10)
    ap.add_argument("--n-bad", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=SelectParams.batch_size,
                    help="dev rows per batch (ours and the batched naive)")
    a = ap.parse_args()
    db = Path(a.db)
    db.parent.mkdir(parents=True, exist_ok=True)
    s = build(db)
    cands = s.candidates(status="kept")[:a.n]
    dev = dev_set(s, 1, a.n_good, a.n_bad)
    p = SelectParams(n_good=a.n_good, n_bad=a.n_bad, max_new_tokens=a.max_new_tokens,
                     batch_size=a.batch_size)
    per = max(1, a.batch_size // len(dev))  # candidates per batch
    chunks = [cands[i:i + per] for i in range(0, len(cands), per)]
    t = LocalTarget().load()
    ours, prx = OneShot(t, p), Proxy(t, p)
    tmpl = ours.tmpl
    ours.score(cands[0], dev[:2])  # warm-up

    naive1, t_naive1 = timed(lambda: [naive_scores(t, tmpl, [c], dev, a.max_new_tokens)[0]
                                      for c in cands])
    naive, t_naive = timed(lambda: [x for ch in chunks
                                    for x in naive_scores(t, tmpl, ch, dev, a.max_new_tokens)])
    fast, t_ours = timed(lambda: [x for ch in chunks for x in ours.score_many(ch, dev)])
    proxy, t_proxy = timed(lambda: [prx.score(c, dev)[0] for c in cands])

    same = all(abs(n[0]["score"] - f[0]["score"]) < 1e-12 and
               abs(m[0]["score"] - f[0]["score"]) < 1e-12
               for n, m, f in zip(naive1, naive, fast))
    tok_naive = sum(n[1] for n in naive)
    tok_ours = sum(sum(r["completion_tokens"] or 0 for r in f[1]) for f in fast)
    rho = spearmanr([f[0]["score"] for f in fast], [x["score"] for x in proxy]).statistic
    k = len(cands)
    print(f"\n{k} candidates x {len(dev)} dev problems ({a.n_good} good + {a.n_bad} bad), "
          f"max_new_tokens={a.max_new_tokens}, {a.batch_size} rows per batch "
          f"({per} candidates), {os.cpu_count()} cores")
    print(f"{'path':52} {'s/candidate':>12} {'gen tokens':>11}")
    print(f"{'naive, one candidate per batch':52} {t_naive1 / k:12.2f} "
          f"{sum(n[1] for n in naive1):11d}")
    print(f"{'naive, same batch width as ours':52} {t_naive / k:12.2f} {tok_naive:11d}")
    print(f"{'ours (prefix KV reuse, early stop, candidates batched)':52} {t_ours / k:12.2f} "
          f"{tok_ours:11d}")
    print(f"{'proxy (forward passes only)':52} {t_proxy / k:12.2f} {'-':>11}")
    print(f"\nidentical one-shot scores, all three generation paths: {same}")
    print(f"ours vs naive at the same batch width: {t_naive / t_ours:.2f}x faster "
          f"(goal >= 2x); vs one candidate per batch: {t_naive1 / t_ours:.2f}x")
    print(f"proxy vs ours: {t_ours / t_proxy:.2f}x cheaper (goal >= 5x)")
    print(f"Spearman(proxy, one-shot) over {k} candidates: {rho:.3f}")
    print("scores:", [round(f[0]["score"], 3) for f in fast])

if __name__ == "__main__":
    main()
