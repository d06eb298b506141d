"""Training (SEI step 6): LoRA on the selected data, read top to bottom like nanoGPT.

- from scratch: the base model on everything selected in iterations 1..i;
- iterative: the previous iteration's adapter, trained further on iteration i's data.
The chat template is applied to each (user: question, assistant: solution) pair and the
loss is taken on the assistant's tokens only. fp32 on a CPU (bf16 is ~400x slower on
this class of CPU and gradient checkpointing only costs time at this size); bf16
autocast on a GPU, through accelerate, which also runs it under `accelerate launch`.
On a CPU the LoRA layers run fused (pipeline/models/fastlora.py: the same function, fewer passes
over memory). Each batch's shared prefix (system prompt and instruction) runs once, and
the lm_head only where the loss is (`assistant_loss`): the same loss and gradients.

Every step's loss goes into the store (the app draws it live). Every `checkpoint_every`
steps the adapter, optimizer, scheduler, step and random states are saved atomically; a
cancel saves one more; a resumed run loads the last (tensors and plain data only, never
unpickled code) and continues where it stopped: the data order of each epoch is a
function of (seed, epoch), so the skipped steps are the same steps, and the random states
give the same dropout masks, so a killed and resumed run has the same losses and adapter
as one never stopped. While it trains the process holds the run's lock: a run left
'running' by a killed process reads 'interrupted'.
The result is a standard peft adapter directory (adapter_config.json,
adapter_model.safetensors) that PeftModel.from_pretrained and vLLM's --lora-modules load.

Several processes (`accelerate launch --num_processes N -m pipeline.shells.cli train ...`) train
data-parallel with the same global batch: only rank 0 opens the store (DuckDB admits one
writing process); it reads the selection, writes the training set to a file in the run's
directory for the other ranks, and alone writes the run, its losses and checkpoints. Each
rank takes batch_size/N rows of every global batch; each rank's loss is its share of the
global batch's mean (the sum over its tokens over the global token count, times N, since
DDP averages the ranks' gradients), so a step's update is a single process's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipeline.core import config
from pipeline.core.params import Params, param
from pipeline.core.progress import Progress, no_progress
from pipeline.storage.store import Store

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainParams(Params):
    iteration: int = param(1, "The iteration to train.", cli=False)
    mode: str = param("scratch", "scratch: the base model on iterations 1..i's data; "
                                 "iterative: the previous adapter on iteration i's.",
                      choices=("scratch", "iterative"))
    method: str = param("oneshot", "Train on this selection method's picks.",
                        choices=("oneshot", "proxy", "random", "all"))
    selection_ids: list[str] | None = param(None, "Explicit selections (overrides method).",
                                            cli=False)
    # The paper's code (7-8B models): r 8, alpha 16, dropout 0.1, q/k/v/o, lr 2e-5, 3 epochs
    # (the `paper` preset). A 135M model on tens of examples needs more capacity per example
    # and a larger step: r 16 on all linear layers (vLLM's default --max-lora-rank), lr 2e-4.
    r: int = param(16, "LoRA rank (the paper: 8).")
    alpha: int = param(32, "LoRA alpha (the paper: 16).")
    dropout: float = param(0.05, "LoRA dropout (the paper: 0.1).")
    target_modules: list[str] = param(help="Layers with LoRA (the paper: q,k,v,o_proj).",
                                      factory=lambda: list(ALL_LINEAR))
    lr: float = param(2e-4, "Learning rate (the paper: 2e-5).")
    schedule: str = param("cosine", "Learning-rate schedule after warmup (the paper: "
                                    "linear).", choices=("cosine", "linear"))
    epochs: int = param(3, "Epochs.")
    batch_size: int = param(8, "Examples per optimizer step (the paper: 1).")
    max_length: int = param(512, "Tokens per example, longer ones cut.")
    warmup: float = param(0.1, "Warmup, as a fraction of the steps (the paper: 0.03).")
    checkpoint_every: int = param(10, "Steps between checkpoints.")
    seed: int = param(0, "Seed of the data order and of dropout.")
    model: str | None = param(None, "Base model (default: the target model).")
    init_adapter: str | None = param(None, "iterative: the adapter training starts from "
                                     "(resolved: the previous iteration's).", cli=False)


def selections_for(store: Store, p: TrainParams) -> list[str]:
    """From scratch: the latest finished selection (of p.method) of each iteration 1..i;
    iterative: iteration i's only."""
    if p.selection_ids:
        return list(p.selection_ids)
    its = range(1, p.iteration + 1) if p.mode == "scratch" else [p.iteration]
    out = []
    for i in its:
        sels = [s for s in store.selections(i) if s["method"] == p.method
                and s["status"] == "finished"]
        if sels:
            out.append(sels[-1]["selection_id"])
    if not out:
        raise ValueError(f"no finished {p.method} selection for iteration {p.iteration}: "
                         f"run `sei select --method {p.method}` first")
    return out


