"""Stopping a reply in the engine (/stop, ⏹): the reply ends after what it sampled, its state exactly that of the
tokens it fed, on both runners; one that sampled nothing is dropped; a request waiting for a slot knows its place."""
from __future__ import annotations

import asyncio
import time

import pytest
import torch

from bot.engine.engine import Engine
from bot.engine.outputs import GenerationCancelled
from bot.engine.sampling import SamplingParams
from bot.engine.tokenizer import world_tokenizer
from bot.store import split_by_lengths
from tests.test_engine_batched import backend_of, prompt, started

LONG = SamplingParams(temperature=5.0, top_p=1.0, mirostat_tau=0.0, presence_penalty=0.0, max_tokens=3000)


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("kind", ["batched", "rwkv-pip"])
async def test_a_stopped_reply_keeps_its_tokens_and_its_state_is_theirs(kind, demo7):
    engine = await started(backend_of(kind, demo7))
    engine.step_hook = lambda rows: time.sleep(0.005)
    try:
        start = engine.backend.zero_state()
        generation = engine.generate(start, prompt(1, 20), LONG, seed=3)
        while len(generation.text) < 10:
            await asyncio.sleep(0.01)
        generation.stop()
        result = await generation.result()
        engine.step_hook = None
        assert result.stop_reason == "stopped" and len(result.generated) < 3000
        reply = engine.tokenizer.decode(result.fed[20:])
        assert reply.endswith("\n\n") and reply.strip() == result.text and result.text
        replayed = await engine.feed(start, split_by_lengths(result.fed, result.feed_lengths))
        assert same(replayed.state, result.state)
    finally:
        await engine.close()


@pytest.mark.parametrize("kind", ["batched", "rwkv-pip"])
async def test_a_stop_before_any_token_drops_the_reply_and_waiting_requests_know_their_place(kind, demo7):
    engine = Engine(backend_of(kind, demo7), world_tokenizer(), chunk_len=16, max_batch=1)  # the others wait
    await engine.start()
    engine.step_hook = lambda rows: time.sleep(0.005)
    try:
        first = engine.generate(engine.backend.zero_state(), prompt(2, 20), LONG, seed=1)
        second = engine.generate(engine.backend.zero_state(), prompt(3, 20), LONG, seed=2)
        third = engine.generate(engine.backend.zero_state(), prompt(4, 20), LONG, seed=3)
        while third.queued != 2:
            await asyncio.sleep(0.01)
        assert second.queued == 1 and first.queued == 0
        second.stop()  # waiting: nothing written, dropped
        with pytest.raises(GenerationCancelled):
            await second.result()
        while third.queued != 1:
            await asyncio.sleep(0.01)
        first.stop()
        assert (await first.result()).stop_reason == "stopped"
        while not third.text:
            await asyncio.sleep(0.01)
        assert third.queued == 0
        third.cancel()
    finally:
        engine.step_hook = None
        await engine.close()
