"""The batched sampler (BatchSampler, used by BatchedBackend.sample) against the per-row reference ReplySampler."""
from __future__ import annotations

import copy

import pytest
import torch

from bot.engine.sampling import BatchSampler, ReplySampler, SamplingParams

V = 300


def _observed(params, seed, n=25):
    s = ReplySampler(params, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    for t in torch.randint(0, V, (n,), generator=g).tolist():
        s.observe(t, " " if t % 7 == 0 else "x")
    return s


def test_greedy_rows_equal_reference_with_penalties_and_bans():
    logits = torch.randn(8, V, generator=torch.Generator().manual_seed(0)) * 3
    samplers = [_observed(SamplingParams(temperature=0.0, presence_penalty=0.7, frequency_penalty=0.4), i)
                for i in range(8)]
    banned = [{0, int(torch.argmax(logits[i]))} if i % 2 else {0} for i in range(8)]
    ref = [s.sample(logits[i], banned[i], "") for i, s in enumerate(samplers)]
    assert BatchSampler(torch.device("cpu"), seed=1).sample(logits, samplers, banned, [""] * 8) == ref


@pytest.mark.parametrize("mirostat_tau", [0.0, 5.0])
def test_top_k_one_is_greedy_and_mirostat_updates_equal(mirostat_tau):
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(1)) * 2
    params = SamplingParams(temperature=1.5, top_k=1, mirostat_tau=mirostat_tau, presence_penalty=0.3)
    ref_samplers = [_observed(params, 10 + i) for i in range(6)]
    our_samplers = copy.deepcopy(ref_samplers)
    banned = [{0} for _ in range(6)]
    sampler = BatchSampler(torch.device("cpu"), seed=2)
    for step in range(5):  # several steps, so mu and lr evolve
        row_logits = logits + step * 0.1
        ref = [s.sample(row_logits[i], banned[i], "") for i, s in enumerate(ref_samplers)]
        greedy = [int(torch.argmax(s.adjust(row_logits[i], banned[i]))) for i, s in enumerate(our_samplers)]
        ours = sampler.sample(row_logits, our_samplers, banned, [""] * 6)
        assert ours == ref == greedy
        for a, b in zip(ref_samplers, our_samplers):
            assert a.mu == pytest.approx(b.mu, abs=1e-9) and a.lr == pytest.approx(b.lr, abs=1e-12)
            a.observe(ref[0], "x")
            b.observe(ref[0], "x")


@pytest.mark.parametrize("params,text", [
    (SamplingParams(temperature=1.0, top_p=0.8, mirostat_tau=0.0, presence_penalty=0.0), ""),
    (SamplingParams(temperature=0.7, top_p=0.9, top_k=12, min_p=0.05, mirostat_tau=0.0), ""),
    (SamplingParams(temperature=2.0, mirostat_tau=3.0, presence_penalty=0.0), ""),
    (SamplingParams(temperature=1.0, mirostat_tau=0.0), "he smiled（"),
])
def test_distribution_matches_reference(params, text):
    logits = torch.randn(V, generator=torch.Generator().manual_seed(3)) * 1.5
    draws = 3000
    ref_sampler = ReplySampler(params, torch.Generator().manual_seed(4))
    ref_counts = torch.zeros(V)
    for _ in range(draws):
        ref_sampler.mu = 2 * params.mirostat_tau  # sample from the starting state every time
        ref_counts[ref_sampler.sample(logits, {0}, text)] += 1
    rows = 500
    batch = BatchSampler(torch.device("cpu"), seed=5)
    ours = torch.zeros(V)
    for _ in range(draws // rows):
        samplers = [ReplySampler(params) for _ in range(rows)]
        for t in batch.sample(logits.expand(rows, V), samplers, [{0}] * rows, [text] * rows):
            ours[t] += 1
    tv = 0.5 * float((ref_counts / draws - ours / draws).abs().sum())
    assert tv < 0.08, tv
