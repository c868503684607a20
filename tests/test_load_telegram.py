"""Load through the fake Telegram server: 200 private chats talk at once, 5 turns each, on the real PTB
Application, the batched engine (demo model, CPU) and SQLite. Nothing may be lost and nothing may fail."""
from __future__ import annotations

import asyncio
import logging
import sys
import time

from bot.i18n import t
from tests.test_telegram import running, server, telegram_config  # noqa: F401  (server is a fixture)

CHATS = 200
TURNS = 5


async def test_200_chats_times_5_turns_lose_nothing(tmp_path, demo7, server, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING)
    config = telegram_config(tmp_path, demo7, server, sampling__max_tokens=8, model__max_batch=256,
                             telegram__edit_interval=1.0)
    async with running(server, config) as bot:
        chats = [server.private_chat(1000 + i, f"User{i}") for i in range(CHATS)]

        async def converse(chat) -> None:
            """A user who waits for each answer before writing again."""
            for turn in range(TURNS):
                server.send_text(chat, chat.id, f"message {turn} from {chat.id}")
                await server.wait_for(lambda: len(server.messages(chat)) > turn, timeout=120)

        t0 = time.monotonic()
        await asyncio.gather(*(converse(chat) for chat in chats))
        await server.wait_for(lambda: bot.adapter.messages_done >= CHATS * TURNS, timeout=120)
        elapsed = time.monotonic() - t0

        lost = []
        for chat in chats:
            turns = await bot.turns(str(chat.id))
            shown = [m.text for m in server.messages(chat)]
            if [turn.in_text for turn in turns] != [f"message {i} from {chat.id}" for i in range(TURNS)]:
                lost.append((chat.id, "turns", [turn.in_text for turn in turns]))
            elif shown != [turn.out_text.strip() or t("empty_reply") for turn in turns]:
                lost.append((chat.id, "replies", shown))
        assert not lost, lost[:3]
    # The bot's and PTB's logs; the fake server's own (aiohttp.server: a long poll cut at shutdown) are not ours.
    problems = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and not r.name.startswith("aiohttp")]
    assert not problems, problems[:5]
    tokens = bot.app.engine.tokens_generated
    print(f"\nload: {CHATS} chats x {TURNS} turns through the fake Telegram in {elapsed:.1f} s: "
          f"{CHATS * TURNS / elapsed:.1f} turns/s, {tokens / elapsed:.0f} generated tokens/s", file=sys.stderr)