def tokenize(tok, messages: list[dict], max_length: int) -> dict:
    """input ids and labels with the prompt masked (-100): loss on the assistant only."""
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not extend the prompt with the reply")
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids):]
    return {"input_ids": ids, "labels": labels}


@dataclass
class _Run:
    """What identifies a training run: its data, base model and starting adapter."""
    train_id: str
    sel_ids: list[str]
    examples: list[dict]
    path: str                        # the base model's directory
    model_id: str
    init: str | None                 # the adapter it starts from (iterative mode)
    data_hash: str


def _identify(store: Store, p: TrainParams) -> _Run:
    from pipeline.models.settings import target_model
    from pipeline.models.target import resolve_model_path, weights_hash
    from pipeline.stages.select import training_set

    sel_ids = selections_for(store, p)
    examples = training_set(store, sel_ids)
    if not examples:
        raise ValueError(f"selections {sel_ids} selected nothing")
    base = p.model or target_model()
    path, model_id = resolve_model_path(base)
    init = p.init_adapter if p.mode == "iterative" else None
    if p.mode == "iterative" and p.iteration > 1 and init is None:
        raise ValueError(f"iterative training of iteration {p.iteration} starts from "
                         f"iteration {p.iteration - 1}'s adapter (resolve.models)")
    data_hash = hashlib.sha256(json.dumps([e["messages"] for e in examples]).encode()).hexdigest()
    # init_adapter is in the key as `init`
    ident = json.dumps([{k: v for k, v in asdict(p).items()
                         if k not in ("checkpoint_every", "init_adapter")},
                        sel_ids, data_hash, weights_hash(path), init], sort_keys=True)
    train_id = f"train-{p.iteration}-{p.mode}-" + hashlib.sha256(ident.encode()).hexdigest()[:8]
    return _Run(train_id, sel_ids, examples, path, model_id, init, data_hash)


