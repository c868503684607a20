"""Cluster mode (issue 17): fronts and workers in separate processes over a real nats-server with JetStream, state
in a real PostgreSQL, the demo model. Nothing may be lost or done twice: through two fronts and three workers, when
a worker is killed mid-reply, when one is paused past its lease, and when the broker restarts.

Each test starts its own nats-server (the binary the machine has) on a free port, so stopping it stops nothing
else; without the binary the tests are skipped with that reason."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_config

NATS_SERVER = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 8
LEASE_SECONDS = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.directory / "nats.log", "ab")
        self.process = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js",
                                         "-sd", str(self.directory / "js")], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def nats(tmp_path):
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (apt install nats-server; .ci/run installs it)")
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Processes:
    """Workers and fronts as `python -m bot worker|front` subprocesses; logs in files, killed at the end."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, role: str, name: str, config: Path) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(ROOT), RWKV_BOT_CLUSTER_WORKER_ID=name, RWKV_BOT_CLUSTER_NAME=name)
        log = open(self.directory / f"{name}.log", "ab")
        self.running[name] = subprocess.Popen([sys.executable, "-m", "bot", role, "--config", str(config)],
                                              cwd=self.directory, env=env, stdout=log, stderr=log)
        return self.running[name]

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def signal(self, name: str, sig: int) -> None:
        self.running[name].send_signal(sig)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.running.values():
            try:
                process.wait(8)  # a clean stop is tested elsewhere; here only the next test's machine matters
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def cluster_config(directory: Path, model: Path, db: str, nats: NatsServer, name: str = "rwkv-bot.toml",
                   **settings) -> Path:
    values = {"cluster.nats_url": nats.url, "cluster.partitions": PARTITIONS, "cluster.lease_seconds": LEASE_SECONDS,
              "sampling.temperature": 0, "sampling.max_tokens": 8, "limits.shutdown_seconds": 5}
    values.update({key.replace("__", "."): value for key, value in settings.items()})
    sub = directory / name.replace(".toml", "")
    return write_config(sub, model, db=db, settings=values)


async def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def owners(nats: NatsServer) -> dict[int, str]:
    from bot.cluster.status import cluster_status

    status = await cluster_status(nats.url, PARTITIONS)
    return {p: w["worker"] for w in status["workers"] for p in w["partitions"]}


async def wait_served(nats: NatsServer, workers: set[str], timeout: float = 90) -> dict[int, str]:
    """Until every partition is held by one of `workers`, each holding its share."""
    async def spread():
        held = await owners(nats)
        counts = [list(held.values()).count(w) for w in workers]
        return held if len(held) == PARTITIONS and set(held.values()) <= workers and \
            max(counts) - min(counts) <= 1 else None
    return await wait_for(spread, timeout, f"partitions spread over {sorted(workers)}")


def channel_on(worker: str, held: dict[int, str], prefix: str, platform: str = "test") -> str:
    from bot.cluster.partitions import partition_of

    for i in range(10_000):
        channel = f"{prefix}{i}"
        if held[partition_of(platform, channel, PARTITIONS)] == worker:
            return channel
    raise AssertionError("no channel hashes to that worker")


@contextlib.asynccontextmanager
async def remote(nats: NatsServer, front: str = "tester"):
    from bot.cluster.front import RemoteCommands

    commands = RemoteCommands(nats_url=nats.url, front=front, partitions=PARTITIONS)
    await commands.start()
    try:
        yield commands
    finally:
        await commands.close()


def says(channel: str, text: str, message_id: str):
    from bot.commands import Incoming

    return Incoming(platform="test", channel_id=channel, user_id="alice", user_name="Alice", text=text,
                    message_id=message_id, is_admin=True)


async def finals_of(answer) -> list:
    """Each reply stream's events read to the end: the list of (partials seen, Final)."""
    from bot.commands import Final, Partial, ReplyStream

    out = []
    for output in answer.outputs:
        if isinstance(output, ReplyStream):
            partials, final = [], None
            async for event in output:
                if isinstance(event, Partial):
                    partials.append(event.text)
                elif isinstance(event, Final):
                    assert final is None, "one Final per stream"
                    final = event
            out.append((partials, final))
    return out


async def stored_turns(db: str, channel: str, platform: str = "test") -> list:
    from bot.store import Store

    store = Store(db)
    await store.open(migrate=False)
    try:
        row = await store.find_channel(platform, channel)
        return [] if row is None else await store.turns(row.id)
    finally:
        await store.close()


