"""The fake Bot API server driven by the real python-telegram-bot 22.x over HTTP.

Every test talks to tests.fake_telegram through a real PTB ``Application``/``ExtBot``
(httpx on 127.0.0.1); nothing in PTB is patched.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from contextlib import asynccontextmanager

import aiohttp
import pytest
from telegram import Bot, ChatMemberAdministrator, ChatMemberMember, ChatMemberOwner, Update
from telegram.constants import ChatAction as TgChatAction
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.fake_telegram import DESC_NOT_MODIFIED, FakeTelegram, parse_formatted

TOKEN = "123:ABC"


@pytest.fixture
async def server():
    async with FakeTelegram(bot_token=TOKEN, bot_username="rwkvbot") as srv:
        yield srv


def build_app(server: FakeTelegram, *, max_retries: int = 0, token: str = TOKEN,
              unlimited: bool = False, concurrent: bool = False, pool: int | None = None) -> Application:
    limiter = (AIORateLimiter(overall_max_rate=0, group_max_rate=0, max_retries=max_retries)
               if unlimited else AIORateLimiter(max_retries=max_retries))
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{server.url}/bot")
        .base_file_url(f"{server.url}/file/bot")
        .rate_limiter(limiter)
        .concurrent_updates(concurrent)
    )
    if pool:
        builder = builder.connection_pool_size(pool)
    return builder.build()


@asynccontextmanager
async def polling(app: Application):
    await app.initialize()
    await app.start()
    await app.updater.start_polling(timeout=5, poll_interval=0)
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


@asynccontextmanager
async def bot_only(app: Application):
    await app.initialize()
    try:
        yield app.bot
    finally:
        await app.shutdown()


def last_call(server: FakeTelegram, method: str):
    calls = server.calls_to(method)
    assert calls, f"no {method} call"
    return calls[-1]


# ----------------------------------------------------------------------------- basics


async def test_initialize_calls_get_me_and_rejects_wrong_token(server):
    app = build_app(server)
    async with bot_only(app) as bot:
        assert bot.id == 123
        assert bot.username == "rwkvbot"
        assert bot.base_url == f"{server.url}/bot{TOKEN}"
        assert bot.base_file_url == f"{server.url}/file/bot{TOKEN}"
    assert [c.method for c in server.calls] == ["getMe"]
    assert server.calls[0].status == 200

    wrong = build_app(server, token="123:WRONG")
    with pytest.raises(InvalidToken):
        await wrong.initialize()
    assert server.calls[-1].status == 401


async def test_raw_http_get_post_json_and_unknown_method(server):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/bot{TOKEN}/getMe") as r:
            assert r.status == 200
            body = await r.json()
            assert body["ok"] is True and body["result"]["username"] == "rwkvbot"
        server.private_chat(7, "Ann")
        async with http.post(f"{server.url}/bot{TOKEN}/sendMessage",
                             json={"chat_id": 7, "text": "123"}) as r:
            body = await r.json()
            assert body["result"]["text"] == "123"  # a numeric-looking text stays text
        async with http.get(f"{server.url}/bot{TOKEN}/SENDMESSAGE", params={"chat_id": "7", "text": "q"}) as r:
            assert (await r.json())["result"]["text"] == "q"  # method names are case-insensitive
        async with http.post(f"{server.url}/bot{TOKEN}/fooBar", data={"x": "1"}) as r:
            assert r.status == 404
            assert await r.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    assert [m.text for m in server.messages(7)] == ["123", "q"]

    app = build_app(server)
    async with bot_only(app) as bot:
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("fooBar")


async def test_wait_for_times_out_when_condition_never_holds(server):
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await server.wait_for(lambda: server.messages(1), timeout=0.2)
    assert time.monotonic() - t0 < 1.0


# ----------------------------------------------------------------------------- polling


async def test_polling_delivers_message_and_handler_replies(server):
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(f"echo: {update.message.text}", do_quote=True)

    app = build_app(server)
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    chat = server.private_chat(42, "Ann", language_code="zh")
    async with polling(app):
        sent = server.send_text(chat, 42, "hello there")
        msgs = await server.wait_for(lambda: server.messages(42))
        assert msgs[0].text == "echo: hello there"
        assert msgs[0].reply_to_message_id == sent["message_id"]
        # the update is confirmed by the next getUpdates offset
        await server.wait_for(lambda: server.pending_updates == 0)
    methods = [c.method for c in server.calls]
    assert methods.index("deleteWebhook") < methods.index("getUpdates")
    send = last_call(server, "sendMessage")
    assert send.params["chat_id"] == "42" and send.status == 200
    # PTB posts urlencoded forms; non-string values are JSON-encoded
    assert send.http_method == "POST" and send.content_type == "application/x-www-form-urlencoded"
    assert send.params["reply_parameters"] == '{"message_id": %d}' % sent["message_id"]


async def test_get_updates_long_poll_waits_wakes_and_batches(server):
    app = build_app(server)
    chat = server.private_chat(5)
    async with bot_only(app) as bot:
        t0 = time.monotonic()
        assert await bot.get_updates(timeout=1) == ()
        assert 0.9 < time.monotonic() - t0 < 2.0  # really waited for the timeout

        async def inject_when_polling():
            await server.wait_for(lambda: server.in_flight.get("getUpdates"))
            server.send_text(chat, 5, "wake up")

        t0 = time.monotonic()
        task = asyncio.create_task(inject_when_polling())
        updates = await bot.get_updates(timeout=10)
        await task
        assert time.monotonic() - t0 < 1.0  # woke up on the update, not the timeout
        assert [u.message.text for u in updates] == ["wake up"]

        for i in range(250):
            server.send_text(chat, 5, f"m{i}")
        offset = updates[-1].update_id + 1
        texts = []
        sizes = []
        while True:
            batch = await bot.get_updates(offset=offset, timeout=0)
            if not batch:
                break
            sizes.append(len(batch))
            texts += [u.message.text for u in batch]
            offset = batch[-1].update_id + 1
        assert sizes == [100, 100, 50]
        assert texts == [f"m{i}" for i in range(250)]
        assert server.pending_updates == 0
        # without confirming (no offset) the same update is delivered again
        server.send_text(chat, 5, "again")
        first = await bot.get_updates(timeout=0)
        second = await bot.get_updates(timeout=0, limit=1)
        assert [u.update_id for u in first] == [u.update_id for u in second]
        # a negative offset keeps only the last -offset updates
        server.send_text(chat, 5, "newest")
        assert [u.message.text for u in await bot.get_updates(offset=-1, timeout=0)] == ["newest"]
        assert server.pending_updates == 1
        first = await bot.get_updates(timeout=0)
        # a user's edit arrives as edited_message; allowed_updates filters kinds out
        server.edit_user_message(chat, first[0].message.message_id, "edited")
        [edit] = await bot.get_updates(offset=first[0].update_id + 1, timeout=0)
        assert edit.edited_message.text == "edited" and edit.message is None
        server.edit_user_message(chat, first[0].message.message_id, "edited twice")
        kinds = await bot.get_updates(offset=first[0].update_id + 1, timeout=0,
                                      allowed_updates=["message"])
        assert kinds == ()


async def test_second_concurrent_poll_ends_the_first_with_conflict(server):
    async with Bot(TOKEN, base_url=f"{server.url}/bot") as bot1, \
            Bot(TOKEN, base_url=f"{server.url}/bot") as bot2:
        first = asyncio.create_task(bot1.get_updates(timeout=5))
        await server.wait_for(lambda: server.in_flight.get("getUpdates"))
        t0 = time.monotonic()
        second = asyncio.create_task(bot2.get_updates(timeout=0))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await first
        assert await second == ()
        assert time.monotonic() - t0 < 1.0


# ----------------------------------------------------------------------------- text rules


async def test_streaming_edits_and_not_modified(server):
    errors: list[Exception] = []

    async def stream(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await context.bot.send_chat_action(update.effective_chat.id, TgChatAction.TYPING)
        msg = await update.message.reply_text("Once")
        for text in ("Once upon", "Once upon a time", "Once upon a time."):
            msg = await msg.edit_text(text)
        try:
            await msg.edit_text("Once upon a time.")
        except BadRequest as exc:
            errors.append(exc)

    app = build_app(server)
    app.add_handler(MessageHandler(filters.TEXT, stream))
    chat = server.private_chat(9)
    async with polling(app):
        server.send_text(chat, 9, "tell me a story")
        await server.wait_for(lambda: errors)
    [msg] = server.messages(9)
    assert msg.text == "Once upon a time."
    assert [v.text for v in msg.history] == ["Once", "Once upon", "Once upon a time", "Once upon a time."]
    assert [v.t for v in msg.history] == sorted(v.t for v in msg.history)
    assert len(msg.edits) == 3
    assert str(errors[0]).startswith("Message is not modified: specified new message content")
    assert last_call(server, "editMessageText").response["description"] == DESC_NOT_MODIFIED
    assert [a.action for a in server.chat_actions(9)] == ["typing"]


async def test_length_empty_and_unknown_targets_are_refused(server):
    server.private_chat(1)
    group = server.group_chat(-100, "Club")
    app = build_app(server)
    async with bot_only(app) as bot:
        ok = await bot.send_message(1, "x" * 4096)
        assert len(ok.text) == 4096
        await bot.send_message(1, "😀" * 4096)  # counted in characters, not UTF-16 units
        with pytest.raises(BadRequest, match="^Message is too long$"):
            await bot.send_message(1, "x" * 4097)
        assert last_call(server, "sendMessage").response == {
            "ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        with pytest.raises(BadRequest, match="^Message text is empty$"):
            await bot.send_message(1, "")
        with pytest.raises(BadRequest, match="^Message text is empty$"):
            await bot.send_message(1, " \n\t ")
        with pytest.raises(BadRequest, match="^Message text is empty$"):
            await bot.edit_message_text("  ", chat_id=1, message_id=ok.message_id)
        with pytest.raises(BadRequest, match="^Message to edit not found$"):
            await bot.edit_message_text("new", chat_id=1, message_id=999)
        with pytest.raises(BadRequest, match="^Chat not found$"):
            await bot.send_message(555, "hi")
        trimmed = await bot.send_message(1, "\n  padded  \n")
        assert trimmed.text == "padded"
        assert await bot.delete_message(1, trimmed.message_id) is True
        assert "padded" not in [m.text for m in server.messages(1)]
        with pytest.raises(BadRequest, match="^Message to delete not found$"):
            await bot.delete_message(1, trimmed.message_id)

        await bot.send_message(group.id, "before")
        server.kick_bot(group.id)
        with pytest.raises(Forbidden, match="^Forbidden: bot was kicked from the group chat$"):
            await bot.send_message(group.id, "after")
        with pytest.raises(Forbidden):
            await bot.send_chat_action(group.id, TgChatAction.TYPING)
        server.kick_bot(1)
        with pytest.raises(Forbidden, match="blocked by the user"):
            await bot.send_message(1, "hi")
    assert [m.text for m in server.messages(group.id)] == ["before"]


async def test_plain_text_arrives_intact_and_parse_modes_are_applied(server):
    server.private_chat(3)
    nasty = "<b>not bold</b> *star* _under_ a<b & c>d `tick` [x](y) 1.5 \\ &amp; ~"
    app = build_app(server)
    async with bot_only(app) as bot:
        got = await bot.send_message(3, nasty)
        assert got.text == nasty and not got.entities
        assert server.messages(3)[-1].text == nasty

        html_msg = await bot.send_message(3, "<b>bold</b> &lt;3 <a href=\"http://x.y\">link</a>",
                                          parse_mode="HTML")
        assert html_msg.text == "bold <3 link"
        assert [(e.type, e.offset, e.length) for e in html_msg.entities] == [
            ("bold", 0, 4), ("text_link", 8, 4)]
        with pytest.raises(BadRequest, match="Can't parse entities: unsupported start tag"):
            await bot.send_message(3, "é <p>para</p>", parse_mode="HTML")
        assert last_call(server, "sendMessage").response["description"] == (
            'Bad Request: can\'t parse entities: Unsupported start tag "p" at byte offset 3')
        with pytest.raises(BadRequest, match="can't find end tag corresponding to start tag"):
            await bot.send_message(3, "<b>open", parse_mode="HTML")

        v2 = await bot.send_message(3, "1\\.5 *bold* _it_ \\<tag\\>", parse_mode="MarkdownV2")
        assert v2.text == "1.5 bold it <tag>"
        assert [(e.type, e.offset, e.length) for e in v2.entities] == [("bold", 4, 4), ("italic", 9, 2)]
        with pytest.raises(BadRequest, match=r"character '\.' is reserved"):
            await bot.send_message(3, "1.5", parse_mode="MarkdownV2")
        with pytest.raises(BadRequest, match="can't find end of the entity"):
            await bot.send_message(3, "a *b", parse_mode="Markdown")
    # emoji before an entity: offsets in UTF-16 units
    text, ents = parse_formatted("😀<b>x</b>", "HTML")
    assert text == "😀x" and ents == [{"type": "bold", "offset": 2, "length": 1}]


async def test_group_commands_mentions_and_forum_threads(server):
    seen: list[str] = []

    async def on_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append("help:" + update.message.text)
        await update.message.reply_text("help text")

    async def on_mention(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append("mention:" + update.message.text)
        await context.bot.send_chat_action(update.effective_chat.id, TgChatAction.TYPING,
                                           message_thread_id=update.message.message_thread_id)
        await update.message.reply_text(f"hi {update.effective_user.first_name}")

    async def on_other(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append("other:" + update.message.text)

    app = build_app(server)
    app.add_handler(CommandHandler("help", on_help))
    app.add_handler(MessageHandler(filters.Entity("mention") & filters.Regex("@rwkvbot"), on_mention))
    app.add_handler(MessageHandler(filters.TEXT, on_other))
    forum = server.group_chat(-1001, "Forum", is_forum=True)
    topic = server.create_topic(forum.id, "Stories", creator=77)
    server.user(77, "Bob", username="bob")
    async with polling(app):
        server.send_text(forum, 77, "/help@rwkvbot", message_thread_id=topic)
        server.send_text(forum, 77, "/help@otherbot", message_thread_id=topic)
        server.send_text(forum, 77, "just chatting", message_thread_id=topic)
        server.send_text(forum, 77, "hey @rwkvbot how are you", message_thread_id=topic)
        await server.wait_for(lambda: len(server.messages(forum.id)) == 2)
        await server.wait_for(lambda: len(seen) == 4)
    assert seen == ["help:/help@rwkvbot", "other:/help@otherbot", "other:just chatting",
                    "mention:hey @rwkvbot how are you"]
    replies = server.messages(forum.id)
    assert [m.text for m in replies] == ["help text", "hi Bob"]
    assert all(m.message_thread_id == topic for m in replies)
    assert server.messages(forum.id, thread_id=topic) == replies
    assert server.chat_actions(forum.id)[0].message_thread_id == topic
    async with bot_only(build_app(server)) as bot:
        with pytest.raises(BadRequest, match="Message thread not found"):
            await bot.send_message(forum.id, "x", message_thread_id=999)


# ----------------------------------------------------------------------------- faults


async def test_retry_after_raised_without_retries_and_survived_with_aioratelimiter(server):
    server.private_chat(11)
    async with bot_only(build_app(server, max_retries=0)) as bot:
        server.fail_next("sendMessage", 429, retry_after=1)
        with pytest.raises(RetryAfter, match="Retry in 1"):
            await bot.send_message(11, "first")
        assert last_call(server, "sendMessage").response == {
            "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1}}
    assert server.messages(11) == []

    async with bot_only(build_app(server, max_retries=2)) as bot:
        server.fail_next("sendMessage", 429, retry_after=1)
        msg = await bot.send_message(11, "second")
    assert msg.text == "second"
    calls = server.calls_to("sendMessage")[-2:]
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].t - calls[0].t >= 1.0  # AIORateLimiter slept retry_after (+0.1 s)
    assert [m.text for m in server.messages(11)] == ["second"]


async def test_5xx_drops_and_timeouts_surface_as_network_errors(server):
    server.private_chat(12)
    async with bot_only(build_app(server)) as bot:
        server.fail_next("sendMessage", 500)
        with pytest.raises(NetworkError) as err:
            await bot.send_message(12, "a")
        assert type(err.value) is NetworkError and str(err.value) == "Internal Server Error"

        server.fail_next("sendMessage", 502)
        with pytest.raises(NetworkError, match=r"Bad Gateway \(502\)") as err:
            await bot.send_message(12, "b")
        assert type(err.value) is NetworkError

        server.drop_next("sendMessage")
        with pytest.raises(NetworkError) as err:
            await bot.send_message(12, "c")
        assert not isinstance(err.value, TimedOut)
        assert last_call(server, "sendMessage").fault == "drop"

        server.fail_next("sendMessage", None, delay=1.0)
        with pytest.raises(TimedOut):
            await bot.send_message(12, "d", read_timeout=0.2)

        # the call took effect, only the answer was lost: the chat shows the message
        server.fail_next("sendMessage", 500, process=True)
        with pytest.raises(NetworkError):
            await bot.send_message(12, "e")

        server.fail_next("*", 503, count=2)
        with pytest.raises(NetworkError):
            await bot.send_chat_action(12, TgChatAction.TYPING)
        with pytest.raises(NetworkError):
            await bot.get_chat(12)
        assert (await bot.get_chat(12)).id == 12  # faults are consumed
        # "e" took effect at once; the timed-out "d" still lands when its delay is over
        await server.wait_for(lambda: [m.text for m in server.messages(12)] == ["e", "d"])


async def test_polling_survives_a_5xx_on_get_updates(server):
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(update.message.text)

    app = build_app(server)
    app.add_handler(MessageHandler(filters.TEXT, echo))
    chat = server.private_chat(13)
    server.fail_next("getUpdates", 502)
    async with polling(app):
        server.send_text(chat, 13, "still there?")
        await server.wait_for(lambda: server.messages(13), timeout=5)
    statuses = [c.status for c in server.calls_to("getUpdates")]
    assert statuses[0] == 502 and 200 in statuses


# ----------------------------------------------------------------------------- files


async def test_user_document_is_downloaded_by_the_bot(server):
    payload = bytes(range(256)) * 1200 + b"\x00end"
    results: list[bytes] = []

    async def on_doc(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        doc = update.message.document
        tg_file = await doc.get_file()
        results.append(tg_file.file_path)
        data = bytes(await tg_file.download_as_bytearray())
        results.append(data)
        await update.message.reply_text(
            f"{doc.file_name} {update.message.caption} {len(data)} {hashlib.sha256(data).hexdigest()}")

    app = build_app(server)
    app.add_handler(MessageHandler(filters.Document.ALL, on_doc))
    chat = server.private_chat(21)
    async with polling(app):
        sent = server.send_document(chat, 21, "card.png", payload, caption="/char import")
        await server.wait_for(lambda: server.messages(21))
    assert sent["caption_entities"] == [{"type": "bot_command", "offset": 0, "length": 5}]
    file_path, data = results
    assert data == payload
    assert file_path.startswith(f"{server.url}/file/bot{TOKEN}/documents/")
    assert server.messages(21)[0].text == (
        f"card.png /char import {len(payload)} {hashlib.sha256(payload).hexdigest()}")
    assert last_call(server, "download").status == 200


async def test_bot_sends_a_document_and_the_test_reads_it_back(server):
    server.private_chat(22)
    body = "{\"name\": \"Alice\", \"greeting\": \"<hi> *there*\"}".encode() * 50
    async with bot_only(build_app(server)) as bot:
        msg = await bot.send_document(22, document=body, filename="alice.json", caption="your card")
        assert msg.document.file_name == "alice.json" and msg.caption == "your card"
        again = await (await bot.get_file(msg.document.file_id)).download_as_bytearray()
        assert bytes(again) == body
        with pytest.raises(BadRequest, match="^Invalid file_id$"):
            await bot.get_file("nope")
        with pytest.raises(BadRequest, match="caption is too long"):
            await bot.send_document(22, document=b"x", filename="a.txt", caption="c" * 1025)
        server.fail_next("download", 500)
        with pytest.raises(NetworkError):
            await (await bot.get_file(msg.document.file_id)).download_as_bytearray()
    upload = server.calls_to("sendDocument")[0]
    assert upload.content_type == "multipart/form-data"
    assert upload.params["document"] == {"filename": "alice.json", "size": len(body)}
    [doc] = server.documents(22)
    assert doc.data == body and doc.file_name == "alice.json" and doc.caption == "your card"
    assert doc.document.mime_type == "application/json"
    assert server.messages(22) == []  # documents are listed separately


# ----------------------------------------------------------------------------- chat info


async def test_get_chat_member_statuses_and_get_chat(server):
    group = server.group_chat(-200, "Club")
    server.user(1, "Owner")
    server.set_member_status(group.id, 1, "creator")
    server.set_member_status(group.id, 2, "administrator")
    server.set_member_status(group.id, 3, "member")
    server.user(4, "Stranger")
    async with bot_only(build_app(server)) as bot:
        assert isinstance(await bot.get_chat_member(group.id, 1), ChatMemberOwner)
        admin = await bot.get_chat_member(group.id, 2)
        assert isinstance(admin, ChatMemberAdministrator) and admin.status == "administrator"
        member = await bot.get_chat_member(group.id, 3)
        assert isinstance(member, ChatMemberMember) and member.user.id == 3
        assert (await bot.get_chat_member(group.id, 4)).status == "left"
        with pytest.raises(BadRequest, match="^User not found$"):
            await bot.get_chat_member(group.id, 999)
        server.set_member_status(group.id, 3, "administrator")
        assert (await bot.get_chat_member(group.id, 3)).status == "administrator"
        info = await bot.get_chat(group.id)
        assert (info.id, info.type, info.title) == (-200, "group", "Club")
        forum = server.group_chat(-1002, "Forum", is_forum=True)
        finfo = await bot.get_chat(forum.id)
        assert finfo.type == "supergroup" and finfo.is_forum


async def test_set_my_commands_stored_per_language_and_scope(server):
    from telegram import BotCommand, BotCommandScopeAllGroupChats

    async with bot_only(build_app(server)) as bot:
        await bot.set_my_commands([BotCommand("help", "Show help"), BotCommand("reset", "Reset")])
        await bot.set_my_commands([BotCommand("help", "显示帮助")], language_code="zh")
        await bot.set_my_commands([BotCommand("char", "Pick")], scope=BotCommandScopeAllGroupChats())
        assert [c.command for c in await bot.get_my_commands()] == ["help", "reset"]
        zh = await bot.get_my_commands(language_code="zh")
        assert [(c.command, c.description) for c in zh] == [("help", "显示帮助")]
        assert await bot.get_my_commands(language_code="de") == ()
        with pytest.raises(BadRequest, match="Bot_command_invalid"):
            await bot.set_my_commands([BotCommand("Help", "upper case")])
    assert server.commands_for("zh") == [{"command": "help", "description": "显示帮助"}]
    assert server.commands_for("", "all_group_chats") == [{"command": "char", "description": "Pick"}]
    assert server.commands[("default", "")][1] == {"command": "reset", "description": "Reset"}


# ----------------------------------------------------------------------------- load


async def test_many_chats_many_turns_through_one_application(server):
    chats, turns = 200, 5

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text("re: " + update.message.text)

    app = build_app(server, unlimited=True, concurrent=True, pool=16)
    app.add_handler(MessageHandler(filters.TEXT, echo))
    for cid in range(1, chats + 1):
        server.private_chat(cid)
    async with polling(app):
        t0 = time.monotonic()
        for turn in range(turns):
            for cid in range(1, chats + 1):
                server.send_text(cid, cid, f"turn {turn}")
            await server.wait_for(
                lambda: all(len(server.messages(c)) == turn + 1 for c in range(1, chats + 1)),
                timeout=20)
        elapsed = time.monotonic() - t0
    for cid in (1, chats):
        assert [m.text for m in server.messages(cid)] == [f"re: turn {t}" for t in range(turns)]
    polls = [c for c in server.calls_to("getUpdates") if c.response and c.response.get("result")]
    assert max(len(c.response["result"]) for c in polls) == 100  # batched
    assert elapsed < 15, f"{chats * turns} replies took {elapsed:.1f}s"
    print(f"\n{chats * turns} turns in {elapsed:.2f}s ({chats * turns / elapsed:.0f}/s)")


# ----------------------------------------------------------------------------- inline keyboards, callback queries


async def test_inline_keyboard_press_and_answer_callback_query(server):
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup
    from telegram.ext import CallbackQueryHandler

    pressed = []

    async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        pressed.append((query.data, query.from_user.id, query.message.message_id))
        await query.answer("only you see this", show_alert=True)
        await query.edit_message_text("edited", reply_markup=InlineKeyboardMarkup(
            [[InlineKeyboardButton("2/2", callback_data="next")]]))

    app = build_app(server, unlimited=True)
    app.add_handler(CallbackQueryHandler(on_press))
    chat = server.group_chat(-100, "Group")
    server.user(7, "Ann")
    async with polling(app):
        sent = await app.bot.send_message(-100, "hello", reply_markup=InlineKeyboardMarkup(
            [[InlineKeyboardButton("◀", callback_data="back"), InlineKeyboardButton("1/1", callback_data="label")]]))
        message = server.messages(chat)[0]
        assert server.button_labels(message) == ["◀", "1/1"]
        with pytest.raises(ValueError):  # a button the message does not show cannot be pressed
            server.press_button(chat, 7, message, "forged")
        query_id = server.press_button(chat, 7, message, "back")
        await server.wait_for(lambda: server.answer_to(query_id) and server.button_data(message) == ["next"])
        assert pressed == [("back", 7, sent.message_id)]
        assert server.answer_to(query_id)["text"] == "only you see this"
        assert server.answer_to(query_id)["show_alert"] is True
        assert message.text == "edited"
        with pytest.raises(BadRequest):  # answered once only
            await app.bot.answer_callback_query(query_id)
        with pytest.raises(BadRequest):  # Telegram's limit on callback data
            await app.bot.send_message(-100, "x", reply_markup=InlineKeyboardMarkup(
                [[InlineKeyboardButton("x", callback_data="x" * 65)]]))
        await app.bot.edit_message_text("plain", chat_id=-100, message_id=sent.message_id)
        assert server.buttons(message) == []  # an edit without reply_markup removes the keyboard
