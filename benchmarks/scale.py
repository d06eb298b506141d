"""The paper's scale, priced from measurements: one-shot scoring throughput, side by side in
one run on the same prompts, through

a. the project's local batched path (LocalTarget: fp32 transformers, each candidate's
   demonstration prefilled once for its dev rows, rows stopped at their final answer),
b. llama.cpp's own `llama-server` (`-np 8 --cont-batching`, the bundled Q4_1 GGUF) at the
   client's best concurrency (OpenAITarget with `parallel` 8 and 16, the stop rule sent as
   stop sequences),
c. the same server one request at a time (parallel 1).

The prompts are one-shot selection prompts built by pipeline.stages.select.OneShot (a candidate as
the worked example, then a dev question) on demo problems, with the same max_new_tokens and
stop rule on every path; every output is judged with pipeline.problems.answers.judge on text cut at
its first final answer, and the verdicts are compared between paths (llama.cpp runs a 4-bit
quantization: compared, not expected equal). Then it prices the paper's protocol (10,000
candidates x 100 dev problems = 1M generations per iteration, 3 iterations) at each measured
rate and at the stated vLLM rate of pipeline/loop/costs.py (the one cost model).

Needs the llama-server binary: `make llama-server` builds it into .cache/llama-server/bin/
(or set SEI_LLAMA_SERVER to one you have).
Usage: python benchmarks/scale.py [--candidates 8] [--dev 16] [--parallel 8 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from selection import timed  # noqa: E402

from pipeline.loop import costs  # noqa: E402
from pipeline.models.serve import MODEL_ALIAS, free_port, running  # noqa: E402
from pipeline.models.target import GenParams, LocalTarget, OpenAITarget, bundled_gguf  # noqa: E402
from pipeline.problems.demo import generate as demo_problems  # noqa: E402
from pipeline.stages.select import OneShot, SelectParams  # noqa: E402

DEFAULT_BINARY = HERE.parent / ".cache" / "llama-server" / "bin" / "llama-server"


def server_binary() -> Path:
    """llama-server: $SEI_LLAMA_SERVER, else the one `make llama-server` builds."""
    path = Path(os.environ.get("SEI_LLAMA_SERVER") or DEFAULT_BINARY)
    if not os.access(path, os.X_OK):
        sys.exit(f"no llama-server binary at {path}. Build it with `make llama-server` "
                 "(~15 min on 2 cores: llama.cpp from llama-cpp-python's source distribution, "
                 "the Makefile's AVX2 flags, into .cache/llama-server/bin/), or point "
                 "SEI_LLAMA_SERVER at one you have.")
    return path


@contextmanager
def llama_server(binary: Path, slots: int, ctx_per_slot: int, log: Path):
    """llama-server on the bundled GGUF with `slots` slots and continuous batching; yields
    its base URL (…/v1). --jinja applies the GGUF's own chat template (with its default
    system prompt), as the transformers tokenizer does on the local path."""
    port = free_port()
    cmd = [str(binary), "-m", str(bundled_gguf()), "--alias", MODEL_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "-np", str(slots), "--cont-batching",
           "-c", str(ctx_per_slot * slots), "-t", str(os.cpu_count() or 2), "--jinja",
           "--no-webui"]
    with running(cmd, port, log) as base:
        yield base


def workload(n_cand: int, n_dev: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Candidates (demo problems with their reference solutions as the worked example)
    and dev problems (other demo problems, half marked good and half bad, as the one-shot
    score needs; no zero-shot run here, so none counts as fixed or broken)."""
    probs = demo_problems(n_cand + n_dev, seed=seed)
    cands = [{"cand_id": i, "question": p["question"], "solution": p["solution"]}
             for i, p in enumerate(probs[:n_cand])]
    dev = [dict(p, dataset="demo", split="train", half=("good", "bad")[k % 2],
                zero_correct=False) for k, p in enumerate(probs[n_cand:])]
    return cands, dev


