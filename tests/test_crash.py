"""kill -9 at random moments of a live terminal chat: the database stays consistent, every committed turn stays,
and after each restart the conversation goes on exactly as an uninterrupted one would."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import sys

from bot.config import load_config
from bot.conversations import ChannelKey
from bot.store import Store
from tests.chat_helpers import reply, send
from tests.conftest import ROOT, write_config

KILLS = 20
MESSAGES = [f"message {i}: tell me more about the lighthouse" for i in range(60)]
# Idempotent, so every run starts with it (a kill may land before the first run set it); Mira is the default.
SETUP = "/params set temperature 0 max_tokens 40\n"


async def reference_replies(tmp_path, demo7, count: int) -> list[str]:
    from bot.app import build_app

    app = await build_app(load_config(write_config(tmp_path / "reference", demo7), env={}))
    await send(app, "/start", channel="terminal", platform="terminal", user="User")
    await send(app, "/params set temperature 0 max_tokens 40", channel="terminal", platform="terminal", user="User")
    out = [(await reply(app, m, channel="terminal", platform="terminal", user="User")).partition(": ")[2]
           for m in MESSAGES[:count]]
    await app.close()
    return out


async def committed(url: str) -> tuple[list[tuple[str, str]], list[str]]:
    store = Store(url)
    await store.open(migrate=False)
    try:
        problems = await store.check()
        channel = await store.get_or_create_channel("terminal", "terminal")
        turns = [(t.in_text, t.out_text) for t in await store.turns(channel.id)]
    finally:
        await store.close()
    return turns, problems


async def run_until_killed(config, script: str, rng: random.Random) -> str:
    """Start the chat, let it answer a few lines, kill -9 it at a random moment; returns its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(config), cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    proc.stdin.write(script.encode())
    await proc.stdin.drain()
    target = rng.randint(1, 4)  # kill during or just after the target-th reply
    output = b""
    try:
        while output.count(b"Mira: ") < target + 1:  # +1: the greeting line, or the first reply
            chunk = await asyncio.wait_for(proc.stdout.read(256), 120)
            if not chunk:
                break
            output += chunk
    except asyncio.TimeoutError:
        proc.kill()
        raise AssertionError(f"the chat stopped answering; its output so far: {output[-2000:]!r}") from None
    await asyncio.sleep(rng.random() * 0.05)
    proc.send_signal(signal.SIGKILL)
    output += await proc.stdout.read()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return output.decode("utf-8", "replace")


async def test_kill_9_loop_keeps_every_committed_turn_and_resumes_exactly(tmp_path, demo7):
    config = write_config(tmp_path, demo7)
    url = load_config(config, env={}).database.url
    expected = await reference_replies(tmp_path, demo7, len(MESSAGES))
    rng = random.Random(1234)
    done = 0
    for kill in range(KILLS):
        script = SETUP + "".join(m + "\n" for m in MESSAGES[done:])
        stdout = await run_until_killed(config, script, rng)
        turns, problems = await committed(url)
        assert problems == [], f"kill {kill}: {problems}"
        assert len(turns) >= done, f"kill {kill}: committed turns were lost"
        # Every turn committed so far, across all restarts, is what an uninterrupted chat says.
        assert [t[0] for t in turns] == MESSAGES[: len(turns)]
        assert [t[1] for t in turns] == expected[: len(turns)], f"kill {kill}: a reply differs after restart"
        # A reply is shown as final (its line ended) only after it was committed.
        tail = stdout.split("Set temperature = 0.0, max_tokens = 40.\n")[-1]
        new = len(turns) - done
        shown = lambda k: "".join(f"Mira: {text or '(the character said nothing)'}\n" for text in expected[done:done + k])
        assert not tail.startswith(shown(new + 1)), f"kill {kill}: a reply was shown as final before its commit"
        assert shown(new).startswith(tail) or tail.startswith(shown(new)), f"kill {kill}: the stream differs"
        done = len(turns)
    assert done >= 10, "the kills landed too early to test anything"