async def reference_replies(tmp_path: Path, model: Path, texts: list[str], **settings) -> list[str]:
    """What one process (no broker, SQLite) answers to `texts` in one channel: the exact replies to expect."""
    from bot.app import build_app
    from bot.config import load_config
    from tests.chat_helpers import reply

    values = {"sampling.temperature": 0, "sampling.max_tokens": 8}
    values.update({key.replace("__", "."): value for key, value in settings.items()})
    config = write_config(tmp_path / "reference", model, settings=values)
    app = await build_app(load_config(config, env={}))
    try:
        return [(await reply(app, text, channel="ref")).split(": ", 1)[1] for text in texts]
    finally:
        await app.close()


# ----- leases: the plan every worker follows ----------------------------------------------------------------
@pytest.mark.parametrize("partitions, workers", [(8, 1), (8, 3), (16, 4), (5, 2), (3, 5)])
def test_leases_converge_to_one_owner_each_and_an_even_spread(partitions, workers):
    """Workers applying `plan` in turn from any start (here: all on the first, then one joins at a time) end with
    every partition owned exactly once and shares within one of each other."""
    from bot.cluster.leases import plan

    import random

    rng = random.Random(partitions * 31 + workers)
    names = [f"w{i}" for i in range(workers)]
    owner: dict[int, str] = {}
    for joined in range(1, workers + 1):
        live = names[:joined]
        for _ in range(20 * partitions):
            me = rng.choice(live)
            take, give = plan(me, partitions, dict(owner), {w: 0 for w in live})
            assert not set(take) & set(owner), "only free partitions are taken"
            for p in give:
                assert owner[p] == me
                del owner[p]
            for p in take:
                owner[p] = me
        counts = [list(owner.values()).count(w) for w in live]
        assert sorted(owner) == list(range(partitions))
        assert max(counts) - min(counts) <= 1, counts


def test_a_free_partition_goes_to_the_least_loaded_worker():
    from bot.cluster.leases import plan

    owned = {0: "a", 1: "b"}  # partitions 2 and 3 are free; a is busier
    assert plan("a", 4, owned, {"a": 9, "b": 1}) == ([], [])
    assert plan("b", 4, owned, {"a": 9, "b": 1}) == ([2], [])


# ----- fences: the database refuses a writer whose lease was taken over ----------------------------------------
async def test_a_write_under_a_superseded_lease_is_refused_and_leaves_nothing(postgres_url):
    from bot.cluster.fences import FenceLost, FencedStore, serving

    refused = []
    old, new = FencedStore(postgres_url, on_lost=refused.append), FencedStore(postgres_url)
    await old.open()
    await new.open()
    try:
        assert await old.take_fence(3, revision=10, worker="old")
        channel = await old.get_or_create_channel("test", "fenced", {"user_label": "User"})
        serving.set((3, 10))
        await old.set_title("test", "fenced", "written under the lease")
        assert await new.take_fence(3, revision=17, worker="new")
        assert not await old.take_fence(3, revision=12, worker="old"), "an older lease never re-fences"
        with pytest.raises(FenceLost):
            await old.set_title("test", "fenced", "written after losing it")
        assert refused == [3]
        serving.set((3, 17))
        await new.record_handled("k", {"answer": None})
        serving.set(None)
        assert (await new.get_channel(channel.id)).title == "written under the lease"
        assert await new.handled("k") == {"answer": None}
        assert (await new.fences())[3] == (17, "new")
    finally:
        serving.set(None)
        await old.close()
        await new.close()


