"""Training on several processes (issue 25, item 5): two real processes on the CPU (gloo)
launched by `accelerate launch`, on a real store with a real selection, train the same
adapter with the same losses as one process on the same data order and global batch; rank
0 alone opens the store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_store_edges import _random_selection, copy_store, one_line_error, sei

from pipeline.core import config
from pipeline.core.config import ROOT
from pipeline.stages.train import TrainParams, rows_per_rank, train
from pipeline.storage import store as store_module
from pipeline.storage.store import Store, StoreUnusable

# 5 examples, a global batch of 4: each epoch one batch of 4 (2 rows a rank) and one of 1
# (rank 1 has none and runs a row weighted 0); 2 epochs, 4 steps. No dropout: deterministic.
TRAIN = ["train", "--iteration", "1", "--method", "random", "--epochs", "2",
         "--batch-size", "4", "--max-length", "128", "--dropout", "0", "--seed", "3",
         "--lr", "1e-3", "--warmup", "0"]


@pytest.fixture(scope="module")
def selected_db(tmp_path_factory) -> Path:
    """A store made by `sei data demo` with a finished random selection of 5 candidates."""
    db = tmp_path_factory.mktemp("dist") / "sei.duckdb"
    r = sei("data", "demo", "--n", 12, "--n-test", 6, db=db)
    assert r.returncode == 0, r.stderr
    _random_selection(Store(db), n=5)
    return db


def _env(db: Path) -> dict:
    env = dict(os.environ, SEI_DB=str(db), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), SEI_MODELS_DIR=str(config.models_dir()))
    for var in ("SEI_ADAPTERS_DIR", "SEI_DATA_DIR", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    return env


def _adapter(run: dict) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(run["adapter_dir"]) / "adapter_model.safetensors")


@pytest.mark.slow
def test_two_processes_train_the_adapter_one_process_trains(selected_db, tmp_path):
    import torch

    one, two = copy_store(selected_db, tmp_path / "one"), copy_store(selected_db, tmp_path / "two")
    r1 = subprocess.run([sys.executable, "-m", "pipeline.shells.cli", *TRAIN], env=_env(one),
                        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    r2 = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2",
                         "--num_machines", "1", "--mixed_precision", "no",
                         "--dynamo_backend", "no", "-m", "pipeline.shells.cli", *TRAIN],
                        env=_env(two), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0, r2.stderr[-3000:]

    (run1,), (run2,) = Store(one).train_runs(), Store(two).train_runs()  # one run row each
    assert run1["status"] == run2["status"] == "finished"
    assert run2["timings"]["processes"] == 2 and run1["timings"]["processes"] == 1
    assert run2["train_id"] == run1["train_id"] and run2["adapter_dir"].startswith(str(two.parent))
    # the same losses, step by step: the global batch's mean, reduced over the ranks
    s1, s2 = Store(one).train_steps(run1["train_id"]), Store(two).train_steps(run2["train_id"])
    assert [s["step"] for s in s1] == [s["step"] for s in s2] == [1, 2, 3, 4]
    assert [s["loss"] for s in s2] == pytest.approx([s["loss"] for s in s1], rel=1e-5)
    assert [s["tokens"] for s in s2] == [s["tokens"] for s in s1]
    # the same adapter within float rounding, and one that moved from its start. AdamW
    # divides each gradient element by its own running size, so an element whose gradient
    # is near 0 moves by about lr whatever its rounding: the two runs' gradients differ in
    # the last bits (other padding, GEMM shapes, the order of the sum over ranks), and a
    # handful of elements (122 of 4.9M when written) then differ by up to lr a step.
    a1, a2 = _adapter(run1), _adapter(run2)
    assert a1.keys() == a2.keys() and len(a1) == 2 * 7 * 30
    diff = torch.cat([(a2[k] - a1[k]).abs().flatten() for k in a1])
    assert int((diff > 1e-5).sum()) <= 1e-4 * diff.numel()   # all but 0.01% within 1e-5
    assert float(diff.mean()) < 1e-7 and float(diff.max()) <= 4 * 1e-3  # 4 steps of lr
    assert max(float(w.abs().max()) for k, w in a1.items() if "lora_B" in k) > 1e-3
    # rank 0 read the store and wrote the training set; rank 1 read the file and never
    # opened the store (a try would have raised: the store is closed to its process)
    assert f"rank 0 of 2: 2 of each 4 rows; store {two}" in r2.stderr
    assert "rank 1 of 2: 2 of each 4 rows; training set from " \
        f"{run2['adapter_dir']}/train_set.jsonl; never opens the store" in r2.stderr
    assert (Path(run2["adapter_dir"]) / "train_set.jsonl").read_text().count("\n") == 5


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, monkeypatch):
    assert rows_per_rank(8, 2) == 4 and rows_per_rank(3, 1) == 3
    with pytest.raises(ValueError, match=r"--batch-size 3 does not split over 2 processes.*"
                                         r"use a multiple of 2, e.g. 4"):
        rows_per_rank(3, 2)
    # train() refuses before it reads the store or loads anything
    db = tmp_path / "sei.duckdb"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="does not split over 2 processes"):
        train(Store(db, create=False), TrainParams(batch_size=3))
    assert not db.exists()
    # so does each rank of `sei train` under a launcher, in one line
    for rank in ("0", "1"):
        line = one_line_error(sei("train", "--batch-size", 6, db=db,
                                  env={"RANK": rank, "WORLD_SIZE": "4"}))
        assert "--batch-size 6 does not split over 4 processes" in line, line
    assert not db.exists()


def test_a_store_closed_to_the_process_is_never_opened(tmp_path, monkeypatch):
    db = tmp_path / "s" / "sei.duckdb"
    Store(db).migrate()
    monkeypatch.setattr(store_module, "_closed", None)
    store_module.close_to_this_process("rank 1 of 2 never opens the store (rank 0 does)")
    with pytest.raises(StoreUnusable, match="closed to this process: rank 1 of 2"):
        Store(db).train_runs()
    monkeypatch.setattr(store_module, "_closed", None)
    assert Store(db).train_runs() == []
    shutil.rmtree(tmp_path / "s")
