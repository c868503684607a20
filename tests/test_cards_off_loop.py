"""Card work never runs on the event loop: while one member imports and uses large cards (parsing, prompt
building, tokenizing, lorebook scans), a bystander in another channel gets their reply within a second.

Both durations are measured in the same run: the bystander's reply must come back long before the card work is
done, which it could not if that work held the loop. Where the card work runs is checked directly as well: parsing,
prompt building and lorebook scans run in worker threads, never in the event loop's.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

from bot.app import build_app
from bot.config import load_config
from tests.chat_helpers import reply, send
from tests.conftest import write_config

BYSTANDER_SECONDS = 1.0


def heavy_card(variant: int) -> bytes:
    """A large card that is valid and within every limit: nearly a thousand example blocks (most dropped to fit the
    context, each try tokenizing the whole prompt) and a lorebook of ten thousand keys."""
    examples = "".join(f"<START>\n{{{{user}}}}: question {i} of {variant}\n{{{{char}}}}: " + "an answer " * 6 + "\n"
                       for i in range(900))
    entries = [{"keys": [f"w{i}a", f"w{i}b", f"dark forest {i}", f"青{i}"], "content": f"lore {i} " * 20}
               for i in range(2500)]
    data = {"name": f"Heavy{variant}", "description": "A keeper of long books.", "first_mes": "Hello.",
            "mes_example": examples, "character_book": {"entries": entries, "scan_depth": 8}}
    return json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": data}).encode()


async def test_a_bystander_is_answered_while_large_cards_are_processed(tmp_path, demo7):
    # A small context: the examples that fit are what the model then reads, and this test is about card work, not
    # about how the engine shares its steps with a long prompt.
    config = write_config(tmp_path, demo7, backend="batched", settings={"model.max_context_tokens": 2048})
    app = await build_app(load_config(config, env={}))
    try:
        await send(app, "/char use Mira", channel="bystander")
        await send(app, "/params set temperature 0 max_tokens 4", channel="bystander")
        await reply(app, "hello", channel="bystander")  # everything warm
        cards = [heavy_card(i) for i in range(4)]

        async def card_work() -> float:
            started = time.perf_counter()
            for i, data in enumerate(cards):
                out = await send(app, "/char import", channel="heavy", attachment=(f"heavy{i}.json", data))
                assert any(f"Heavy{i}" in line for line in out), out
                await send(app, f"/char use Heavy{i}", channel="heavy")
                await send(app, "/params set temperature 0 max_tokens 1", channel="heavy")
                await reply(app, "the dark forest 7 and w12a", channel="heavy")
            return time.perf_counter() - started

        heavy = asyncio.create_task(card_work())
        latencies = []
        while not heavy.done():  # the bystander keeps talking, through every phase of the card work
            started = time.perf_counter()
            answer = await reply(app, f"how are you, {len(latencies)}?", channel="bystander")
            latencies.append(time.perf_counter() - started)
            assert answer.startswith("Mira: ")
        card_seconds = await heavy
        assert len(latencies) >= 5, (latencies, card_seconds)
        assert max(latencies) < BYSTANDER_SECONDS, (latencies, card_seconds)
        assert max(latencies) < card_seconds / 5, (latencies, card_seconds)
    finally:
        await app.close()


async def test_card_parsing_prompts_and_lorebook_scans_run_in_worker_threads(tmp_path, demo7, monkeypatch):
    import bot.cards
    import bot.conversations.characters as characters

    threads: dict[str, set[str]] = {}

    def spy(name, work):
        def run(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.current_thread().name)
            return work(*args, **kwargs)
        return run

    monkeypatch.setattr(characters, "parse_card", spy("parse_card", characters.parse_card))
    monkeypatch.setattr(characters, "scan_directory", spy("scan_directory", characters.scan_directory))
    for name in ("build_prompt", "reply_preamble"):
        monkeypatch.setattr(bot.cards, name, spy(name, getattr(bot.cards, name)))
    app = await build_app(load_config(write_config(tmp_path, demo7), env={}))
    try:
        await send(app, "/char import", channel="h", attachment=("heavy.json", heavy_card(0)))
        await send(app, "/char use Heavy0", channel="h")
        await send(app, "/params set temperature 0 max_tokens 1", channel="h")
        await reply(app, "the dark forest 7", channel="h")
        await send(app, "/debug", channel="h")
    finally:
        await app.close()
    loop_thread = threading.main_thread().name
    assert set(threads) == {"parse_card", "scan_directory", "build_prompt", "reply_preamble"}, threads
    assert all(loop_thread not in used for used in threads.values()), threads