# ----- the whole cluster ------------------------------------------------------------------------------------
async def test_two_fronts_three_workers_100_channels_5_turns_nothing_lost_or_doubled(tmp_path, demo7, nats,
                                                                                      processes, postgres_url):
    """Two Telegram fronts (real PTB, each polling its own fake Bot API) and three workers: every turn is stored
    once, in order, and every reply reaches its chat."""
    from bot.i18n import t
    from tests.fake_telegram import FakeTelegram

    channels, turns = 100, 5
    worker_config = cluster_config(tmp_path, demo7, postgres_url, nats, "worker.toml", model__backend="batched",
                                   model__max_batch=64)
    for name in ("w1", "w2", "w3"):
        processes.start("worker", name, worker_config)
    await wait_served(nats, {"w1", "w2", "w3"})
    async with FakeTelegram(bot_token="111:AAA", bot_username="one") as one, \
            FakeTelegram(bot_token="222:BBB", bot_username="two") as two:
        # f1 long-polls its Bot API; f2 takes updates on its webhook, as fronts behind a load balancer do.
        port = free_port()
        fronts = {"f1": (one, "111:AAA", {}),
                  "f2": (two, "222:BBB", {"telegram__webhook_url": f"http://127.0.0.1:{port}/hook",
                                          "telegram__webhook_port": port, "telegram__webhook_secret": "s3cret-Token"})}
        for name, (server, token, mode) in fronts.items():
            config = cluster_config(tmp_path, demo7, postgres_url, nats, f"{name}.toml",
                                    telegram__token=token, telegram__base_url=server.base_url,
                                    telegram__base_file_url=server.base_file_url, telegram__requests_per_second=0,
                                    telegram__group_requests_per_minute=0, telegram__edit_interval=0.5, **mode)
            processes.start("front", name, config)
        chats = [(server, server.private_chat(5000 + i, f"User{i}"))
                 for i in range(channels) for server in [one if i % 2 else two]]
        await wait_for(lambda: _receiving(one, two), 60, "f1 polling and f2's webhook set")

        async def converse(server, chat) -> None:
            for turn in range(turns):
                server.send_text(chat, chat.id, f"message {turn} from {chat.id}")
                await server.wait_for(lambda: len(server.messages(chat)) > turn, timeout=180)

        await asyncio.gather(*(converse(server, chat) for server, chat in chats))
        problems = []
        for server, chat in chats:
            # A reply's message shows before its turn is committed: the last commits may still be on their way.
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: _has_turns(postgres_url, str(chat.id), turns), 60, f"chat {chat.id}'s turns")
            stored = await stored_turns(postgres_url, str(chat.id), "telegram")
            if [turn.in_text for turn in stored] != [f"message {i} from {chat.id}" for i in range(turns)]:
                problems.append((chat.id, "turns", [turn.in_text for turn in stored]))
                continue
            wanted = [turn.out_text.strip() or t("empty_reply") for turn in stored]
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):  # the last edit may still be on its way
                await server.wait_for(lambda: [m.text for m in server.messages(chat)] == wanted, timeout=30)
            shown = [m.text for m in server.messages(chat)]
            if shown != wanted:
                problems.append((chat.id, "replies", shown, wanted))
        assert not problems, problems[:3]
    served = {name: "serving partition" in processes.log(name) for name in ("w1", "w2", "w3")}
    assert all(served.values()), served


async def _has_turns(db: str, channel: str, count: int) -> bool:
    return len(await stored_turns(db, channel, "telegram")) >= count


async def _receiving(polled, hooked) -> bool:
    return bool(polled.calls_to("getUpdates")) and bool(hooked.webhook_url)


PACED = {"model__step_seconds": 0.2, "sampling__max_tokens": 24}  # a reply takes seconds: it can be interrupted


async def two_paced_workers(tmp_path, demo7, postgres_url, nats, processes) -> dict[int, str]:
    """Workers w1 and w2 on a model paced like a big one, sharing the partitions; who holds which."""
    config = cluster_config(tmp_path, demo7, postgres_url, nats, "worker.toml", **PACED)
    processes.start("worker", "w1", config)
    processes.start("worker", "w2", config)
    return await wait_served(nats, {"w1", "w2"})


async def test_kill_9_mid_reply_another_worker_finishes_it_once(tmp_path, demo7, nats, processes, postgres_url):
    """A worker killed mid-reply: its partitions move to the other within 10 s, the interrupted turn is redone
    from the last committed state (the reply equals one process's, with no broker), and it is stored once."""
    channel = channel_on("w1", await two_paced_workers(tmp_path, demo7, postgres_url, nats, processes), "kill")
    texts = ["hello there", "tell me a story"]
    expected = await reference_replies(tmp_path, demo7, texts, **dict(PACED, model__step_seconds=0))
    async with remote(nats) as commands:
        [(_, first)] = await finals_of(await commands.handle(says(channel, texts[0], "m1")))
        assert first.outcome == "done" and first.text == expected[0]
        answer = await commands.handle(says(channel, texts[1], "m2"))
        [stream] = [o for o in answer.outputs if hasattr(o, "speaker")]
        events = aiter(stream)
        partial = await anext(events)  # the reply is being written by w1
        assert type(partial).__name__ == "Partial", partial
        processes.signal("w1", signal.SIGKILL)
        killed = time.monotonic()
        moved = asyncio.create_task(_seconds_until(lambda: _all_on(nats, "w2"), 60, "w2 holding every partition"))
        rest = [event async for event in events]
        finals = [e for e in rest if type(e).__name__ == "Final"]
        assert len(finals) == 1 and finals[0].outcome == "done", rest[-1:]
        assert finals[0].text == expected[1], (partial, finals[0].text)
        took_over = await moved - killed
        assert took_over <= 10, f"the partitions moved {took_over:.1f} s after the kill"
    stored = await stored_turns(postgres_url, channel)
    assert [(t.in_text, t.out_text) for t in stored] == list(zip(texts, expected))


