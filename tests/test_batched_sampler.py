"""The device sampler (DeviceSampler: every row of a step at once, state kept per slot) against the per-row
reference ReplySampler, and against straightforward reference formulas on random logits (CPU)."""
from __future__ import annotations

import copy
import random

import pytest
import torch

from bot.engine.detokenizer import ReplyText
from bot.engine.sampling import (MIN_P, NUCLEUS, TOP_K, DeviceSampler, ReplySampler, SamplingParams, TokenTable,
                                 sampler_mode)

V = 300
SPECIAL = {0: b"", 1: b"\n", 2: b"\n\n", 3: b"ok\n\n", 4: b"\n\nUser", 5: "（".encode(), 6: b" ", 7: b"42",
           8: b"\n\n\n", 9: b"a\n", 10: "（".encode()[:2], 11: "（".encode()[2:]}


class FakeTokenizer:
    """Token bytes with the cases that matter: turn ends inside, at the end of and across tokens, a split
    character, uncounted tokens (spaces, digits)."""

    def token_bytes(self, t: int) -> bytes:
        return SPECIAL.get(t, f"w{t}".encode())

    def encode_bytes(self, data: bytes) -> list[int]:
        return [2] if data == b"\n\n" else [1] * data.count(b"\n")


def device_sampler(rows: int) -> DeviceSampler:
    return DeviceSampler(rows, V, "cpu", TokenTable(FakeTokenizer(), V, "cpu"))


def text_of(token: int) -> str:
    return FakeTokenizer().token_bytes(token).decode("utf-8", "replace")


def _observed(params, seed, n=25):
    s = ReplySampler(params, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    for t in torch.randint(0, V, (n,), generator=g).tolist():
        s.observe(t, text_of(t))
    return s


def _begin_like(dev: DeviceSampler, samplers: list[ReplySampler], bans=None, seeds=None):
    """Slots 0..n-1 start replies with the samplers' parameters and have counted the same tokens."""
    n = len(samplers)
    dev.begin(list(range(n)), [s.params for s in samplers], seeds or list(range(n)), bans or [-1] * n)
    for i, s in enumerate(samplers):
        for token in s._history:
            dev.observe([i], [token], reply_bytes=False)


def _with_history(params, seed, n=25):
    s = _observed(params, seed, n)
    g = torch.Generator().manual_seed(seed + 1)
    s._history = torch.randint(0, V, (n,), generator=g).tolist()
    return s


def test_greedy_rows_equal_reference_with_penalties_and_bans():
    logits = torch.randn(8, V, generator=torch.Generator().manual_seed(0)) * 3
    samplers = [_with_history(SamplingParams(temperature=0.0, presence_penalty=0.7, frequency_penalty=0.4), i)
                for i in range(8)]
    extra = [int(torch.argmax(logits[i])) if i % 2 else -1 for i in range(8)]
    banned = [{0, extra[i]} if i % 2 else {0} for i in range(8)]
    ref = [s.sample(logits[i], banned[i], "") for i, s in enumerate(samplers)]
    dev = device_sampler(8)
    _begin_like(dev, samplers, bans=extra)
    slots = torch.arange(8)
    assert dev.sample(logits, slots, torch.ones(8, dtype=torch.bool)).tolist() == ref


def test_penalties_with_decay_equal_the_reference_exactly():
    params = SamplingParams(presence_penalty=0.3, frequency_penalty=0.7, penalty_decay=0.9)
    samplers = [_with_history(params, 40 + i, n=200) for i in range(4)]
    dev = device_sampler(4)
    _begin_like(dev, samplers)
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(9))
    adjusted, _, _ = dev.weights(logits, torch.arange(4))
    for i, s in enumerate(samplers):
        assert torch.equal(adjusted[i], s.adjust(logits[i], {0}))


