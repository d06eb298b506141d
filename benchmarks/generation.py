"""Generation throughput, side by side in one run, on the same 64 demo problems:

1. one-at-a-time `generate` (batch size 1, the naive loop),
2. the project's batched path (LocalTarget, left padding, batch 32),
3. the llama.cpp server (bundled Q4_1 GGUF) with 8 parallel requests.

Prints completion tokens/s for each and the ratios. Goal: batched >= 5x one-at-a-time.
Usage: python benchmarks/generation.py [--n 64] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.demo import generate as demo_problems  # noqa: E402
from pipeline.serve import local_server  # noqa: E402
from pipeline.target import (GenParams, LocalTarget, OpenAITarget,  # noqa: E402
                             prompt_template, render)


def timed(fn):
    t0 = time.perf_counter()
    gens = fn()
    dt = time.perf_counter() - t0
    toks = sum(g.completion_tokens or 0 for g in gens)
    errs = sum(1 for g in gens if g.error)
    return toks, dt, errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=8)
    a = ap.parse_args()

    tmpl = prompt_template()
    msgs = [render(tmpl, p["question"]) for p in demo_problems(a.n, seed=1)]
    params = GenParams(max_new_tokens=a.max_new_tokens)
    t = LocalTarget().load()
    t.generate(msgs[:1], GenParams(max_new_tokens=4))  # warm-up

    rows = []
    one = timed(lambda: [t.generate([m], params)[0] for m in msgs])
    rows.append(("one-at-a-time (transformers, fp32)", *one))

    def batched():
        out = []
        for i in range(0, len(msgs), a.batch_size):
            out += t.generate(msgs[i:i + a.batch_size], params)
        return out
    rows.append((f"batched x{a.batch_size} (transformers, fp32)", *timed(batched)))

    with local_server(n_ctx=2048) as base:
        srv = OpenAITarget(model="smollm2-135m-instruct", base_url=base, parallel=a.parallel)
        srv.load()
        srv.generate(msgs[:1], GenParams(max_new_tokens=4))
        rows.append((f"llama.cpp server, {a.parallel} parallel (Q4_1)",
                     *timed(lambda: srv.generate(msgs, params))))

    print(f"\n{a.n} demo problems, max_new_tokens={a.max_new_tokens}, {os.cpu_count()} cores")
    print(f"{'path':44} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'errors':>6}")
    for name, toks, dt, errs in rows:
        print(f"{name:44} {toks:7d} {dt:8.1f} {toks / dt:7.1f} {errs:6d}")
    base_tps = rows[0][1] / rows[0][2]
    b_tps = rows[1][1] / rows[1][2]
    l_tps = rows[2][1] / rows[2][2]
    print(f"\nbatched / one-at-a-time: {b_tps / base_tps:.2f}x (goal >= 5x)")
    print(f"llama.cpp / batched:     {l_tps / b_tps:.2f}x")
    print(f"llama.cpp / one-at-a-time: {l_tps / base_tps:.2f}x")


if __name__ == "__main__":
    main()
