"""/regen and /edit replace the last exchange atomically: the old turn stays until the new one is committed, so a
cancel, an engine error, a failed commit or a kill -9 in between leaves the old exchange and its exact state."""
from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from bot.app import build_app
from bot.config import load_config
from bot.conversations import ChannelKey
from bot.engine.backend import states_equal
from bot.commands import ENGINE_ERROR, ReplyStream
from bot.engine.outputs import GenerationCancelled
from bot.i18n import t
from tests.chat_helpers import finish, head_state, outputs, pace, reply, send
from tests.conftest import ROOT, write_config

KEY = ChannelKey("test", "rg")


async def exchange(app) -> tuple[int, list[tuple], object]:
    """The channel's head, its turns as text, and the exact state at the head."""
    ch = await app.conversations.channel(KEY)
    turns = [(x.position, x.kind, x.in_text, x.out_text, x.fed) for x in await app.store.turns(ch.id)]
    return ch.head, turns, await head_state(app, "rg")


async def talked(app, max_tokens: int = 16):
    await send(app, "/char use Mira", channel="rg")
    await send(app, f"/params set temperature 0 max_tokens {max_tokens}", channel="rg")
    await reply(app, "first line", channel="rg")
    await reply(app, "second line", channel="rg")
    app.conversations._hot.clear()  # the state at the head comes back from the database, as after a restart
    return await exchange(app)


def same(a, b) -> None:
    assert a[0] == b[0] and a[1] == b[1] and states_equal(a[2], b[2])


async def test_a_cancelled_regen_keeps_the_old_exchange(app):
    before = await talked(app, max_tokens=400)
    pace(app.engine, 0.005)
    stream = await app.conversations.regen(KEY)
    async for _ in stream:  # the new reply is being written...
        break
    stream.cancel()
    with pytest.raises(GenerationCancelled):
        await stream.result()
    app.engine.step_hook = None
    same(await exchange(app), before)
    assert await app.store.check() == []


async def test_an_engine_error_during_regen_or_edit_keeps_the_old_exchange(app):
    before = await talked(app)

    def always_fail(rows):
        raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED (simulated)")

    app.engine.step_hook = always_fail
    [stream] = [o for o in await outputs(app, "/regen", channel="rg") if isinstance(o, ReplyStream)]
    assert (await finish(stream)).outcome == ENGINE_ERROR
    same(await exchange(app), before)
    assert await send(app, "/edit A different reply.", channel="rg") == [t("engine_error")]
    app.engine.step_hook = None
    same(await exchange(app), before)
    # and the channel goes on: the regenerated reply is the one greedy decoding gives
    regenerated = await reply(app, "/regen", channel="rg")
    assert regenerated == f"Mira: {before[1][-1][3]}"


async def test_a_failed_commit_keeps_the_old_exchange(app):
    before = await talked(app)
    real = app.store.commit_turn, app.store.add_alternative

    async def refuse(*args, **kwargs):
        raise OSError("database is locked (simulated)")

    app.store.commit_turn = app.store.add_alternative = refuse  # /edit commits a turn, /regen an alternative
    [stream] = [o for o in await outputs(app, "/regen", channel="rg") if isinstance(o, ReplyStream)]
    # the adapters say "please try again", as for a failed model step
    assert (await finish(stream)).outcome == ENGINE_ERROR
    same(await exchange(app), before)
    assert await send(app, "/edit A different reply.", channel="rg") == [t("not_stored")]
    same(await exchange(app), before)
    app.store.commit_turn, app.store.add_alternative = real
    assert await send(app, "/edit A different reply.", channel="rg") == [t("edit_done")]
    head, turns, _ = await exchange(app)
    assert head == before[0] and turns[-1][3] == "A different reply." and turns[:-1] == before[1][:-1]


async def test_kill_9_during_a_regen_keeps_the_old_exchange(tmp_path, demo7):
    """The terminal chat regenerates a long reply and is killed while it writes: the old exchange is in the
    database, with the state that the stored turns give."""
    config = write_config(tmp_path, demo7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    # Sampling at temperature 5 on the demo model rarely ends a turn early: the regen writes for a while.
    script = ("/params set temperature 0 max_tokens 12\nhello there\n"
              "/params set temperature 5 top_p 1 mirostat_tau 0 presence_penalty 0 max_tokens 2000\n/regen\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(config), cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    proc.stdin.write(script.encode())
    await proc.stdin.drain()
    output = b""
    marker = b"max_tokens = 2000.\nMira: "
    try:
        while marker not in output or len(output.split(marker)[-1]) < 40:  # the new reply is streaming
            chunk = await asyncio.wait_for(proc.stdout.read(64), 120)
            assert chunk, f"the chat ended before the regen wrote anything: {output[-500:]!r}"
            output += chunk
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert b"\n" not in output.split(marker)[-1]  # killed mid-reply, not after it
    app = await build_app(load_config(config, env={}))
    try:
        conv = app.conversations
        ch = await conv.channel(ChannelKey("terminal", "terminal"))
        turns = await app.store.turns(ch.id)
        assert ch.head == 1 and [x.in_text for x in turns] == ["hello there"]
        assert f"Mira: {turns[0].out_text}\n".encode() in output  # the reply shown before the regen began
        assert await app.store.check() == []
        card = conv._card(ch)
        stored = (await conv._state_at(ch, card, 1)).state
        replayed = await conv._replay(ch, await conv._state_at(ch, card, 0), 1)
        assert states_equal(stored, replayed.state)
    finally:
        await app.close()
