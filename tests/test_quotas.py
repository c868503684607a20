"""Quotas on what users keep in the database: saves (per channel, per user, in all) and conversations a user
starts (each keeps its own stored states), each refused with a clear reply; bot admins are held only to the
totals. (Card quotas: tests/test_library_access.py.)"""
from __future__ import annotations

from bot.app import build_app
from bot.config import load_config
from bot.i18n import t
from tests.chat_helpers import GREEDY, send
from tests.conftest import write_config


async def open_app(tmp_path, demo7, **limits):
    return await build_app(load_config(write_config(tmp_path, demo7, settings={
        f"limits.{key}": value for key, value in limits.items()}), env={}))


async def test_saves_per_user_and_in_all(tmp_path, demo7):
    app = await open_app(tmp_path, demo7, max_user_saves=2, max_saves_total=4)
    try:
        for channel in ("a", "b", "c", "d"):
            await send(app, "/char use Mira", channel=channel, user="Ann")
        assert await send(app, "/save one", channel="a", user="Ann") == [t("saved", name="one")]
        assert await send(app, "/save two", channel="b", user="Ann") == [t("saved", name="two")]
        assert await send(app, "/save three", channel="c", user="Ann") == [t("too_many_user_saves", limit=2)]
        assert await send(app, "/save two", channel="b", user="Ann") == [t("saved", name="two")]  # overwriting
        assert await send(app, "/saves", channel="c", user="Ann") == [t("saves_none")]  # nothing half-stored
        # Another user has their own quota; a bot admin only the total.
        assert await send(app, "/save three", channel="c", user="Bob") == [t("saved", name="three")]
        assert await send(app, "/save four", channel="d", user="Boss", bot_admin=True) == [t("saved", name="four")]
        assert await send(app, "/save five", channel="d", user="Boss", bot_admin=True) == [t("saves_full")]
        assert await send(app, "/delsave one", channel="a", user="Ann") == [t("deleted_save", name="one")]
        assert await send(app, "/save three", channel="c", user="Ann") == [t("saved", name="three")]
    finally:
        await app.close()


async def test_conversations_a_user_starts(tmp_path, demo7):
    app = await open_app(tmp_path, demo7, max_user_channels=2, max_channels=4)
    try:
        await send(app, "/char use Mira", channel="topic-1", user="Mallory")
        await send(app, GREEDY, channel="topic-2", user="Mallory")
        for first in ("hello", "/start", "/params", "/char use Mira"):
            assert await send(app, first, channel="topic-3", user="Mallory") == [t("too_many_channels", limit=2)]
        assert app.store is not None and await app.store.channels_count() == 2  # nothing was stored for it
        # Her conversations go on; others may still start theirs; a bot admin only meets the total.
        assert (await send(app, "hello", channel="topic-1", user="Mallory"))[-1].startswith("Mira: ")
        assert (await send(app, "hello", channel="topic-3", user="Ann"))[-1].startswith("Mira: ")
        assert (await send(app, "hello", channel="topic-3", user="Mallory"))[-1].startswith("Mira: ")  # not hers
        assert (await send(app, "/start", channel="dm-boss", user="Boss", bot_admin=True))[-1].startswith("Mira: ")
        assert await send(app, "/start", channel="dm-boss-2", user="Boss", bot_admin=True) == [t("channels_full")]
        assert await app.store.check() == []
    finally:
        await app.close()
    app = await open_app(tmp_path, demo7, max_user_channels=2)  # counted from the database after a restart
    try:
        assert await send(app, "hello", channel="topic-5", user="Mallory") == [t("too_many_channels", limit=2)]
    finally:
        await app.close()