def _load_model(path, init: str | None, p: TrainParams):
    """The base model with a new LoRA adapter, or with `init` to train further."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline.core.heap import keep_freed_memory

    keep_freed_memory()  # activations reuse the heap instead of page-faulting it in anew
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if init:
        return PeftModel.from_pretrained(model, init, is_trainable=True)
    return get_peft_model(model, LoraConfig(
        r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout,
        target_modules=p.target_modules, bias="none", task_type="CAUSAL_LM"))


@dataclass
class _Fit:
    """The prepared model (its forward is the loss; DDP-wrapped with several processes),
    optimizer and scheduler, and where their checkpoint lives."""
    acc: object
    model: object
    opt: object
    sched: object
    out_dir: Path

    @property
    def ckpt(self) -> Path:
        return self.out_dir / "checkpoint"

    @property
    def lora(self):
        """The peft model itself: what is saved and loaded."""
        return self.acc.unwrap_model(self.model).lora

    def resume(self) -> int:
        """Load the last checkpoint, if any; the step to continue from. The checkpoint is
        loaded with weights_only=True: tensors and plain data only, nothing unpickled
        that could run code. The random states come back too, so the resumed steps draw
        the same dropout masks as an uninterrupted run's (the data order is a function of
        (seed, epoch)): the same losses, the same adapter."""
        if not (self.ckpt / "state.pt").exists():
            return 0
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = torch.load(self.ckpt / "state.pt", weights_only=True)
        set_peft_model_state_dict(self.lora, load_file(self.ckpt / "adapter_model.safetensors"))
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if "rng" in state:  # (a checkpoint from before the random states were kept has none)
            set_rng_state(state["rng"])
        return state["step"]

    def save_checkpoint(self, at: int) -> None:
        """On rank 0 only (the ranks' states are the same, but for dropout's draws)."""
        import torch

        if not self.acc.is_main_process:
            return
        tmp = self.out_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.lora.save_pretrained(tmp)
        torch.save({"opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "step": at,
                    "rng": rng_state()}, tmp / "state.pt")
        shutil.rmtree(self.ckpt, ignore_errors=True)
        tmp.rename(self.ckpt)  # the old checkpoint goes only once the new one is whole


def rng_state() -> dict:
    """Every random state a training step draws from, as tensors and plain lists (what
    torch.load(weights_only=True) accepts): torch's CPU generator (dropout masks on a
    CPU), each CUDA device's (on a GPU), Python's `random` and numpy's global one."""
    import random

    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back the random states that rng_state() took."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _steps(store: Store, p: TrainParams, train_id: str, fit: _Fit, rows: list[dict],
           pad_id: int, step: int, total: int, steps_per_epoch: int,
           progress: Progress) -> int:
    """Optimizer steps from `step` to `total`, each recorded; checkpoints every
    p.checkpoint_every and on a cancel. Each of the N processes takes its batch_size/N rows
    of every global batch. Returns the tokens seen (by all processes)."""
    import torch

    acc, model, opt, sched = fit.acc, fit.model, fit.opt, fit.sched
    n, per = acc.num_processes, p.batch_size // acc.num_processes
    tokens_seen = 0
    try:
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            batch = [rows[i] for i in epoch_batches(rows, p.batch_size, p.seed, epoch)[k]]
            mine = batch[acc.process_index * per:(acc.process_index + 1) * per]
            # (a last batch may leave a rank no rows: it runs one, weighted 0, as DDP needs)
            ids, labels, mask = _collate(mine or batch[:1], pad_id)
            counts = torch.tensor([float(mask.sum()), float((labels[:, 1:] != -100).sum())])
            n_tok, n_loss = acc.reduce(counts.to(acc.device) * bool(mine), "sum").tolist()
            ts = time.perf_counter()
            with acc.autocast():
                loss_sum = model(ids.to(acc.device), mask.to(acc.device), labels.to(acc.device))
            # this rank's part of the global batch's mean; DDP averages the ranks' gradients
            acc.backward(loss_sum * (bool(mine) * n / max(n_loss, 1)))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(n_tok)
            loss_v = float(acc.reduce(loss_sum.detach() * bool(mine), "sum")) / max(n_loss, 1)
            store.record_train_steps(train_id, [{
                "step": step, "epoch": step / steps_per_epoch, "loss": loss_v,
                "lr": sched.get_last_lr()[0], "tokens": int(n_tok),
                "seconds": time.perf_counter() - ts}], step)
            if step % p.checkpoint_every == 0 or step == total:
                fit.save_checkpoint(step)
            progress(step, total, "train", f"loss {loss_v:.3f}")
    except BaseException:
        if step and step % p.checkpoint_every:
            fit.save_checkpoint(step)  # a cancel keeps the work done so far
        store.finish_train_run(train_id, "interrupted", None, None)
        store.release_run(train_id)
        raise
    return tokens_seen


def _finished(prev: dict | None) -> dict | None:
    """The result of a run that already finished and whose adapter is still on disk."""
    if prev and prev["status"] == "finished" and \
            (Path(prev["adapter_dir"]) / "adapter_config.json").exists():
        return {"train_id": prev["train_id"], "adapter_dir": prev["adapter_dir"],
                "adapter_hash": prev["adapter_hash"], "resumed": True}
    return None


