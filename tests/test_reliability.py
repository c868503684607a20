"""Floods, fairness, model failures, shutdown, secrets, metrics and fuzzed input."""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from bot.commands import ENGINE_ERROR, ReplyStream, parse_command
from bot.commands.flood import RateLimiter
from bot.conversations import ChannelKey
from bot.cards.turns import sanitize_name, sanitize_text, turn
from bot.engine.tokenizer import world_tokenizer
from bot.logs import setup_logging
from tests.chat_helpers import finish, outputs, reply, send
from tests.conftest import ROOT, write_config


async def open_app(config):
    from bot.app import build_app
    from bot.config import load_config

    return await build_app(load_config(config, env={}))


async def test_a_flooding_channel_does_not_delay_another(app):
    for channel in ("flood", "calm", "solo"):
        await send(app, "/char use Mira", channel=channel)
        await send(app, "/params set temperature 0 max_tokens 24", channel=channel)
    expected = await reply(app, "hello", channel="solo")

    async def flooding(i: int):
        result = await send(app, f"spam {i}", channel="flood", user=f"u{i % 7}")
        return result, time.monotonic()

    flood = [asyncio.create_task(flooding(i)) for i in range(100)]
    await asyncio.sleep(0)  # the flood is queued first
    calm = await reply(app, "hello", channel="calm")
    calm_done = time.monotonic()
    finished = await asyncio.gather(*flood)
    results = [result for result, _ in finished]
    assert calm == expected
    # Not behind the flood's queue: the flood's active turn runs in the same steps as ours (continuous batching), so
    # the calm reply is out before the flood's second turn, which could only start after its first, is done.
    # (Order, not seconds: it holds on a machine of any speed, however loaded.)
    flood_done = sorted(done for result, done in finished if result and result[-1].startswith("Mira: "))
    assert app.conversations.channel_queue >= 1 and calm_done < flood_done[1]
    answered = [r for r in results if r and r[-1].startswith("Mira: ")]
    assert len(answered) == 1 + app.conversations.channel_queue  # the rest were refused, not queued forever
    notices = [r for r in results if r and "still answering" in r[0]]
    assert len(notices) == 1  # refused quietly after the first notice


def test_rate_limiter_allows_a_conversational_pace_and_stops_floods():
    now = [0.0]
    limiter = RateLimiter(per_minute=30, clock=lambda: now[0])
    assert all(limiter.allow("u") for _ in range(5))  # a short burst is fine
    assert not limiter.allow("u")
    assert limiter.should_notice("u") and not limiter.should_notice("u")  # one notice per cooldown
    now[0] += 2.0  # one message every 2 s keeps flowing
    assert limiter.allow("u") and not limiter.allow("u")
    now[0] += 31.0
    assert limiter.should_notice("u")
    assert limiter.allow("other")


async def test_flood_from_one_user_is_dropped_with_one_notice(tmp_path, demo7):
    config = write_config(tmp_path, demo7, settings={"limits.user_messages_per_minute": 30,
                                                       "limits.channel_messages_per_minute": 1000})
    app = await open_app(config)
    answers = [await send(app, "/params", channel="f", user="spammer") for _ in range(20)]
    assert sum(1 for a in answers if a and a[0].startswith("Sampling parameters")) == 5  # the burst
    assert [a for a in answers if a and "too fast" in a[0]] == [["You're sending messages too fast; please slow down."]]
    assert sum(1 for a in answers if a == []) == 14
    assert (await send(app, "/params", channel="f", user="someone-else"))[0].startswith("Sampling parameters")
    await app.close()


async def test_out_of_memory_is_retried_with_a_smaller_batch(app):
    for channel in ("o1", "o2", "ref"):
        await send(app, "/char use Mira", channel=channel)
        await send(app, "/params set temperature 0 max_tokens 20", channel=channel)
    expected = await reply(app, "hello", channel="ref")
    failures = []

    def fail_once(rows):
        if not failures and len(rows) == 2:
            failures.append(len(rows))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    app.engine.step_hook = fail_once
    a, b = await asyncio.gather(reply(app, "hello", channel="o1"), reply(app, "hello", channel="o2"))
    assert failures == [2] and a == b == expected  # both retried from their start: the same replies
    assert app.engine.batch_limit == 1


