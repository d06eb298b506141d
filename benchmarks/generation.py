"""Generation throughput, side by side in one run, on the same 64 demo problems:

1. one-at-a-time `generate` (batch size 1, the naive loop),
2. plain HF left padding (`model.generate` on a left-padded batch of 32, no prefix reuse),
3. the project's batched path (LocalTarget: left padding, shared prompt prefix run once),
4. the llama.cpp server (bundled Q4_1 GGUF) with 8 parallel requests.

Prints completion tokens/s for each, the ratios, and how many outputs of each path are
identical to the one-at-a-time outputs (greedy decoding: the fp32 paths should agree on
every problem; llama.cpp runs a 4-bit quantization, so it is compared, not expected equal).
Goal: batched >= 5x one-at-a-time.
Usage: python benchmarks/generation.py [--n 64] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.models.serve import local_server  # noqa: E402
from pipeline.models.target import GenParams, LocalTarget, OpenAITarget, prompt_template, render  # noqa: E402
from pipeline.problems.demo import generate as demo_problems  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    gens = fn()
    dt = time.perf_counter() - t0
    toks = sum(g.completion_tokens or 0 for g in gens)
    errs = sum(1 for g in gens if g.error)
    return toks, dt, errs, [g.text for g in gens]


class _Plain:
    """Result of one plain left-padded generation, shaped like a Generation."""

    def __init__(self, text: str, n: int):
        self.text, self.completion_tokens, self.error = text, n, None


def plain_left_padding(t: LocalTarget, msgs: list, params: GenParams, bs: int) -> list:
    """transformers' own batched greedy decoding on a left-padded batch: no prefix reuse."""
    import torch

    tok, model = t._tok, t._model
    out = []
    for i in range(0, len(msgs), bs):
        texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                 for m in msgs[i:i + bs]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=params.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        new = ids[:, enc["input_ids"].shape[1]:]
        for row in new:
            n = int((row != tok.pad_token_id).sum())
            out.append(_Plain(tok.decode(row, skip_special_tokens=True), n))
    return out


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

    rows.append((f"plain left padding x{a.batch_size} (fp32)",
                 *timed(lambda: plain_left_padding(t, msgs, params, a.batch_size))))

    def batched():
        out = []
        for i in range(0, len(msgs), a.batch_size):
            out += t.generate(msgs[i:i + a.batch_size], params)
        return out
    rows.append((f"batched x{a.batch_size}, shared prefix (fp32)", *timed(batched)))

    with local_server(n_ctx=2048) as base:
        srv = OpenAITarget(model="smollm2-135m-instruct", base_url=base, parallel=a.parallel)
        srv.load()
        srv.generate(msgs[:1], GenParams(max_new_tokens=4))
        rows.append((f"llama.cpp server, {a.parallel} parallel (Q4_1)",
                     *timed(lambda: srv.generate(msgs, params))))

    print(f"\n{a.n} demo problems, max_new_tokens={a.max_new_tokens}, {os.cpu_count()} cores")
    ref = rows[0][4]
    print(f"{'path':44} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'errors':>6} "
          f"{'same text':>10}")
    for name, toks, dt, errs, texts in rows:
        same = sum(x == y for x, y in zip(texts, ref))
        print(f"{name:44} {toks:7d} {dt:8.1f} {toks / dt:7.1f} {errs:6d} "
              f"{same:4d}/{len(ref):<5d}")
    tps = [r[1] / r[2] for r in rows]
    print(f"\nbatched / one-at-a-time:            {tps[2] / tps[0]:.2f}x (goal >= 5x)")
    print(f"batched / plain left padding:       {tps[2] / tps[1]:.2f}x")
    print(f"plain left padding / one-at-a-time: {tps[1] / tps[0]:.2f}x")
    print(f"llama.cpp / batched:                {tps[3] / tps[2]:.2f}x")


if __name__ == "__main__":
    main()
