"""`rwkv-bot bench-cluster`: replies per second with 1, 2, 4 ... workers of a simulated model, over a real broker.

Each worker count gets a fresh database and its own `rwkv-bot worker --simulate` processes; this process is the
front (`RemoteCommands`), with C channels that each send their next message once the previous reply's Final came.
The simulated model costs a fixed time per step whatever the batch (as a GPU step does), so a worker is
model-bound and the ratio to one worker shows what the cluster adds or loses: the broker, the leases, the shared
database. `rc.broker_seconds` is the time the broker added to each reply (the front's wait less the worker's).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from bot.engine.backend import ModelInfo, State

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # what `python -m bot` needs on the path
VOCAB = 65536  # the World tokenizer's
N_EMBD = HEAD_SIZE = 64
FLOOR = -30.0  # every token but the ordinary words: never sampled in practice, at any temperature
FAVOURED = 8.0  # added to the one word the state and tokens pick: the greedy choice
MAX_TOKENS = 8  # reply length: short, so a measurement is many replies
PARTITIONS = 16
SPREAD_STABLE_POLLS = 2  # the partition spread must hold this many polls in a row (a hand-over may be under way)
POLL_SECONDS = 0.5
READY_SECONDS = 90.0  # workers start (imports, migrations, the tokenizer) and share the partitions in this long
TURN_SECONDS = 120.0  # a reply not finished in this long counts as lost
STOP_GRACE_SECONDS = 10.0  # beyond limits.shutdown_seconds, before a worker that ignores SIGTERM is killed
NATS_START_SECONDS = 10.0
RATIO_TARGET = 0.9  # replies/s with N workers >= this x N x one worker's
BROKER_P95_TARGET_MS = 5.0
LOG_TAIL_LINES = 20
LAG_SAMPLE_SECONDS = 0.005
QUIET_TURNS = 20  # turns of one channel alone after each load run: the broker's latency without queueing


class BenchError(Exception):
    """The benchmark cannot go on; one line."""


# ----- the simulated model ----------------------------------------------------------------------------------------
class SimulatedBackend:
    """A `Backend` with no model: a fixed time per forward call, whatever the number of rows, and deterministic
    logits that pick one ordinary word (a lowercase token with a leading space) from a hash of everything fed, so
    a reply never ends early (no turn-end token, no token 0) and runs to max_tokens.

    The state is RWKV-7-shaped (1 layer, n_embd 64, one head of 64) so it is stored and loaded like a real one;
    its first value carries the running hash of the tokens fed, its last the count."""

    def __init__(self, steps_per_second: float):
        if not steps_per_second > 0 or math.isinf(steps_per_second):
            raise ValueError("steps_per_second must be a positive number")
        from bot.engine.tokenizer import world_tokenizer

        self.step_seconds = 1.0 / steps_per_second
        self.info = ModelInfo(version=7, n_layer=1, n_embd=N_EMBD, n_head=N_EMBD // HEAD_SIZE, head_size=HEAD_SIZE,
                              vocab_size=VOCAB, path="simulated", strategy="cpu fp32", backend="simulated",
                              file_id="simulated")
        self.words = word_tokens(world_tokenizer())
        scores = torch.rand(len(self.words), generator=torch.Generator().manual_seed(0)) * 2.0
        self._base = torch.full((VOCAB,), FLOOR, dtype=torch.float32)
        self._base[self.words] = scores
        self._slots: dict[int, State] = {}
        self.steps = 0

    def zero_state(self) -> State:
        return [torch.zeros(N_EMBD), torch.zeros(1, HEAD_SIZE, HEAD_SIZE), torch.zeros(N_EMBD)]

    def load(self, slot: int, state: State) -> None:
        self._slots[slot] = [t.detach().clone() for t in state]

    def forward(self, rows: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        started = time.perf_counter()
        logits = self._base.repeat(len(rows), 1)
        for i, (slot, tokens) in enumerate(rows):
            state = self._slots[slot]
            mixed = zlib.crc32(array("I", tokens).tobytes(), int(state[0][0])) & 0xFFFFFF  # exact in float32
            state[0][0] = float(mixed)
            state[2][-1] = float((int(state[2][-1]) + len(tokens)) & 0xFFFFFF)
            logits[i, self.words[mixed % len(self.words)]] += FAVOURED
        self.steps += 1
        time.sleep(max(0.0, self.step_seconds - (time.perf_counter() - started)))
        return logits

    def save(self, slot: int) -> State:
        return [t.clone() for t in self._slots[slot]]

    def release(self, slot: int) -> None:
        self._slots.pop(slot, None)


def word_tokens(tokenizer) -> torch.Tensor:
    """Ids of the tokens that are a space and 3-8 lowercase ASCII letters: text that ends no turn and no name."""
    ids = sorted(i for i, b in tokenizer.id_to_bytes.items()
                 if 4 <= len(b) <= 9 and b[:1] == b" " and b[1:].isalpha() and b[1:].islower() and b[1:].isascii())
    return torch.tensor(ids, dtype=torch.long)


# ----- the command ------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    workers: list[int]
    channels: int
    turns: int
    steps_per_second: float
    max_batch: int
    partitions: int
    database: str
    nats_server: str
    logs: str | None = None  # keep the logs (and SQLite files) here instead of a temporary directory


def bench_cluster_command(args: argparse.Namespace) -> int:
    from bot.logs import setup_logging

    try:
        settings = _settings(args)
    except BenchError as exc:
        print(f"rwkv-bot: bench-cluster: {exc}", file=sys.stderr)
        return 2
    setup_logging(logging.WARNING)
    # cluster_status's connection says "disconnected; reconnecting" when it closes: noise at every poll here.
    logging.getLogger("bot.cluster.broker").setLevel(logging.ERROR)
    try:
        rows = asyncio.run(run_bench(settings))
    except BenchError as exc:
        print(f"rwkv-bot: bench-cluster: {exc}", file=sys.stderr)
        return 1
    result = {"settings": {"workers": settings.workers, "channels": settings.channels, "turns": settings.turns,
                           "steps_per_second": settings.steps_per_second, "max_batch": settings.max_batch,
                           "partitions": settings.partitions, "max_tokens": MAX_TOKENS,
                           "database": settings.database.split(":", 1)[0]},
              "targets": {"ratio": RATIO_TARGET, "broker_p95_ms": BROKER_P95_TARGET_MS}, "rows": rows}
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if any(row["lost"] for row in rows) else 0


def _settings(args: argparse.Namespace) -> Settings:
    from bot.config import ConfigError, load_config
    from bot.libraries import MissingLibrary, import_optional

    try:
        workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        raise BenchError(f"--workers {args.workers!r}: use comma-separated counts, e.g. 1,2,4") from None
    if not workers or min(workers) < 1:
        raise BenchError(f"--workers {args.workers!r}: each count must be 1 or more")
    for name in ("channels", "turns", "max_batch", "partitions"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be 1 or more")
    if not args.steps_per_second > 0 or math.isinf(args.steps_per_second):
        raise BenchError("--steps-per-second must be a positive number")
    if max(workers) > args.partitions:
        raise BenchError(f"--workers {max(workers)} exceeds --partitions {args.partitions}: some would idle")
    nats_server = args.nats_server or shutil.which("nats-server")
    if not nats_server or not os.access(nats_server, os.X_OK):
        raise BenchError(f"needs the nats-server binary ({args.nats_server or 'not on PATH'}): install it "
                         "(https://nats.io/download) or name it with --nats-server PATH")
    try:
        import_optional("nats", "rwkv-bot bench-cluster")
        database = args.database or load_config(args.config).database.url
        if database.startswith("postgresql"):
            import_optional("asyncpg", "bench-cluster --database postgresql+asyncpg://...")
    except (ConfigError, MissingLibrary) as exc:
        raise BenchError(str(exc)) from None
    if not database.startswith(("postgresql+asyncpg://", "sqlite")):
        raise BenchError(f"--database {database.split(':', 1)[0]}: use postgresql+asyncpg://... (or sqlite)")
    if database.startswith("sqlite"):
        print("rwkv-bot: bench-cluster: no PostgreSQL URL (--database or database.url): a temporary SQLite file "
              "per run, which serializes the workers' writes; the ratios understate a real cluster",
              file=sys.stderr)
    return Settings(workers, args.channels, args.turns, args.steps_per_second, args.max_batch, args.partitions,
                    database, nats_server, getattr(args, "logs", None))


async def run_bench(settings: Settings) -> list[dict]:
    with contextlib.ExitStack() as stack:
        if settings.logs:
            work = Path(settings.logs) / f"bench-cluster-{time.strftime('%Y%m%d-%H%M%S')}"
            work.mkdir(parents=True)
            print(f"bench-cluster: logs in {work}", file=sys.stderr)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rwkv-bench-cluster-")))
        async with nats_server(settings.nats_server, work / "nats") as nats_url:
            rows = []
            for n in settings.workers:
                print(f"bench-cluster: {n} worker(s)...", file=sys.stderr, flush=True)
                rows.append(await measure(settings, n, nats_url, work / f"workers-{n}"))
            base = next((r["replies_per_s"] for r in rows if r["workers"] == 1), None)
            for row in rows:
                row["ratio"] = round(row["replies_per_s"] / base, 3) if base else None
                row["ratio_ok"] = row["ratio"] is not None and row["ratio"] >= RATIO_TARGET * row["workers"]
                row["broker_ok"] = row["broker_p95_ms"] <= BROKER_P95_TARGET_MS
            return rows


@contextlib.asynccontextmanager
async def nats_server(binary: str, directory: Path):
    """A JetStream server of our own on a free loopback port, its store in `directory`; stopped afterwards."""
    directory.mkdir(parents=True)
    port = free_port()
    logfile = (directory / "nats.log").open("wb")
    process = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(directory / "store")],
                               stdout=logfile, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + NATS_START_SECONDS
        while True:
            if process.poll() is not None:
                raise BenchError(f"nats-server exited ({process.returncode}): {tail(directory / 'nats.log', 1)}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"nats-server did not listen on port {port} in {NATS_START_SECONDS:g}s")
                await asyncio.sleep(0.1)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(process, STOP_GRACE_SECONDS)
        logfile.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def fresh_database(url: str, directory: Path):
    """An empty database of our own, migrated (once here, not raced by N workers); dropped afterwards.
    PostgreSQL: a new database on the server `url` names; SQLite: a file in `directory`."""
    from bot.store import Store

    if url.startswith("sqlite"):
        fresh = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        await _prepare(Store, fresh, directory)
        yield fresh
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    server = make_url(url)
    name = f"rwkvbench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(server.set(drivername="postgresql").render_as_string(hide_password=False),
                                      timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot connect to PostgreSQL at {server.host}:{server.port}: {exc}") from None
    try:
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.PostgresError as exc:
            raise BenchError(f"cannot create a database on {server.host}:{server.port}: {exc}") from None
        fresh = server.set(database=name).render_as_string(hide_password=False)
        await _prepare(Store, fresh, directory)
        yield fresh
    finally:
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _prepare(store_class, url: str, directory: Path) -> None:
    """Migrate, and list the sample cards, as a first start does, once here: what is measured is serving, not N
    workers' first start (on SQLite, migrations of several processes at once are not serialized; PostgreSQL's are,
    by an advisory lock)."""
    from bot.cards import sample_cards_dir
    from bot.conversations.characters import Library

    (directory / "characters").mkdir(exist_ok=True)
    store = store_class(url)
    await store.open()
    try:
        await Library(store, str(directory / "characters"), "Mira", samples_dir=sample_cards_dir()).load()
    finally:
        await store.close()


def write_worker_config(directory: Path, settings: Settings, database: str, nats_url: str) -> Path:
    """The sample cards (an empty characters/ of our own beside them), short greedy replies, few slots."""
    (directory / "characters").mkdir(exist_ok=True)
    sections = {
        "model": {"max_batch": settings.max_batch},  # few slots: each worker is bound by its model, as on a GPU
        "database": {"url": database},
        "characters": {"dir": str(directory / "characters"), "default": "Mira"},
        "sampling": {"max_tokens": MAX_TOKENS, "temperature": 0},
        # The bench sends as fast as replies come; flood control has its own tests.
        "limits": {"user_messages_per_minute": 1_000_000, "channel_messages_per_minute": 1_000_000},
        "cluster": {"nats_url": nats_url, "partitions": settings.partitions, "lease_seconds": 6.0},
    }
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = directory / "worker.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_worker(config: Path, worker_id: str, steps_per_second: float, directory: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}  # the config says it all
    env["RWKV_BOT_CLUSTER_WORKER_ID"] = worker_id
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    logfile = (directory / f"{worker_id}.log").open("wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "bot", "worker", "--config", str(config),
                                 "--simulate", repr(steps_per_second)],
                                cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=logfile,
                                stderr=subprocess.STDOUT)
    finally:
        logfile.close()  # the child has its own descriptor


def stop_process(process: subprocess.Popen, grace: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def spread_ok(status: dict, ids: list[str], partitions: int) -> bool:
    """Every partition held, by our workers only, each holding partitions/workers +- 1."""
    held = {w["worker"]: len(w["partitions"]) for w in status["workers"]}
    share = partitions / len(ids)
    return (not status["unserved"] and set(held) == set(ids)
            and all(abs(held[w] - share) <= 1 for w in ids) and sum(held.values()) == partitions)


async def wait_for_spread(nats_url: str, settings: Settings, processes: dict[str, subprocess.Popen],
                          directory: Path) -> dict:
    from bot.cluster.status import cluster_status

    deadline = time.monotonic() + READY_SECONDS
    stable, status = 0, {}
    while stable < SPREAD_STABLE_POLLS:
        for worker_id, process in processes.items():
            if process.poll() is not None:
                raise BenchError(f"worker {worker_id} exited ({process.returncode}); its log ends:\n"
                                 + tail(directory / f"{worker_id}.log"))
        if time.monotonic() > deadline:
            raise BenchError(f"the partitions were not spread over {len(processes)} workers in "
                             f"{READY_SECONDS:g}s: {json.dumps(status)[:400]}")
        status = await cluster_status(nats_url, settings.partitions)
        stable = stable + 1 if spread_ok(status, list(processes), settings.partitions) else 0
        await asyncio.sleep(POLL_SECONDS)
    return status


async def wait_for_no_workers(nats_url: str, partitions: int, seconds: float) -> None:
    """The workers of the previous count gave their leases back (else the next ones would wait for the TTL)."""
    from bot.cluster.status import cluster_status

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = await cluster_status(nats_url, partitions)
        if not status["workers"] and len(status["unserved"]) == partitions:
            return
        await asyncio.sleep(POLL_SECONDS)


def bench_channels(count: int, partitions: int, prefix: str) -> list[str]:
    """Channel ids spread evenly over the partitions (a real cluster's thousands of channels average out; a few
    dozen hashed at random would load one worker twice another and measure the hash, not the cluster). A prefix
    of each run's own: the broker drops a message id it saw in the last two minutes, as a platform's retry."""
    from bot.cluster.partitions import partition_of

    wanted = [count // partitions + (p < count % partitions) for p in range(partitions)]
    found: list[str] = []
    i = 0
    while len(found) < count:
        channel = f"{prefix}-{i}"
        p = partition_of(BENCH_PLATFORM, channel, partitions)
        if wanted[p]:
            wanted[p] -= 1
            found.append(channel)
        i += 1
    return found


BENCH_PLATFORM = "bench"


async def one_turn(rc, channel: int, channel_id: str, turn: int) -> list[str]:
    """Send one message; the outcomes of its reply streams, read to their Finals ([] when none came in time)."""
    from bot.commands import Final, Incoming, Reply, ReplyStream

    incoming = Incoming(platform=BENCH_PLATFORM, channel_id=channel_id, user_id=f"user{channel}",
                        user_name=f"User{channel}", text=f"Tell me about the weather, part {turn}.",
                        message_id=f"{channel_id}-{turn}")

    async def run() -> list[str]:
        answer = await rc.handle(incoming)
        outcomes = []
        for output in answer.outputs:
            if isinstance(output, ReplyStream):
                final = None
                async for event in output:
                    final = event
                outcomes.append(final.outcome if isinstance(final, Final) else "no-final")
        if not outcomes:  # what it said instead (a refusal, "no worker answered"): the bench's error names it
            outcomes = [f"reply: {o.text[:80]}" for o in answer.outputs if isinstance(o, Reply)] or ["no reply"]
        return outcomes

    try:
        return await asyncio.wait_for(run(), TURN_SECONDS)
    except asyncio.TimeoutError:
        return ["timeout"]


async def measure(settings: Settings, n: int, nats_url: str, directory: Path) -> dict:
    from bot.cluster.front import RemoteCommands
    from bot.commands.messages import DONE, EMPTY

    directory.mkdir(parents=True)
    async with fresh_database(settings.database, directory) as database:
        config = write_worker_config(directory, settings, database, nats_url)
        tag = uuid.uuid4().hex[:6]
        processes = {f"bench-{tag}-w{i}": None for i in range(n)}
        try:
            for worker_id in processes:
                processes[worker_id] = start_worker(config, worker_id, settings.steps_per_second, directory)
            await wait_for_spread(nats_url, settings, processes, directory)
            rc = RemoteCommands(nats_url=nats_url, front=f"bench-{tag}", partitions=settings.partitions)
            await rc.start()
            try:
                channels = bench_channels(settings.channels, settings.partitions, f"bench-{tag}")
                warm = await asyncio.gather(*(one_turn(rc, c, cid, 0) for c, cid in enumerate(channels)))
                if sum(outcome in (DONE, EMPTY) for outcomes in warm for outcome in outcomes) < len(channels):
                    raise BenchError(f"{n} worker(s): the warm-up turns were not all answered: "
                                     f"{sorted({o for outcomes in warm for o in outcomes})}; "
                                     f"a worker's log ends:\n{tail(directory / (next(iter(processes)) + '.log'))}")
                rc.broker_seconds.clear()

                async def channel_turns(c: int, channel_id: str) -> list[str]:
                    outcomes = []
                    for turn in range(1, settings.turns + 1):
                        said = await one_turn(rc, c, channel_id, turn)
                        outcomes += said
                        if not any(outcome in (DONE, EMPTY) for outcome in said):
                            break  # its partition is stuck, or it was refused: the rest would wait the same
                    return outcomes

                lags: list[float] = []
                sampler = asyncio.create_task(sample_loop_lag(lags))
                started = time.monotonic()
                results = await asyncio.gather(*(channel_turns(c, cid) for c, cid in enumerate(channels)))
                seconds = time.monotonic() - started
                sampler.cancel()
                broker = sorted(rc.broker_seconds)
                # The broker's own share, on a quiet cluster: one channel, one turn at a time (under the load
                # above it also holds the waits for a core of this 2-core machine's many processes).
                rc.broker_seconds.clear()
                for turn in range(settings.turns + 1, settings.turns + 1 + QUIET_TURNS):
                    await one_turn(rc, 0, channels[0], turn)
                quiet = sorted(rc.broker_seconds)
            finally:
                await rc.close()
        finally:
            grace = 15.0 + STOP_GRACE_SECONDS  # limits.shutdown_seconds' default, then the kill
            await asyncio.gather(*(asyncio.to_thread(stop_process, p, grace) for p in processes.values() if p))
        await wait_for_no_workers(nats_url, settings.partitions, 10.0)
    answered = sum(outcome in (DONE, EMPTY) for outcomes in results for outcome in outcomes)
    expected = settings.channels * settings.turns
    return {"workers": n, "channels": settings.channels, "turns": settings.turns, "replies": answered,
            "lost": expected - answered, "seconds": round(seconds, 3),
            "replies_per_s": round(answered / seconds, 2) if seconds > 0 else 0.0,
            "broker_p50_ms": round(percentile(broker, 0.50) * 1000, 2),
            "broker_p95_ms": round(percentile(broker, 0.95) * 1000, 2), "broker_samples": len(broker),
            "front_lag_p95_ms": round(percentile(sorted(lags), 0.95) * 1000, 2),
            "quiet_broker_p50_ms": round(percentile(quiet, 0.50) * 1000, 2),
            "quiet_broker_p95_ms": round(percentile(quiet, 0.95) * 1000, 2)}


async def sample_loop_lag(lags: list[float]) -> None:
    """How late this process's event loop wakes a sleeper: the part of broker_seconds that is the front being
    busy (or the machine's cores taken), not the broker."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_SAMPLE_SECONDS)
        lags.append(max(0.0, time.monotonic() - before - LAG_SAMPLE_SECONDS))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def format_table(rows: list[dict]) -> str:
    lines = [f"{'workers':>7} {'channels':>8} {'turns':>5} {'replies':>7} {'lost':>4} {'seconds':>8} "
             f"{'replies/s':>9} {'ratio':>6} {'target':>6} {'broker p50 ms':>13} {'p95 ms':>7} {'front lag p95':>13} "
             f"{'quiet p50 ms':>12} {'p95 ms':>7}"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        lines.append(f"{r['workers']:>7} {r['channels']:>8} {r['turns']:>5} {r['replies']:>7} {r['lost']:>4} "
                     f"{r['seconds']:>8.2f} {r['replies_per_s']:>9.2f} {ratio:>6} "
                     f"{RATIO_TARGET * r['workers']:>6.1f} {r['broker_p50_ms']:>13.2f} {r['broker_p95_ms']:>7.2f} "
                     f"{r['front_lag_p95_ms']:>13.2f} {r['quiet_broker_p50_ms']:>12.2f} {r['quiet_broker_p95_ms']:>7.2f}")
    lines.append(f"targets: ratio >= {RATIO_TARGET:g} x workers; broker p95 <= {BROKER_P95_TARGET_MS:g} ms; no lost "
                 f"turns. quiet: one channel, {QUIET_TURNS} turns one at a time")
    return "\n".join(lines)
