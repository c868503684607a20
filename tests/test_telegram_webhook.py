"""Telegram webhook mode: the real python-telegram-bot Application receives updates on its own webhook server
(tornado), which the fake Bot API (tests/fake_telegram.py) POSTs them to, as Telegram does; on the real engine
(RWKV-7 demo model) and a real SQLite database."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

import aiohttp
import pytest
from aiohttp import web

from bot.config import ConfigError, load_config
from bot.adapters.telegram.adapter import webhook_path
from tests.conftest import ROOT, write_config
from tests.fake_telegram import SECRET_HEADER, FakeTelegram
from tests.test_telegram import TOKEN, RunningBot, running, telegram_config

SECRET = "s3cret_front-A"


@pytest.fixture
async def server():
    async with FakeTelegram(bot_token=TOKEN, bot_username="rwkvbot") as srv:
        yield srv


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def webhook_config(tmp_path, demo7, server, port: int, **settings):
    return telegram_config(tmp_path, demo7, server, telegram__webhook_url=f"http://127.0.0.1:{port}/tg/hook",
                           telegram__webhook_port=port, telegram__webhook_secret=SECRET, **settings)


async def post_update(port: int, update: dict, headers: dict) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/tg/hook", data=json.dumps(update),
                                headers={"Content-Type": "application/json", **headers}) as response:
            return response.status


def forged_update(chat_id: int, text: str) -> dict:
    return {"update_id": 1, "message": {"message_id": 1, "date": 1, "text": text,
                                        "chat": {"id": chat_id, "type": "private", "first_name": "Eve"},
                                        "from": {"id": chat_id, "is_bot": False, "first_name": "Eve"}}}


# ----------------------------------------------------------------------------- the fake's side


async def test_the_fake_posts_updates_in_order_with_the_secret_and_retries_until_taken(server):
    received: list[tuple[str, int]] = []
    failures = [500, 503]  # the webhook refuses the first update twice

    async def hook(request: web.Request) -> web.Response:
        update = await request.json()
        received.append((request.headers.get(SECRET_HEADER, ""), update["update_id"]))
        if failures:
            return web.Response(status=failures.pop(0))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        chat = server.private_chat(5, "Ann")
        first = server.send_text(chat, 5, "one")  # queued before the webhook is set: delivered once it is
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.base_url}{TOKEN}/setWebhook",
                                    json={"url": f"http://127.0.0.1:{port}/hook", "secret_token": "abc"}) as r:
                assert (await r.json())["ok"]
            second = server.send_text(chat, 5, "two")
            await server.wait_for(lambda: len(received) == 4)
            ids = [first_id for _, first_id in received]
            assert ids == [ids[0]] * 3 + [ids[0] + 1], "the refused update is sent again before the next"
            assert {secret for secret, _ in received} == {"abc"}
            assert [p.status for p in server.webhook_posts] == [500, 503, 200, 200]
            assert server.pending_updates == 0
            async with session.post(f"{server.base_url}{TOKEN}/getUpdates") as r:
                assert r.status == 409  # getUpdates is off while a webhook is set
            async with session.post(f"{server.base_url}{TOKEN}/deleteWebhook") as r:
                assert (await r.json())["ok"]
            third = server.send_text(chat, 5, "three")
            async with session.post(f"{server.base_url}{TOKEN}/getUpdates") as r:
                updates = (await r.json())["result"]
        assert [u["message"]["text"] for u in updates] == ["three"]
        assert len(received) == 4, "after deleteWebhook nothing more is posted"
        assert (first["message_id"], second["message_id"], third["message_id"]) == (1, 2, 3)
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------- the bot in webhook mode


async def test_a_private_chat_gets_its_streamed_reply_through_the_webhook(tmp_path, demo7, server):
    port = free_port()
    async with running(server, webhook_config(tmp_path, demo7, server, port)) as bot:
        [registered] = server.calls_to("setWebhook")
        assert registered.params["url"] == f"http://127.0.0.1:{port}/tg/hook"
        assert registered.params["secret_token"] == SECRET
        assert set(json.loads(registered.params["allowed_updates"])) == {"message", "edited_message",
                                                                         "my_chat_member", "callback_query"}
        chat = server.private_chat(42, "Ann")
        await bot.say(chat, 42, "/start")
        await bot.say(chat, 42, "/params set temperature 0 max_tokens 24")
        await bot.say(chat, 42, "tell me about the harbour")
        [turn] = await bot.turns("42")
        assert (turn.in_speaker, turn.in_text) == ("Ann", "tell me about the harbour")
        reply = server.messages(42)[-1]
        assert reply.text == turn.out_text.strip() and reply.text
        assert await bot.turns_shown("42")
    assert not server.calls_to("getUpdates"), "webhook mode never polls"
    assert all(post.ok for post in server.webhook_posts) and len(server.webhook_posts) == 3


async def test_a_group_is_answered_through_the_webhook(tmp_path, demo7, server):
    port = free_port()
    async with running(server, webhook_config(tmp_path, demo7, server, port)) as bot:
        group = server.group_chat(-500, "Harbour club")
        server.user(2, "Bob")
        server.set_member_status(group.id, 2, "member")
        await bot.say(group, 2, "just chatting among ourselves")
        asked = await bot.say(group, 2, "@rwkvbot, where is the ferry?")
        [answer] = server.messages(group)
        assert answer.reply_to_message_id == asked["message_id"]
        [turn] = await bot.turns("-500")
        assert (turn.in_speaker, turn.in_text) == ("Bob", "where is the ferry?")
        assert answer.text == turn.out_text.strip() and answer.text


async def test_a_post_without_the_right_secret_is_refused_and_answered_by_nobody(tmp_path, demo7, server):
    port = free_port()
    async with running(server, webhook_config(tmp_path, demo7, server, port)) as bot:
        assert await post_update(port, forged_update(666, "/start"), {}) == 403
        assert await post_update(port, forged_update(667, "/start"), {SECRET_HEADER: "wrong"}) == 403
        assert await post_update(port, forged_update(668, "/start"), {SECRET_HEADER: SECRET[:-1]}) == 403
        chat = server.private_chat(42, "Ann")
        await bot.say(chat, 42, "/start")  # after the forged ones: PTB handles updates one by one, in order
        assert bot.adapter.messages_done == 1, "only the real update was handled"
        assert len(server.messages(42)) == 1
        assert not any(server.messages(forged) for forged in (666, 667, 668))


async def test_stop_closes_the_webhook_server_and_a_later_front_gets_what_came_meanwhile(tmp_path, demo7, server):
    port = free_port()
    config = webhook_config(tmp_path, demo7, server, port)
    bot = await RunningBot(server, config).start()
    chat = server.private_chat(42, "Ann")
    await bot.say(chat, 42, "/start")
    await bot.close()  # as SIGTERM does: the stop event
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_update(port, forged_update(42, "hello"), {SECRET_HEADER: SECRET})
    assert server.webhook_url, "the webhook stays set: other fronts behind the same URL go on receiving"
    assert not server.calls_to("deleteWebhook")
    server.send_text(chat, 42, "/help")  # nobody listens: Telegram keeps it and tries again
    await server.wait_for(lambda: any(post.status == 0 for post in server.webhook_posts))
    assert server.pending_updates == 1
    async with running(server, config) as again:
        await server.wait_for(lambda: again.adapter.messages_done == 1, timeout=60)
        assert len(server.messages(42)) == 2 and "/undo" in server.messages(42)[-1].text
    assert server.pending_updates == 0


async def test_a_port_in_use_is_one_line_and_telegram_stays_off(tmp_path, demo7, server, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        from bot.adapters.telegram import TelegramAdapter
        from bot.app import build_app

        app = await build_app(load_config(webhook_config(tmp_path, demo7, server, port), env={}))
        try:
            stop = asyncio.Event()
            await asyncio.wait_for(TelegramAdapter(app).run(stop), 30)  # returns by itself
        finally:
            await app.close()
    [line] = [r for r in caplog.records if "cannot listen" in r.getMessage()]
    assert f"127.0.0.1:{port}" in line.getMessage() and "Telegram stays off" in line.getMessage()
    assert not [r for r in caplog.records if r.exc_info], "one line, never a traceback"


async def test_a_refused_webhook_is_one_line_and_a_server_error_is_retried(tmp_path, demo7, server, caplog):
    from bot.adapters.telegram import TelegramAdapter
    from bot.app import build_app

    port = free_port()
    app = await build_app(load_config(webhook_config(tmp_path, demo7, server, port), env={}))
    try:
        server.fail_next("setWebhook", 400, description="Bad Request: bad webhook: HTTPS url must be provided for "
                                                          "webhook")
        await asyncio.wait_for(TelegramAdapter(app).run(asyncio.Event()), 30)  # returns by itself
        [line] = [r.getMessage() for r in caplog.records if "refused the webhook" in r.getMessage()]
        assert "https url must be provided" in line.lower() and "Telegram stays off" in line
        assert SECRET not in caplog.text
        assert not [r for r in caplog.records if r.exc_info], "a handled error is one line, never a traceback"
        server.fail_next("setWebhook", 502)
        async with running(server, webhook_config(tmp_path / "again", demo7, server, port)) as bot:
            assert [c.status for c in server.calls_to("setWebhook")] == [400, 502, 200]
            chat = server.private_chat(42, "Ann")
            await bot.say(chat, 42, "/start")
            assert len(server.messages(42)) == 1
    finally:
        await app.close()


async def test_rwkv_bot_run_serves_the_webhook_and_exits_cleanly_on_sigterm(tmp_path, demo7, server):
    port = free_port()
    config = write_config(tmp_path, demo7, settings={"sampling.temperature": 0, "sampling.max_tokens": 8})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    env.update(RWKV_BOT_TELEGRAM_TOKEN=TOKEN, RWKV_BOT_TELEGRAM_BASE_URL=server.base_url,
               RWKV_BOT_TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/tg/hook",
               RWKV_BOT_TELEGRAM_WEBHOOK_PORT=str(port), RWKV_BOT_TELEGRAM_WEBHOOK_SECRET=SECRET)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await server.wait_for(lambda: server.calls_to("setWebhook"), timeout=60)
        chat = server.private_chat(60, "Ann")
        server.send_text(chat, 60, "/start")
        server.send_text(chat, 60, "hello")
        await server.wait_for(lambda: len(server.messages(60)) == 2, timeout=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
        text = stderr.decode()
        assert process.returncode == 0, text[-3000:]
        assert TOKEN not in text and SECRET not in text and "Traceback" not in text
        assert "receives updates on its webhook" in text
        with pytest.raises(aiohttp.ClientConnectionError):
            await post_update(port, forged_update(60, "hello"), {SECRET_HEADER: SECRET})
        assert not server.calls_to("getUpdates")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("secret", ["", "has space", "x" * 257, "semi;colon", "点"])
def test_a_webhook_needs_a_secret_telegram_accepts(tmp_path, monkeypatch, secret):
    monkeypatch.chdir(tmp_path)  # no rwkv-bot.toml
    env = {"RWKV_BOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/tg", "RWKV_BOT_TELEGRAM_WEBHOOK_SECRET": secret}
    with pytest.raises(ConfigError, match=r"(?i)webhook_secret: (required with telegram\.webhook_url|contains)"):
        load_config(None, env=env)


def test_a_webhook_url_must_be_a_full_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"RWKV_BOT_TELEGRAM_WEBHOOK_URL": "bot.example.org/tg", "RWKV_BOT_TELEGRAM_WEBHOOK_SECRET": "abc"}
    with pytest.raises(ConfigError, match=r"^telegram\.webhook_url: must be a full URL"):
        load_config(None, env=env)
    config = load_config(None, env={**env, "RWKV_BOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/tg/hook"})
    assert (config.telegram.webhook_listen, config.telegram.webhook_port) == ("127.0.0.1", 8443)


def test_the_server_path_is_the_urls_unless_given():
    assert webhook_path("https://bot.example.org/tg/hook", "") == "/tg/hook"
    assert webhook_path("https://bot.example.org", "") == "/"
    assert webhook_path("https://bot.example.org/public/tg", "/local") == "/local"
    assert webhook_path("https://bot.example.org/public/tg", "local") == "/local"