def measure(name: str, scorer: OneShot, cands: list[dict], dev: list[dict],
            meter=None) -> dict:
    """One path: every candidate's dev rows through scorer.score_many, as `sei select`
    batches them (batch_size rows per call), judged; the rows in candidate-major order."""
    per = max(1, scorer.p.batch_size // len(dev))
    n0 = meter.n if meter is not None else 0
    out, dt = timed(lambda: [x for i in range(0, len(cands), per)
                             for x in scorer.score_many(cands[i:i + per], dev)])
    rows = [r for _, rs in out for r in rs]
    return {"name": name, "seconds": dt, "rows": rows,
            "tokens": sum(r["completion_tokens"] or 0 for r in rows),
            "errors": sum(1 for r in rows if r["completion_tokens"] is None),
            "requests": (meter.n - n0) if meter is not None else len(rows)}


def agree(a: list[dict], b: list[dict]) -> tuple[int, int]:
    """(same verdict, same output text) over rows in the same order."""
    return (sum(x["correct"] == y["correct"] for x, y in zip(a, b)),
            sum(x["output"] == y["output"] for x, y in zip(a, b)))


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.0f} h" if seconds < 3 * 86400 else f"{seconds / 86400:,.0f} d"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--dev", type=int, default=16, help="dev problems per candidate")
    ap.add_argument("--max-new-tokens", type=int, default=SelectParams.max_new_tokens)
    ap.add_argument("--batch-size", type=int, default=SelectParams.batch_size,
                    help="local path: dev rows per batch (sei select's default)")
    ap.add_argument("--slots", type=int, default=8, help="llama-server -np")
    ap.add_argument("--parallel", type=int, nargs="+", default=[8, 16],
                    help="client concurrencies tried against the server (the best is kept)")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    binary = server_binary()
    cands, dev = workload(a.candidates, a.dev, a.seed)
    n = len(cands) * len(dev)
    p = SelectParams(n_good=a.dev - a.dev // 2, n_bad=a.dev // 2,
                     max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
    log = Path(tempfile.gettempdir()) / "sei-scale-llama-server.log"
    t_start = time.perf_counter()

    local = LocalTarget().load()
    local.generate([[{"role": "user", "content": "1+1="}]], GenParams(max_new_tokens=4))
    rows = [measure(f"a. local batched, {min(n, a.batch_size)} rows/batch (fp32)",
                    OneShot(local, p), cands, dev)]
    del local

    with llama_server(binary, a.slots, 2048, log) as base:
        srv = {}
        for par in sorted(set(a.parallel)) + [1]:
            t = OpenAITarget(model=MODEL_ALIAS, base_url=base, parallel=par).load()
            OneShot(t, p).score_many(cands[:1], dev[:2])  # warm-up: connections, cache
            label = (f"b. llama-server -np {a.slots} cont. batching, {par} in flight (Q4_1)"
                     if par > 1 else "c. llama-server, one request at a time (Q4_1)")
            srv[par] = measure(label, OneShot(t, p), cands, dev, t._meter)
    best = max((r for k, r in srv.items() if k > 1), key=lambda r: n / r["seconds"])
    rows += [r for k, r in sorted(srv.items(), reverse=True)]
    ref = rows[0]["rows"]

    print(f"\none-shot scoring: {len(cands)} candidates x {len(dev)} dev demo problems = {n} "
          f"generations per path, max_new_tokens={a.max_new_tokens}, stop at the final answer;"
          f" {os.cpu_count()} cores; {time.perf_counter() - t_start:.0f} s in all")
    print(f"{'path':62} {'gen/s':>6} {'tok/s':>6} {'tok/gen':>7} {'s/gen':>6} {'req':>4} "
          f"{'err':>3} {'acc':>5} {'verdict=a':>9} {'text=a':>7}")
    for r in rows:
        same_v, same_t = agree(r["rows"], ref)
        acc = sum(x["correct"] for x in r["rows"]) / n
        print(f"{r['name']:62} {n / r['seconds']:6.2f} {r['tokens'] / r['seconds']:6.0f} "
              f"{r['tokens'] / n:7.1f} {r['seconds'] / n:6.3f} {r['requests']:4d} "
              f"{r['errors']:3d} {acc:5.2f} {same_v:5d}/{n:<3d} {same_t:3d}/{n:<3d}")
    one = srv[1]
    sv, _ = agree(best["rows"], one["rows"])
    print(f"\nbest concurrency vs one at a time on the server: "
          f"{one['seconds'] / best['seconds']:.2f}x; verdicts equal on {sv}/{n}")
    print(f"local batched vs the server at its best: {best['seconds'] / rows[0]['seconds']:.2f}x"
          " (>1: local faster per generation)")
    print("(req: HTTP requests; a row stopped at a newline before a complete final answer is "
          "asked again without the stop sequence, so req - gens rows were asked twice)")

    # the paper's protocol, one-shot selection only, at each rate (pipeline/loop/costs.py)
    pp = costs.PAPER_ONESHOT
    per_it = pp["candidates"] * pp["dev_problems"]
    g = costs.gpu_rates()
    scale_7b = g["model_params"] / costs.REFERENCE_PARAMS
    print(f"\nthe paper's one-shot selection: {pp['candidates']:,} candidates x "
          f"{pp['dev_problems']} dev problems = {per_it:,} generations per iteration, "
          f"{pp['iterations']} iterations (LoRA training, extraction and evaluation are "
          "separate and not counted)")
    print(f"{'rate':62} {'s/gen':>8} {'per iteration':>14} {'3 iterations':>13} "
          f"{'7-8B here':>10}")
    measured = {}
    for r in rows:
        s = r["seconds"] / n
        measured[r["name"]] = s
        total = costs.oneshot_protocol_seconds(s)
        print(f"{r['name'][:62]:62} {s:8.3f} {hours(total / pp['iterations']):>14} "
              f"{hours(total):>13} {hours(total * scale_7b):>10}")
    s_gpu = costs.gpu_s_per_generation()
    total = costs.oneshot_protocol_seconds(s_gpu)
    print(f"{'vLLM, 7-8B, one 80 GB GPU (stated, not measured)':62} {s_gpu:8.3f} "
          f"{hours(total / pp['iterations']):>14} {hours(total):>13} {'':>10}")
    print(f"\n7-8B here: the 135M rates scaled by parameter count ({scale_7b:.0f}x, "
          "costs.py's rule), a lower bound on CPU time for such a model. vLLM: "
          f"{g['gen_tokens_per_s']:.0f} generated tokens/s (SEI_GPU_GEN_TOKENS_PER_S) x "
          f"{costs.COMPLETION_TOKENS} tokens per generation (costs.COMPLETION_TOKENS): an "
          "assumption from published figures (Lambda's vLLM benchmark, vLLM 0.5.4, "
          "Mistral-7B-Instruct-v0.3: 1,591 output tok/s on one A100-80GB, 3,281 on one "
          "H100-80GB), not measured here.")
    print("\nfor pipeline/loop/costs.py (ONESHOT_S_PER_GENERATION):")
    for k, v in measured.items():
        print(f"    {k!r}: {v:.4f},")
    print(f"server log: {log}")


if __name__ == "__main__":
    main()