def _out_dir(store: Store, prev: dict | None, train_id: str) -> Path:
    """Where the run writes: where it started if the store knows it (a run resumed from
    another working directory keeps writing there), else a clean directory beside the
    store: one left by a store since deleted may hold a checkpoint from other code, and
    a finished one would be "resumed" into a run that trains nothing."""
    if prev:
        return Path(prev["adapter_dir"])
    out = config.adapters_dir(store.path) / train_id
    shutil.rmtree(out, ignore_errors=True)
    return out


def _prepare(acc, run: _Run, p: TrainParams, total: int, out_dir: Path) -> _Fit:
    """The model with its adapter (LoRA layers fused on a CPU), AdamW and the schedule."""
    import torch
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    from pipeline.models.fastlora import fuse_lora

    lora = _load_model(run.path, run.init, p)
    fuse_lora(lora)
    opt = torch.optim.AdamW([w for w in lora.parameters() if w.requires_grad], lr=p.lr,
                            weight_decay=0.0)
    schedule = (get_cosine_schedule_with_warmup if p.schedule == "cosine"
                else get_linear_schedule_with_warmup)
    sched = schedule(opt, int(p.warmup * total), total)
    model, opt = acc.prepare(_loss_model(lora), opt)
    return _Fit(acc, model, opt, sched, out_dir)


def _loss_model(lora):
    """`lora` as a module whose forward is the assistant loss summed over the batch's tokens:
    what accelerate wraps in DDP with several processes (DDP averages the ranks' gradients
    only in a backward through its own forward)."""
    import torch

    class AssistantLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lora = lora

        def forward(self, ids, mask, labels):
            return assistant_loss(self.lora, ids, mask, labels, reduction="sum")

    return AssistantLoss()


# -- several processes ---------------------------------------------------------------------

TRAIN_SET = "train_set.jsonl"  # in the run's directory: rank 0 writes it, the others read it


def launched_ranks() -> tuple[int, int]:
    """(this process's rank, how many processes), as `accelerate launch` and torchrun set
    them; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rows_per_rank(batch_size: int, world: int) -> int:
    """The rows of each global batch one of `world` processes takes; a batch that does not
    split evenly is refused (the global batch must stay a single process's)."""
    if batch_size % world:
        raise ValueError(
            f"--batch-size {batch_size} does not split over {world} processes: each takes "
            f"batch_size/{world} rows of every global batch, so that the global batch and "
            f"the update are one process's; use a multiple of {world}, e.g. "
            f"{world * max(1, round(batch_size / world))}")
    return batch_size // world


class _NotRank0:
    """The store as the ranks other than 0 see it: the writes of the training loop do
    nothing there (rank 0 makes them), anything else is an error. The store file itself
    is closed to the process (store.close_to_this_process): DuckDB admits one writer."""
    WRITES = {"record_train_steps", "finish_train_run", "release_run"}

    def __init__(self, rank: int, world: int):
        from pipeline.storage import store

        self.why = f"rank {rank} of {world} never opens the store (rank 0 does)"
        store.close_to_this_process(self.why)

    def __getattr__(self, name):
        if name in self.WRITES:
            return lambda *a, **kw: None
        raise RuntimeError(f"store.{name}: {self.why}")


def _open_run(store: Store, p: TrainParams, world: int) -> tuple[_Run, Path | None,
                                                                    dict | None]:
    """Rank 0: the run's data and identity from the store, and the result of a run that
    already finished (done). Otherwise the run is held (a run whose process was killed
    reads 'interrupted', not 'running', and two processes never train one run at once),
    recorded, and with several processes its training set written for the other ranks."""
    run = _identify(store, p)
    prev = store.train_run(run.train_id)
    done = _finished(prev)
    if done:
        return run, None, done
    store.hold_run(run.train_id)
    out_dir = _out_dir(store, prev, run.train_id)
    total = math.ceil(len(run.examples) / p.batch_size) * p.epochs
    store.upsert_train_run({"train_id": run.train_id, "iteration": p.iteration,
                            "mode": p.mode, "base_model": run.model_id,
                            "init_adapter": run.init, "selection_ids": run.sel_ids,
                            "data_hash": run.data_hash[:16], "n_examples": len(run.examples),
                            "params": asdict(p), "adapter_dir": str(out_dir),
                            "total_steps": total})
    store.link_run(p.iteration, f"train:{p.mode}:{p.method}", run.train_id)
    if world > 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / TRAIN_SET, "w") as f:
            f.writelines(json.dumps({"messages": e["messages"]}) + "\n" for e in run.examples)
    return run, out_dir, None