async def _seconds_until(predicate, timeout: float, what: str) -> float:
    """time.monotonic() when `predicate` first held."""
    await wait_for(predicate, timeout, what)
    return time.monotonic()


async def _all_on(nats: NatsServer, worker: str) -> bool:
    held = await owners(nats)
    return len(held) == PARTITIONS and set(held.values()) == {worker}


async def test_a_worker_paused_past_its_lease_never_commits_beside_its_successor(tmp_path, demo7, nats, processes,
                                                                                  postgres_url):
    """SIGSTOP a worker mid-reply until its lease expires and the other worker has redone and committed the turn;
    SIGCONT it: it finds its lease (and its fence) gone and commits nothing; the turn is stored once."""
    channel = channel_on("w1", await two_paced_workers(tmp_path, demo7, postgres_url, nats, processes), "pause")
    async with remote(nats) as commands:
        answer = await commands.handle(says(channel, "hello there", "m1"))
        [stream] = [o for o in answer.outputs if hasattr(o, "speaker")]
        events = aiter(stream)
        await anext(events)
        processes.signal("w1", signal.SIGSTOP)
        rest = [event async for event in events]
        assert [type(e).__name__ for e in rest][-1] == "Final" and rest[-1].outcome == "done"
        assert (await stored_turns(postgres_url, channel))[0].in_text == "hello there"
        processes.signal("w1", signal.SIGCONT)
        await wait_for(lambda: _logged(processes, "w1", "lost partition"), 20, "w1 noticing its lost lease")
        await asyncio.sleep(LEASE_SECONDS)  # time for a commit it would still attempt
        # It is still a worker of the cluster: it takes a share again and answers in its new partitions.
        held = await wait_served(nats, {"w1", "w2"})
        other = channel_on("w1", held, "again")
        [(_, final)] = await finals_of(await commands.handle(says(other, "hi", "m9")))
        assert final.outcome == "done"
    stored = await stored_turns(postgres_url, channel)
    assert [t.in_text for t in stored] == ["hello there"], [t.in_text for t in stored]


async def _logged(processes: Processes, name: str, text: str) -> bool:
    return text in processes.log(name)


async def test_broker_restart_loses_nothing_acknowledged(tmp_path, demo7, nats, processes, postgres_url):
    """Messages the broker acknowledged, then a broker restart while they wait or are being answered: the front and
    the worker reconnect, every message is answered and stored once, and the channel goes on."""
    config = cluster_config(tmp_path, demo7, postgres_url, nats, "worker.toml", model__step_seconds=0.05)
    processes.start("worker", "w1", config)
    await wait_served(nats, {"w1"})
    channels = [f"restart{i}" for i in range(6)]
    async with remote(nats) as commands:
        asking = [asyncio.create_task(commands.handle(says(c, "before the restart", f"{c}-1"))) for c in channels]
        await asyncio.sleep(0.5)  # published and acknowledged; some being answered
        nats.stop()
        await asyncio.sleep(1.0)
        nats.start()
        answers = await asyncio.wait_for(asyncio.gather(*asking), 120)
        for answer in answers:
            [(_, final)] = await finals_of(answer)
            assert final.outcome == "done"
        after = await asyncio.wait_for(commands.handle(says(channels[0], "after the restart", "after-1")), 60)
        [(_, final)] = await finals_of(after)
        assert final.outcome == "done"
    for channel in channels:
        stored = [t.in_text for t in await stored_turns(postgres_url, channel)]
        assert stored == (["before the restart", "after the restart"] if channel == channels[0]
                          else ["before the restart"]), (channel, stored)