@pytest.mark.parametrize("mirostat_tau", [0.0, 5.0])
def test_top_k_one_is_greedy_and_mirostat_updates_equal(mirostat_tau):
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(1)) * 2
    params = SamplingParams(temperature=1.5, top_k=1, mirostat_tau=mirostat_tau, presence_penalty=0.3)
    ref_samplers = [_with_history(params, 10 + i) for i in range(6)]
    dev = device_sampler(6)
    _begin_like(dev, ref_samplers)
    slots, active = torch.arange(6), torch.ones(6, dtype=torch.bool)
    mode = sampler_mode([params])
    for step in range(5):  # several steps, so mu, lr and the counts evolve
        row_logits = logits + step * 0.1
        ref = [s.sample(row_logits[i], {0}, "") for i, s in enumerate(ref_samplers)]
        greedy = [int(torch.argmax(s.adjust(row_logits[i], {0}))) for i, s in enumerate(ref_samplers)]
        ours = dev.sample(row_logits, slots, active, mode).tolist()
        assert ours == ref == greedy
        for i, s in enumerate(ref_samplers):
            assert s.mu == pytest.approx(float(dev.mu[i]), abs=1e-9)
            assert s.lr == pytest.approx(float(dev.lr[i]), abs=1e-12)
            s.observe(ref[i], text_of(ref[i]))


@pytest.mark.parametrize("params,history", [
    (SamplingParams(temperature=1.0, top_p=0.8, mirostat_tau=0.0, presence_penalty=0.0), []),
    (SamplingParams(temperature=0.7, top_p=0.9, top_k=12, min_p=0.05, mirostat_tau=0.0), []),
    (SamplingParams(temperature=2.0, mirostat_tau=3.0, presence_penalty=0.0), []),
    (SamplingParams(temperature=1.0, mirostat_tau=0.0), [20, 21, 5]),  # the reply ends with "（"
    (SamplingParams(temperature=1.0, mirostat_tau=0.0), [20, 10, 11]),  # ... split over two tokens
])
def test_distribution_matches_reference(params, history):
    logits = torch.randn(V, generator=torch.Generator().manual_seed(3)) * 1.5
    text = b"".join(FakeTokenizer().token_bytes(t) for t in history).decode("utf-8", "replace")
    draws = 3000
    ref_sampler = ReplySampler(params, torch.Generator().manual_seed(4))
    for t in history:
        ref_sampler.observe(t, text_of(t))
    ref_counts = torch.zeros(V)
    for _ in range(draws):
        ref_sampler.mu = 2 * params.mirostat_tau  # sample from the starting state every time
        ref_counts[ref_sampler.sample(logits, {0}, text)] += 1
    rows = 500
    dev = device_sampler(rows)
    ours = torch.zeros(V)
    slots, active = torch.arange(rows), torch.ones(rows, dtype=torch.bool)
    for rep in range(draws // rows):
        dev.begin(list(range(rows)), [params] * rows, [rep * rows + i for i in range(rows)], [-1] * rows)
        for t in history:
            dev.observe(list(range(rows)), [t] * rows)
        for t in dev.sample(logits.expand(rows, V), slots, active, sampler_mode([params])).tolist():
            ours[t] += 1
    tv = 0.5 * float((ref_counts / draws - ours / draws).abs().sum())
    assert tv < 0.08, tv


def _reference_weights(row: torch.Tensor, p: SamplingParams, mu: float) -> torch.Tensor:
    """The PIPELINE / original web UI's stages written out over the sorted distribution, back in vocab order."""
    probs = torch.softmax(row, dim=-1)
    sorted_p, order = torch.sort(probs, descending=True)
    if p.mirostat_tau > 0:
        keep = max(1, int((-torch.log2(sorted_p) <= mu).sum()))
        kept = torch.zeros_like(sorted_p)
        kept[:keep] = sorted_p[:keep]
    else:
        cut = int(torch.searchsorted(torch.cumsum(sorted_p, -1), torch.tensor([p.top_p])).clamp(max=len(row) - 1))
        kept = torch.where(sorted_p >= sorted_p[cut], sorted_p, torch.zeros_like(sorted_p))
    if p.min_p > 0:
        kept = torch.where(kept >= sorted_p[0] * p.min_p, kept, torch.zeros_like(kept))
    if p.top_k > 0:
        kept[p.top_k:] = 0
    kept = kept ** (1.0 / p.temperature)
    out = torch.zeros_like(kept)
    out[order] = kept / kept.sum()
    return out


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0, top_p=0.3, mirostat_tau=0.0),
    SamplingParams(temperature=0.8, top_p=0.95, mirostat_tau=0.0, min_p=0.1),
    SamplingParams(temperature=1.3, top_p=1.0, mirostat_tau=0.0, top_k=7),
    SamplingParams(temperature=2.0, mirostat_tau=2.5),
    SamplingParams(temperature=0.5, mirostat_tau=6.0, top_k=30, min_p=0.02),
])
def test_masks_and_temperature_equal_the_reference_formulas(params):
    rows = 16
    logits = torch.randn(rows, V, generator=torch.Generator().manual_seed(21)) * torch.linspace(0.5, 4, rows)[:, None]
    dev = device_sampler(rows)
    dev.begin(list(range(rows)), [params] * rows, list(range(rows)), [-1] * rows)
    adj, weight, _ = dev.weights(logits, torch.arange(rows), sampler_mode([params]))
    for i in range(rows):
        ref = _reference_weights(adj[i], params, 2 * params.mirostat_tau)
        ours = weight[i] / weight[i].sum()
        assert torch.equal(ours > 0, ref > 0), i
        assert torch.allclose(ours, ref, atol=1e-6, rtol=1e-4), i


