"""The training step's pieces on the real model: the assistant-only loss, the length-grouped
batches and the LoRA dropout (benchmarks/training.py measures what they buy)."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from pipeline.models.fastlora import fuse_lora
from pipeline.stages.train import TrainParams, _collate, epoch_batches, tokenize


def _model_path():
    from pipeline.core import config
    from pipeline.models.target import resolve_model_path

    return resolve_model_path(config.DEFAULT_MODEL)[0]


def _fresh_lora(dropout=TrainParams.dropout):
    """The embedded model with a new LoRA adapter, as train() builds it."""
    from pipeline.stages.train import _load_model

    return _load_model(_model_path(), None, TrainParams(dropout=dropout))


@pytest.fixture(scope="module")
def lora():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_path()), _fresh_lora()


@pytest.mark.slow
def test_assistant_loss_and_its_gradients_are_the_models_own(lora):
    """The lm_head runs on the assistant positions only and the shared prefix runs once,
    and nothing else changes: the loss and the LoRA gradients equal those of the model's
    own `labels=` loss."""
    import torch

    from pipeline.stages.train import assistant_loss, shared_prefix

    tok, model = lora
    convs = [[{"role": "user", "content": "What is 17 + 25?"},
              {"role": "assistant", "content": "17 + 25 = 42. The answer is 42."}],
             [{"role": "user", "content": "Tom has 3 boxes of 12 eggs. How many eggs?"},
              {"role": "assistant", "content": "3 * 12 = 36 eggs.\nThe answer is 36."}]]
    ids, labels, mask = _collate([tokenize(tok, c, 512) for c in convs], tok.pad_token_id)
    assert (labels != -100).sum() < mask.sum() / 2  # most positions carry no loss
    # the system prompt and the user turn's opening are shared: they run once
    assert shared_prefix(ids, labels) >= 10
    model.eval()  # no dropout: the two passes must see the same network
    with torch.no_grad():  # lora_B starts at zero, which would leave lora_A without gradient
        for n, w in model.named_parameters():
            if "lora_B" in n:
                w.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: w.grad.clone() for n, w in model.named_parameters() if w.requires_grad}

    theirs = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    g_theirs = grads(theirs)
    ours = assistant_loss(model, ids, mask, labels)
    g_ours = grads(ours)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)
    assert g_ours.keys() == g_theirs.keys() and len(g_ours) == 2 * 7 * 30
    worst = max(float((g_ours[n] - g_theirs[n]).abs().max()) for n in g_ours)
    scale = max(float(g.abs().max()) for g in g_theirs.values())
    assert all(float(g.abs().max()) > 0 for g in g_theirs.values())
    assert worst <= 1e-4 * scale


def test_shared_prefix_stops_at_the_first_difference_and_before_the_first_label():
    import torch

    from pipeline.stages.train import shared_prefix

    ids = torch.tensor([[5, 6, 7, 8, 9, 1], [5, 6, 7, 8, 2, 0]])
    none = torch.full_like(ids, -100)
    late = none.clone()
    late[:, 5] = 3
    assert shared_prefix(ids, late) == 4          # rows differ from position 4
    early = none.clone()
    early[1, 3] = 8                               # position 2's output predicts it
    assert shared_prefix(ids, early) == 2
    assert shared_prefix(ids[:1], late[:1]) == 0  # one row: nothing to share
    assert shared_prefix(ids, none) == 0          # no loss anywhere
    other = ids.clone()
    other[1, 0] = 4
    assert shared_prefix(other, late) == 0


def test_epoch_batches_cover_every_row_once_are_reproducible_and_pad_less():
    import random

    rng = random.Random(0)
    rows = [{"input_ids": [0] * rng.randint(60, 200)} for _ in range(203)]
    b = epoch_batches(rows, 8, seed=3, epoch=1)
    assert sorted(i for x in b for i in x) == list(range(203))
    assert b == epoch_batches(rows, 8, seed=3, epoch=1)  # what a resumed run relies on
    assert b != epoch_batches(rows, 8, seed=3, epoch=2)

    def padded(batches):
        return sum(len(x) * max(len(rows[i]["input_ids"]) for i in x) for x in batches)

    real = sum(len(r["input_ids"]) for r in rows)
    chunks = list(range(203))
    random.Random(3).shuffle(chunks)
    plain = [chunks[i:i + 8] for i in range(0, 203, 8)]
    assert padded(b) - real < (padded(plain) - real) / 4


def test_fast_dropout_replaces_every_lora_dropout_and_drops_at_the_rate_p():
    import torch

    model = _fresh_lora(0.1)
    assert fuse_lora(model) == 7 * model.config.num_hidden_layers
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    drop = next(m for m in model.modules() if type(m).__name__ == "FastDropout")
    x = torch.ones(1000, 1000)
    drop.train()
    torch.manual_seed(0)
    y = drop(x)
    dropped = int((y == 0).sum())
    assert binomtest(dropped, x.numel(), 0.1).pvalue > 1e-3
    kept = torch.unique(y).tolist()
    assert len(kept) == 2 and kept[0] == 0.0 and kept[1] == pytest.approx(1 / 0.9, rel=1e-4)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.01)  # the expectation is kept
    assert not torch.equal(drop(x), y)                       # a new mask each call
    drop.eval()
    assert drop(x) is x


def test_fused_lora_layer_is_peft_formula_with_the_same_mask_values_and_gradients():
    """With dropout on: the fused forward equals x W^T + s * (mask(x)/(1-p)) A^T B^T
    computed the plain way from the same random draws, and so do the gradients of x,
    A and B (the scales ride in addmm_'s alpha, the add is in place)."""
    import torch

    model = _fresh_lora(0.1)
    fuse_lora(model)
    model.train()
    mod = model.base_model.model.model.layers[3].mlp.up_proj
    a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
    with torch.no_grad():
        b.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    drop, s = mod.lora_dropout["default"], mod.scaling["default"]
    x = torch.randn(3, 7, a.shape[1], requires_grad=True)
    g = torch.randn(3, 7, b.shape[0])

    def run(f):
        for t in (x, a, b):
            t.grad = None
        torch.manual_seed(5)
        y = f()
        (y * g).sum().backward()
        return y.detach(), x.grad.clone(), a.grad.clone(), b.grad.clone()

    ours = run(lambda: mod(x))
    plain = run(lambda: x @ mod.base_layer.weight.t()
                + ((drop.keep(x) * drop.scale) @ a.t() @ b.t()) * s)
    for o, p in zip(ours, plain):
        assert torch.allclose(o, p, rtol=1e-4, atol=1e-5)
    torch.manual_seed(5)
    assert (drop.keep(x) == 0).any()  # the mask did drop something


def test_sibling_layers_share_one_mask_and_one_a_gemm_and_stay_exact():
    """q/k/v read the same tensor: one mask and one GEMM over the stacked A matrices serve
    all three. Each output (and the gradients of x and every A and B) equals the plain
    formula with that one mask; a sibling called on another tensor computes afresh."""
    import torch

    model = _fresh_lora(0.1)
    fuse_lora(model)
    model.train()
    attn = model.base_model.model.model.layers[5].self_attn
    mods = [attn.q_proj, attn.k_proj, attn.v_proj]
    with torch.no_grad():
        for i, m in enumerate(mods):
            m.lora_B["default"].weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(i))
    x = torch.randn(2, 9, mods[0].in_features, requires_grad=True)
    gs = [torch.randn(2, 9, m.out_features) for m in mods]
    params = [x] + [m.lora_A["default"].weight for m in mods] \
        + [m.lora_B["default"].weight for m in mods]

    def run(outputs):
        for t in params:
            t.grad = None
        torch.manual_seed(7)
        ys = outputs()
        sum((y * g).sum() for y, g in zip(ys, gs)).backward()
        return [y.detach() for y in ys] + [t.grad.clone() for t in params]

    drop = mods[0].lora_dropout["default"]

    def plain():
        kept = drop.keep(x) * drop.scale  # one draw, used by all three
        return [x @ m.base_layer.weight.t() + kept @ m.lora_A["default"].weight.t()
                @ m.lora_B["default"].weight.t() * m.scaling["default"] for m in mods]

    ours = run(lambda: [m(x) for m in mods])
    for o, p in zip(ours, run(plain)):
        assert torch.allclose(o, p, rtol=1e-4, atol=1e-5)
    # another tensor for k alone: not q's cached product
    x2 = torch.randn(2, 9, mods[0].in_features)
    mods[0](x)
    torch.manual_seed(8)
    got = mods[1](x2)
    torch.manual_seed(8)
    want = x2 @ mods[1].base_layer.weight.t() + (drop.keep(x2) * drop.scale) \
        @ mods[1].lora_A["default"].weight.t() @ mods[1].lora_B["default"].weight.t() \
        * mods[1].scaling["default"]
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fused_lora_model_loss_and_gradients_equal_peft_own_forward(lora):
    """The whole model, fused and not, on the same batch (dropout off, so both see the same
    network): same loss, same gradient for every LoRA weight."""
    import torch

    from pipeline.stages.train import assistant_loss

    tok, _ = lora
    model = _fresh_lora(0.1)
    model.eval()
    with torch.no_grad():
        for n, w in model.named_parameters():
            if "lora_B" in n:
                w.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    convs = [[{"role": "user", "content": "What is 6 * 7?"},
              {"role": "assistant", "content": "6 * 7 = 42. The answer is 42."}]]
    ids, labels, mask = _collate([tokenize(tok, c, 512) for c in convs], tok.pad_token_id)

    def loss_and_grads():
        model.zero_grad()
        loss = assistant_loss(model, ids, mask, labels)
        loss.backward()
        return float(loss), {n: w.grad.clone() for n, w in model.named_parameters()
                             if w.requires_grad}

    l0, g0 = loss_and_grads()
    assert fuse_lora(model) == 7 * model.config.num_hidden_layers
    l1, g1 = loss_and_grads()
    assert l1 == pytest.approx(l0, rel=1e-5)
    scale = max(float(g.abs().max()) for g in g0.values())
    assert max(float((g1[n] - g0[n]).abs().max()) for n in g0) <= 1e-4 * scale


