"""Batched generation and scoring on the real model: several one-shot prefixes in one batch,
rows leaving it early, the KV cache written into reserved room, and the proxy's
log-likelihoods, each checked against the plain computation it replaces."""

from __future__ import annotations

import pytest

from pipeline.models.target import GenParams, prompt_template, render
from pipeline.problems.demo import generate as demo_problems


def _oneshot_convs(n_demos=2, n_questions=2, seed=5):
    from pipeline.stages.select import _demo_turns

    tmpl = prompt_template()
    probs = demo_problems(n_demos + n_questions, seed=seed)
    demos = [{"question": p["question"], "solution": p["solution"]} for p in probs[:n_demos]]
    qs = probs[n_demos:]
    # interleaved, so that rows of one prefix are not neighbours in the batch
    return [_demo_turns(demos[k % n_demos], tmpl) + render(tmpl, qs[k // n_demos]["question"])
            for k in range(n_demos * n_questions)]


def oneshot_inputs(n_dev: int, seed: int = 9) -> tuple[list[dict], list[dict]]:
    """Two one-shot candidates and n_dev dev problems (alternately bad and good), all demo
    problems of one seed."""
    probs = demo_problems(2 + n_dev, seed=seed)
    cands = [{"cand_id": i, "question": p["question"], "solution": p["solution"]}
             for i, p in enumerate(probs[:2])]
    dev = [{"dataset": "demo", "split": "train", "pid": p["pid"], "question": p["question"],
            "answer": p["answer"], "half": "good" if k % 2 else "bad",
            "zero_correct": bool(k % 2)} for k, p in enumerate(probs[2:])]
    return cands, dev


def _plain(target, convs, max_new):
    import torch

    tok, model = target._tok, target._model
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
             for m in convs]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return [tok.decode(o, skip_special_tokens=True)
            for o in out[:, enc["input_ids"].shape[1]:]]


def test_several_prefixes_in_one_batch_give_the_plain_left_padding_tokens(target):
    from pipeline.models.target import _prefix_groups
    from pipeline.problems.answers import cut_at_final_answer

    convs = _oneshot_convs()
    assert _prefix_groups(convs) == [0, 1, 0, 1]
    plain = _plain(target, convs, 48)
    ours = [g.text for g in target.generate(convs, GenParams(max_new_tokens=48))]
    assert ours == plain
    # the early-stopping path: the same text up to the first complete final answer
    stopped = [g.text for g in target.generate(convs, GenParams(max_new_tokens=48,
                                                                stop_at_answer=True))]
    assert [cut_at_final_answer(t) for t in stopped] == [cut_at_final_answer(t) for t in plain]
    assert all(p.startswith(s) for s, p in zip(stopped, plain))
    assert sum(len(s) for s in stopped) < sum(len(p) for p in plain)  # some rows stopped


def test_oneshot_scores_are_the_same_batched_together_or_one_by_one(target):
    from pipeline.stages.select import OneShot, SelectParams

    cands, dev = oneshot_inputs(4)
    heard = []
    together = OneShot(target, SelectParams(max_new_tokens=48, batch_size=5)).score_many(
        cands, dev, on_rows=heard.append)  # 8 rows in batches of 5: rows span two batches
    alone = [OneShot(target, SelectParams(max_new_tokens=48, batch_size=4)).score(c, dev)
             for c in cands]
    assert [r for _, r in together] == [r for _, r in alone]
    assert [s for s, _ in together] == [s for s, _ in alone]
    # progress inside a batch: rows are heard as they finish, counted across batches
    assert heard == sorted(heard) and heard[-1] == 8
    assert any(0 < n < 5 for n in heard), heard  # before the first batch ended
    assert any(5 < n < 8 for n in heard), heard  # the second batch counts on from 5


def test_roomy_cache_layer_holds_what_concatenation_holds():
    import torch
    from transformers.cache_utils import DynamicLayer

    from pipeline.models.kvcache import RoomyLayer

    roomy, plain = RoomyLayer(room=3), DynamicLayer()
    g = torch.Generator().manual_seed(0)
    for m in (5, 1, 1, 1, 1, 4, 1):  # runs out of room twice
        k, v = torch.randn(4, 3, m, 8, generator=g), torch.randn(4, 3, m, 8, generator=g)
        a, b = roomy.update(k, v), plain.update(k, v)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    keep = torch.tensor([3, 1])
    roomy.batch_select_indices(keep)
    plain.batch_select_indices(keep)
    assert torch.equal(roomy.keys, plain.keys) and torch.equal(roomy.values, plain.values)
    assert roomy.get_seq_length() == plain.get_seq_length() == 14


def test_proxy_log_likelihoods_are_those_of_a_plain_forward_pass(target):
    import torch

    convs = _oneshot_convs(n_demos=1, n_questions=3)
    answers = ["3 + 4 = 7.\nThe answer is 7.", "We add: 12 + 30 = 42.\nThe answer is 42.",
               "The answer is 5."]
    ours = target.answer_logliks(convs, answers)
    tok, model = target._tok, target._model
    for conv, ans, got in zip(convs, answers, ours):
        prompt = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        start = len(tok(prompt, add_special_tokens=False)["input_ids"])
        ids = tok(prompt + ans, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
        want = sum(float(logp[a - 1, ids[a]]) for a in range(start, len(ids))) / (len(ids) - start)
        assert got == pytest.approx(want, abs=1e-4)