async def test_a_redelivered_message_is_answered_from_its_committed_turn(tmp_path, demo7, nats, processes,
                                                                          postgres_url):
    """The platform sends a message again with the same id (a webhook retry): the broker drops it, nothing is
    stored twice, and the first answer stands."""
    config = cluster_config(tmp_path, demo7, postgres_url, nats, "worker.toml")
    processes.start("worker", "w1", config)
    await wait_served(nats, {"w1"})
    async with remote(nats) as commands:
        [(_, final)] = await finals_of(await commands.handle(says("dup", "hello", "m1")))
        again = await commands.handle(says("dup", "hello", "m1"))
        assert again.outputs == [] and not again.answered
    assert [t.in_text for t in await stored_turns(postgres_url, "dup")] == ["hello"]
    from tests.conftest import run_cli

    shown = run_cli("cluster", "status", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("w1 "))
    assert row.split()[1] == ",".join(map(str, range(PARTITIONS))), shown.stdout
    assert "events waiting: none" in shown.stdout and "disconnected" not in shown.stderr, shown


def test_cluster_commands_say_what_is_wrong_in_one_line(tmp_path, demo7):
    """A front with no platform, a bad worker id, an unreachable broker: one line each, exit code 2."""
    from tests.conftest import run_cli

    config = write_config(tmp_path, demo7, settings={"cluster.nats_url": f"nats://127.0.0.1:{free_port()}"})
    result = run_cli("front", "--config", str(config))
    assert result.returncode == 2 and "telegram.token or discord.token" in result.stderr, result.stderr
    result = run_cli("worker", "--config", str(config), env={"RWKV_BOT_CLUSTER_WORKER_ID": "bad id!"})
    assert result.returncode == 2 and "cluster.worker_id" in result.stderr, result.stderr
    result = run_cli("cluster", "status", "--config", str(config))
    assert result.returncode == 2 and "broker" in result.stderr and len(result.stderr.strip().splitlines()) == 1, \
        result.stderr


async def test_a_discord_front_serves_through_a_worker(tmp_path, demo7, nats, processes, postgres_url):
    """The real discord.py adapter on a front (in this process, against the fake gateway), a worker in another:
    a DM and a mention in a server channel are answered, each stored once."""
    from bot.cluster.front import run_front
    from bot.config import load_config
    from tests.fake_discord import FakeDiscord
    from tests.test_discord import ALICE, BOB, DM, GENERAL, GUILD

    worker = cluster_config(tmp_path, demo7, postgres_url, nats, "worker.toml")
    processes.start("worker", "w1", worker)
    await wait_served(nats, {"w1"})
    async with FakeDiscord(bot_name="RWKV Bot") as fake:
        fake.add_guild(GUILD, "Test server", owner_id=ALICE, locale="en-US")
        fake.add_user(ALICE, "alice", global_name="Alice")
        fake.add_user(BOB, "bob", global_name="Bobby")
        fake.add_member(GUILD, ALICE)
        fake.add_member(GUILD, BOB)
        fake.add_channel(GUILD, GENERAL, "general")
        fake.add_channel(None, DM, type="dm", recipient_id=BOB)
        with fake.patched():
            front = cluster_config(tmp_path, demo7, postgres_url, nats, "front.toml", discord__token=fake.token,
                                   cluster__name="df1")
            stop, ready = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(run_front(load_config(front, env={}), stop=stop, ready=ready))
            try:
                await asyncio.wait_for(ready.wait(), 30)
                await fake.wait_for(lambda: fake.connected and ("send", 0, "GUILD_CREATE") in fake.gateway_log, 30)
                await asyncio.sleep(3)  # discord.py holds events until its guilds have streamed in
                await fake.send_message(DM, BOB, "hello from a direct message")
                await fake.wait_for(lambda: fake.bot_messages(DM), 60)
                await fake.send_message(GENERAL, ALICE, f"<@{fake.bot_user_id}> hello from the server")
                await fake.wait_for(lambda: fake.bot_messages(GENERAL), 60)
                dm = await wait_for(lambda: _turns_in(postgres_url, str(DM)), 30, "the DM's turn")
                channel = await wait_for(lambda: _turns_in(postgres_url, str(GENERAL)), 30, "the channel's turn")
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    assert [t.in_text for t in dm] == ["hello from a direct message"]
    assert [t.in_text for t in channel] == ["hello from the server"]
    assert fake.bot_messages(DM)[-1].content.endswith(dm[0].out_text.strip())  # after "**Mira**: " in a DM


async def _turns_in(db: str, channel: str):
    return await stored_turns(db, channel, "discord")