def _from_rank0(acc, p: TrainParams, run: _Run | None, out_dir: Path | None,
                done: dict | None) -> tuple:
    """Rank 0's parameters (the iteration it resolved), run, directory and decision, on
    every rank (torch.distributed); the training set itself the others read from the file
    rank 0 wrote, checked against the run's data hash. One process: as they are."""
    world = launched_ranks()[1]
    if acc.num_processes != world:
        raise RuntimeError(f"{world} processes were launched but accelerate runs "
                           f"{acc.num_processes}: launch with `accelerate launch` or torchrun")
    if world == 1:
        return p, run, out_dir, done
    from torch.distributed import broadcast_object_list

    box = [(p, run and replace(run, examples=[]), out_dir, done)]
    broadcast_object_list(box, src=0)
    if acc.is_main_process:
        return p, run, out_dir, done
    p, run, out_dir, done = box[0]
    if done:
        return p, run, out_dir, done
    with open(out_dir / TRAIN_SET) as f:
        run.examples = [json.loads(line) for line in f]
    got = hashlib.sha256(json.dumps([e["messages"] for e in run.examples]).encode())
    if got.hexdigest() != run.data_hash:
        raise RuntimeError(f"{out_dir / TRAIN_SET} is not the training set rank 0 read")
    return p, run, out_dir, done


def _say_rank(rank: int, world: int, p: TrainParams, store, out_dir: Path) -> None:
    """With several processes, one line on stderr per rank: its rows, and which one reads
    the store."""
    if world > 1:
        print(f"rank {rank} of {world}: {p.batch_size // world} of each {p.batch_size} rows; "
              + (f"store {store.path}" if rank == 0 else
                 f"training set from {out_dir / TRAIN_SET}; never opens the store"),
              file=sys.stderr, flush=True)


def train(store: Store | None, p: TrainParams, progress: Progress = no_progress) -> dict:
    """LoRA on the selected data of p.iteration (resumable from its last checkpoint).
    Under `accelerate launch` with N processes only rank 0 is given the store; the others
    are given None, never open it, and take their share of every global batch."""
    rank, world = launched_ranks()
    rows_per_rank(p.batch_size, world)  # refuses a batch that does not split evenly
    store = _NotRank0(rank, world) if rank else store  # the other ranks never open it
    # -- data and identity (rank 0); a finished run returns before anything heavy is loaded ---
    run, out_dir, done = _open_run(store, p, world) if rank == 0 else (None, None, None)
    if done and world == 1:
        progress(1, 1, "train", "already trained")
        return done

    import torch
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from pipeline.models.target import weights_hash

    acc = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no",
                      cpu=not torch.cuda.is_available())  # (several CPU processes: gloo)
    p, run, out_dir, done = _from_rank0(acc, p, run, out_dir, done)
    if done:  # (several processes: a run finished before; the process group goes)
        acc.end_training()
        return done
    torch.manual_seed(p.seed)
    tok = AutoTokenizer.from_pretrained(run.path)
    rows = [tokenize(tok, e["messages"], p.max_length) for e in run.examples]
    steps_per_epoch = math.ceil(len(rows) / p.batch_size)
    total = steps_per_epoch * p.epochs
    _say_rank(rank, world, p, store, out_dir)

    # -- model: base + a new or the previous adapter -------------------------------------------
    fit = _prepare(acc, run, p, total, out_dir)
    model = fit.model
    step = fit.resume()

    # -- the loop --------------------------------------------------------------------------------
    model.train()
    t0 = time.perf_counter()
    progress(step, total, "train", f"{len(rows)} examples, {total} steps"
             + (f", resumed at step {step}" if step else ""))
    tokens_seen = _steps(store, p, run.train_id, fit, rows, tok.pad_token_id or 0, step,
                         total, steps_per_epoch, progress)

    # -- the adapter (rank 0 writes it and the run) -----------------------------------------------
    if acc.is_main_process:
        fit.lora.save_pretrained(out_dir)
    acc.wait_for_everyone()
    secs = time.perf_counter() - t0
    timings = {"seconds": secs, "tokens": tokens_seen,
               "tokens_per_s": tokens_seen / secs if secs else None, "device": str(acc.device),
               "processes": world}
    h = weights_hash(out_dir)
    store.finish_train_run(run.train_id, "finished", h, timings)
    store.release_run(run.train_id)
    if world > 1:
        acc.end_training()  # (its process group goes)
    return {"train_id": run.train_id, "adapter_dir": str(out_dir), "adapter_hash": h,
            "n_examples": len(rows), "steps": total, **timings}