def test_sampler_mode_names_the_stages_a_step_needs():
    assert sampler_mode([SamplingParams()]) == (0, 0)  # the default: Mirostat only
    assert sampler_mode([SamplingParams(temperature=0, mirostat_tau=0, top_k=5)]) == (0, 0)  # greedy needs none
    assert sampler_mode([SamplingParams(mirostat_tau=0, top_k=5), SamplingParams(min_p=0.1)]) == (
        NUCLEUS | TOP_K | MIN_P, 8)


def test_a_seeded_reply_draws_the_same_whatever_shares_the_step():
    params = SamplingParams()
    logits = torch.randn(12, 40, V, generator=torch.Generator().manual_seed(5)) * 2

    def run(rows: int, slot: int) -> list[int]:
        dev = device_sampler(rows)
        seeds = [1000 + i for i in range(rows)]
        seeds[slot] = 77
        dev.begin(list(range(rows)), [params] * rows, seeds, [-1] * rows)
        out = []
        for step in range(40):
            row = logits[:rows, step].clone()
            row[slot] = logits[0, step]
            out.append(dev.sample(row, torch.arange(rows), torch.ones(rows, dtype=torch.bool)).tolist()[slot])
        return out

    alone = run(1, 0)
    assert run(12, 7) == alone and run(5, 3) == alone
    assert len(set(alone)) > 5  # sampled, not greedy


def test_turn_end_and_cap_on_the_device_equal_the_host():
    """For random replies over tokens that end turns in every way: where the device holds the next feed back and
    where the host's ReplyText ends the reply agree, and the device holds back exactly when the closing chunk is
    not the token itself."""
    rng = random.Random(0)
    tok = FakeTokenizer()
    for trial in range(200):
        max_tokens = rng.randrange(1, 12)
        dev = device_sampler(1)
        dev.begin([0], [SamplingParams(max_tokens=max_tokens)], [0], [-1])
        reply = ReplyText()
        for n in range(1, max_tokens + 1):
            t = rng.choice([1, 2, 3, 4, 6, 7, 8, 9, 5, 10, 11, 50, 60])
            dev.observe([0], [t])
            feed, reason = reply.accept(t, tok.token_bytes(t), n, max_tokens, tok)
            assert bool(dev.done[0]) == bool(reason), (trial, n)
            if reason:
                assert bool(dev.stop_feed[0]) == (feed != [t]), (trial, n, reason)
                break
            assert not bool(dev.stop_feed[0])
