"""Samplers against hand-computed values and against each other."""
from __future__ import annotations

import math

import pytest
import torch

from bot.engine.sampling import ParamError, ReplySampler, SamplingParams, mirostat_update, parse_param


def logits(seed: int, vocab: int = 1000) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * 3


def test_top_k_one_is_greedy():
    for seed in range(20):
        row = logits(seed)
        greedy = ReplySampler(SamplingParams(temperature=0)).sample(row)
        for params in (SamplingParams(top_k=1, mirostat_tau=0, temperature=1.3),
                       SamplingParams(top_k=1, mirostat_tau=5, temperature=2.0)):
            sampler = ReplySampler(params, torch.Generator().manual_seed(seed))
            assert sampler.sample(row) == greedy == int(row.argmax())


def test_greedy_respects_bans_and_penalties():
    row = torch.tensor([5.0, 4.9, 1.0, 0.0])
    sampler = ReplySampler(SamplingParams(temperature=0, presence_penalty=0.5, frequency_penalty=0.0))
    assert sampler.sample(row) == 0
    assert sampler.sample(row, banned={0}) == 1
    sampler.observe(0, "a")
    assert sampler.sample(row) == 1  # 5.0 - 0.5 < 4.9


def test_pipeline_penalties_decay_and_skip_digits_and_spaces():
    sampler = ReplySampler(SamplingParams(presence_penalty=0.2, frequency_penalty=0.5, penalty_decay=0.5))
    sampler.observe(7, "word")
    sampler.observe(7, "word")  # 1 * 0.5 + 1
    sampler.observe(3, " ")  # counted with weight 0: presence applies, frequency does not
    adjusted = sampler.adjust(torch.zeros(10))
    # hand computation: after 2nd observe count(7)=1.5; the 3rd observe decays it to 0.75 and adds token 3 at 0
    assert float(adjusted[7]) == pytest.approx(-(0.2 + 0.75 * 0.5))
    assert float(adjusted[3]) == pytest.approx(-0.2)
    assert float(adjusted[0]) == 0.0


def test_mirostat_update_matches_hand_computation():
    mu, lr = mirostat_update(mu=10.0, lr=0.1, surprise=7.0, tau=5.0, lr_decay=0.01)
    assert mu == pytest.approx(10.0 - 0.1 * 2.0) and lr == 0.1  # mu 9.8 is not above 10*tau
    mu, lr = mirostat_update(mu=60.0, lr=0.1, surprise=1.0, tau=5.0, lr_decay=0.01)
    assert mu == pytest.approx(60.4) and lr == pytest.approx(0.1 / 1.01)


def test_mirostat_truncates_at_mu_and_updates_from_the_drawn_surprise():
    # Probabilities 0.5, 0.25, 0.125, 0.125: surprises 1, 2, 3, 3 bits.
    row = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    params = SamplingParams(temperature=1.0, mirostat_tau=0.75, mirostat_lr=0.1, mirostat_lr_decay=0.0,
                            presence_penalty=0, top_k=0, min_p=0)
    seen = set()
    for seed in range(40):
        sampler = ReplySampler(params, torch.Generator().manual_seed(seed))
        assert sampler.mu == 1.5  # 2 * tau: only the 1-bit token is within mu
        token = sampler.sample(row)
        seen.add(token)
        assert sampler.mu == pytest.approx(1.5 - 0.1 * (1.0 - 0.75))
    assert seen == {0}
    wide = ReplySampler(SamplingParams(temperature=1.0, mirostat_tau=1.5, presence_penalty=0), torch.Generator().manual_seed(0))
    draws = {wide.sample(row) for _ in range(60)}
    assert draws <= {0, 1, 2, 3} and len(draws) > 1  # mu = 3 bits keeps every token


def test_nucleus_cutoff_like_the_pipeline():
    row = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    params = SamplingParams(temperature=1.0, top_p=0.7, mirostat_tau=0, presence_penalty=0)
    draws = {ReplySampler(params, torch.Generator().manual_seed(s)).sample(row) for s in range(100)}
    assert draws == {0, 1}  # cumulative 0.5, 0.8 >= 0.7: tokens below p=0.3 are cut
    params = SamplingParams(temperature=1.0, top_p=1.0, min_p=0.5, mirostat_tau=0, presence_penalty=0)
    draws = {ReplySampler(params, torch.Generator().manual_seed(s)).sample(row) for s in range(100)}
    assert draws == {0, 1}  # min_p: p >= 0.25


def test_sampling_is_reproducible_with_a_seed():
    row = logits(1)
    params = SamplingParams()
    a = [ReplySampler(params, torch.Generator().manual_seed(5)).sample(row) for _ in range(3)]
    assert len(set(a)) == 1


@pytest.mark.parametrize("name,value,message", [
    ("temperature", "-1", "temperature must be a number from 0.0 to 5.0"),
    ("top_k", "2.5", "top_k must be an integer from 0 to 65536"),
    ("max_tokens", "nan", "max_tokens must be an integer"),
    ("top_p", "inf", "top_p must be a number from 0.0 to 1.0"),
    ("top_p", True, "top_p must be a number"),
    ("nope", "1", "unknown parameter 'nope'"),
])
def test_bad_params_name_the_problem(name, value, message):
    with pytest.raises(ParamError, match=message):
        parse_param(name, value)


def test_params_round_trip():
    params = SamplingParams.from_dict({"temperature": "0.5", "top_k": "40"})
    assert params.temperature == 0.5 and params.top_k == 40 and isinstance(params.top_k, int)
    assert SamplingParams.from_dict(params.to_dict()) == params
    assert not math.isnan(params.top_p)
