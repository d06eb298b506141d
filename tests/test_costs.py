"""The one cost model's pricing of the paper's one-shot protocol (pipeline/costs.py)."""

from __future__ import annotations

import pytest

from pipeline import costs


def test_the_paper_protocol_is_three_million_generations():
    pp = costs.PAPER_ONESHOT
    assert pp["candidates"] * pp["dev_problems"] * pp["iterations"] == 3_000_000
    assert costs.oneshot_protocol_seconds(1.0) == 3_000_000
    assert costs.oneshot_protocol_seconds(0.5, candidates=10, dev_problems=4,
                                          iterations=1) == 20


def test_the_gpu_rate_per_generation_follows_the_stated_rate(monkeypatch):
    monkeypatch.setenv("SEI_GPU_GEN_TOKENS_PER_S", "1600")
    assert costs.gpu_s_per_generation(160) == pytest.approx(0.1)
    assert costs.gpu_s_per_generation() == pytest.approx(costs.COMPLETION_TOKENS / 1600)


def test_measured_oneshot_rates_are_positive_seconds():
    assert costs.ONESHOT_S_PER_GENERATION
    assert all(0 < s < 60 for s in costs.ONESHOT_S_PER_GENERATION.values())