def _random_selection(store, n=4):
    from pipeline.problems import demo
    from pipeline.stages.select import SelectParams, select

    store.create_iteration(1, "scratch", None, {"types": [], "edit_ids": [], "n_cases": 0},
                           None, {})
    store.upsert_synth_batch("t", 1, "offline", {}, {})
    store.add_candidates([{"slot": f"t/{i}", "batch_id": "t", "iteration": 1, "type_id": 0,
                           "question": p["question"], "solution": p["solution"],
                           "answer": p["answer"], "status": "kept", "synthesizer": "offline"}
                          for i, p in enumerate(demo.generate(n, seed=4))])
    select(store, SelectParams(method="random", top=n))


@pytest.mark.slow
def test_a_checkpoint_left_by_a_deleted_store_is_not_resumed(tmp_path, monkeypatch):
    """Same data, same parameters, same train id, but the store that made the old
    checkpoint is not the one training now: the run trains from the start instead of
    "resuming" a finished checkpoint into a run that trains nothing."""
    from pipeline.stages.train import train
    from pipeline.storage.store import Store

    monkeypatch.setenv("SEI_ADAPTERS_DIR", str(tmp_path / "adapters"))
    p = TrainParams(method="random", epochs=1, batch_size=4, max_length=160)
    first = Store(tmp_path / "old" / "sei.duckdb")
    _random_selection(first)
    r1 = train(first, p)
    assert (first.train_run(r1["train_id"])["status"], len(first.train_steps(r1["train_id"]))) \
        == ("finished", 1)
    assert (tmp_path / "adapters" / r1["train_id"] / "checkpoint" / "state.pt").exists()
    again = Store(tmp_path / "new" / "sei.duckdb")
    _random_selection(again)
    r2 = train(again, p)
    assert r2["train_id"] == r1["train_id"] and r2["steps"] == 1
    steps = again.train_steps(r2["train_id"])
    assert len(steps) == 1 and steps[0]["tokens"] > 0