def epoch_batches(rows: list[dict], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches of row indices, a function of (seed, epoch) only, so a resumed
    run skips exactly the steps it already took. Rows are shuffled, then sorted by length
    within windows of 50 batches (as transformers' group_by_length does) and the batches
    shuffled again: a batch pads to its longest row, and random batches here padded
    ~20% of their tokens, all of it computed and thrown away."""
    import torch

    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(rows), generator=g).tolist()
    window = 50 * batch_size
    order = [i for w in range(0, len(order), window)
             for i in sorted(order[w:w + window], key=lambda i: -len(rows[i]["input_ids"]))]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def assistant_loss(model, ids, mask, labels, reduction: str = "mean"):
    """Mean (or with reduction="sum", summed) cross-entropy over the assistant's tokens,
    the same number and gradients as the model's own `labels=` loss, with less work:
    - the lm_head runs on the assistant positions only: the rest of the logits (prompt
      and padding, ~75% of positions in the demo data) would be computed, pushed through
      a 49k-way log-softmax and thrown away;
    - the batch's shared prefix (the system prompt and the instruction, ~46% of the demo
      data's tokens) runs once, not once per row: its keys and values go to every row
      through an expanded cache, and backward sums the rows' gradients into it. With
      LoRA dropout on, the rows' prefix copies share one mask (each row still sees its
      input dropped at rate p)."""
    import torch.nn.functional as F
    from transformers import DynamicCache

    lm = getattr(model, "module", model)
    lm = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    n = shared_prefix(ids, labels)
    cache = None
    if n:
        cache = DynamicCache(config=lm.config)
        lm.model(input_ids=ids[:1, :n], cache=cache, use_cache=True)
        for layer in cache.layers:
            layer.keys = layer.keys.expand(len(ids), -1, -1, -1)
            layer.values = layer.values.expand(len(ids), -1, -1, -1)
    hidden = lm.model(input_ids=ids[:, n:], attention_mask=mask, cache=cache,
                      use_cache=bool(n)).last_hidden_state      # positions n..L-1
    target = labels[:, n + 1:]
    keep = target != -100
    logits = lm.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep], reduction=reduction)


def shared_prefix(ids, labels) -> int:
    """How many leading positions all rows of the batch share (same tokens) and no loss
    needs the output of (a position's output predicts the next label); 0 for one row."""
    if len(ids) < 2:
        return 0
    same = int((ids == ids[:1]).all(0).long().cumprod(0).sum())
    has = labels != -100
    if not has.any():
        return 0
    first = int(has.long().argmax(1)[has.any(1)].min())   # the earliest labelled position
    return max(0, min(same, first - 1))


def _collate(batch: list[dict], pad: int):
    """Right-padded tensors: ids, labels (-100 on padding), attention mask."""
    import torch

    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        L = len(b["input_ids"])
        ids[i, :L] = torch.tensor(b["input_ids"])
        labels[i, :L] = torch.tensor(b["labels"])
        mask[i, :L] = 1
    return ids, labels, mask