async def test_a_model_that_keeps_failing_answers_clearly_and_keeps_the_channel(app):
    await send(app, "/char use Mira", channel="bad")
    await send(app, "/params set temperature 0 max_tokens 20", channel="bad")
    first = await reply(app, "hello", channel="bad")
    head = (await app.conversations.channel(ChannelKey("test", "bad"))).head

    def always_fail(rows):
        raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED (simulated)")

    app.engine.step_hook = always_fail
    final = await finish((await outputs(app, "again", channel="bad"))[-1])
    assert final.outcome == ENGINE_ERROR  # what the user is shown: the model failed on this reply
    assert (await app.conversations.channel(ChannelKey("test", "bad"))).head == head
    app.engine.step_hook = None  # the engine serves on
    await send(app, "/undo", channel="bad")
    assert await reply(app, "hello", channel="bad") == first


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_metrics_endpoint(tmp_path, demo7):
    port = free_port()
    app = await open_app(write_config(tmp_path, demo7, settings={"metrics.port": port}))
    await send(app, "/char use Mira")
    await send(app, "/params set temperature 0 max_tokens 8")
    await reply(app, "hello")
    await send(app, "/params set temperature 99")
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    tokens = next(float(l.split()[-1]) for l in body.splitlines() if l.startswith("rwkvbot_tokens_generated_total"))
    assert tokens >= 1
    assert "rwkvbot_time_to_first_token_seconds_count 1.0" in body
    assert "rwkvbot_queue_depth 0.0" in body
    await app.close()


def test_tokens_never_reach_the_log(capsys):
    secret = "123456789:AAHsecretTELEGRAMtoken"
    setup_logging(secrets=[secret, "discord.secret.token"])
    log = logging.getLogger("bot.test")
    log.error("POST https://api.telegram.org/bot%s/getMe failed", secret)
    try:
        raise RuntimeError(f"connect to https://api.telegram.org/bot{secret}/getUpdates refused")
    except RuntimeError:
        log.exception("polling failed")
    err = capsys.readouterr().err
    assert secret not in err and err.count("[redacted]") == 2 and "polling failed" in err
    logging.getLogger().handlers.clear()


def test_sigterm_stops_the_chat_cleanly_mid_reply(tmp_path, demo7):
    config = write_config(tmp_path, demo7, settings={"limits.shutdown_seconds": 2.0})
    proc = subprocess.Popen([sys.executable, "-m", "bot", "chat", "--config", str(config)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("/params set temperature 1 mirostat_tau 0 top_p 1 max_tokens 2000\n" + "tell me\n" * 50)
    proc.stdin.flush()
    while "Mira: " not in (line := proc.stdout.readline()) or "door" in line:
        assert line, proc.stderr.read()[-2000:]
    time.sleep(0.2)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    assert proc.returncode == 0 and time.monotonic() - start < 15
    check = subprocess.run([sys.executable, "-m", "bot", "db", "check", "--config", str(config)], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0 and "database consistent" in check.stdout


# ----- fuzzing --------------------------------------------------------------------------------------------------
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
LINE_BREAKY = st.text(alphabet=st.sampled_from(list("ab :：\n\r\t\u2028\u2029\x0b\x0c\x85 ")), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, LINE_BREAKY))
def test_sanitized_text_never_ends_a_turn(text):
    clean = sanitize_text(text)
    assert "\n\n" not in clean and clean == clean.strip()
    name = sanitize_name(text)
    assert name and ":" not in name and "\n" not in name and len(name) <= 64
    if clean:
        fed = turn(name, clean)
        tok = world_tokenizer()
        stream = tok.decode_bytes(tok.encode(fed))  # what the model reads, token by token
        assert stream.count(b"\n\n") == 1 and stream.endswith(b"\n\n")


@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, st.from_regex(r"\A/[a-zA-Z@_]{0,12}( .{0,40})?\Z")))
def test_command_parsing_never_fails(text):
    parsed = parse_command(text)
    if parsed is not None:
        assert text.lstrip().startswith("/") and parsed.name == parsed.name.lower()


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, demo7):
    loop = asyncio.new_event_loop()
    app = loop.run_until_complete(open_app(write_config(tmp_path_factory.mktemp("fuzz"), demo7)))
    loop.run_until_complete(send(app, "/params set temperature 0 max_tokens 2", channel="fz"))
    yield loop, app
    loop.run_until_complete(app.close())
    loop.close()


COMMANDS = ["/params set", "/params", "/undo", "/char use", "/char show", "/char", "/debug", "/save", "/load",
            "/delsave", "/as", "/reply", "/edit", "/format", "/lang", "/export", "/nonsense", "/params set top_p"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(COMMANDS), st.text(max_size=40), st.booleans())
def test_fuzzed_commands_get_answers_not_crashes(fuzz_app, command, args, admin):
    loop, app = fuzz_app

    async def run():
        answer = await outputs(app, f"{command} {args}", channel="fz", admin=admin)
        for out in answer:
            if isinstance(out, ReplyStream):
                await finish(out)  # a cut-off reply is an answer too (its Final says why), never a crash
        return answer

    answer = loop.run_until_complete(run())
    assert isinstance(answer, list)
    assert loop.run_until_complete(app.store.check()) == []
