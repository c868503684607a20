"""`rwkv-bot worker`: commands, conversations and the engine, serving the partitions whose leases it holds.

Per partition a durable pull consumer of `rwkv.in.<P>`. Events are taken in stream order, so a channel's
messages reach `Commands.arrive` in the order they were sent, exactly as in one process. An event is
acknowledged only after what it asked for is committed and its answer published; until then a keep-alive tells
JetStream it is still being worked on, and a crash (no keep-alive) redelivers it to the next owner of the
partition, which redoes it from the last committed state. A redelivered event that was already handled is
answered again from what was recorded (`cluster_handled`, or the committed turn of its platform message):
never acted on twice.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig

from bot.cluster.broker import connect, ensure_streams
from bot.cluster.fences import FenceLost, FencedStore, serving
from bot.cluster.leases import Leases, plan
from bot.cluster.wire import (DELETED, EDIT, IN_STREAM, MESSAGE, NAMES_SUBJECT, SHOWN, WORKERS_QUEUE, Envelope,
                              answer_message, consumer_name, event_message, in_subject, live_subject, out_subject)
from bot.commands import Answer, Final, Incoming, MessageGone, Reply, ReplyShown, ReplyStream
from bot.commands.messages import DONE, EMPTY, Partial, Queued, swipe_buttons
from bot.i18n import t

log = logging.getLogger(__name__)

ACK_WAIT = 5.0  # seconds JetStream waits for an ack (or a keep-alive) before redelivering: the failover delay
KEEP_ALIVE = ACK_WAIT / 3
# One at a time: nats-py waits out the whole timeout for the rest of a larger batch once one event came.
FETCH_BATCH, FETCH_WAIT = 1, 1.0
MAX_ACK_PENDING = 1000  # events of one partition being worked on at once
LIVE_INTERVAL = 0.1  # at most this often the text so far of one reply (the fronts paint about once a second)
PUBLISH_RETRY_SECONDS = 60.0  # an answer is published again until the broker takes it, this long at most
HANDLED_KEEP = dt.timedelta(days=1)  # redeliveries come within seconds; a day is plenty
HANDLED_MAX_BYTES = 1 << 20  # an answer recorded larger than this (an /export file) is recorded without outputs


class Abandoned(Exception):
    """The partition was lost while the event was worked on: the new owner redoes it; nothing is acked."""


@dataclass
class _Partition:
    number: int
    epoch: int  # the lease revision its writes are fenced with
    task: asyncio.Task | None = None
    working: set = field(default_factory=set)  # tasks of events in flight
    stopping: bool = False
    lost: bool = False


class Worker:
    def __init__(self, app, *, nats_url: str, worker_id: str, partitions: int, lease_seconds: float):
        self.app = app
        self.commands = app.commands
        self.store: FencedStore = app.store
        self.store.on_lost = self._fence_refused
        self.nats_url = nats_url
        self.worker_id = worker_id
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self.nc = self.js = None
        self.leases: Leases | None = None
        self._parts: dict[int, _Partition] = {}
        # request id -> (its partition, its reply streams): what a cancel or a lost partition stops
        self._working: dict[str, tuple[int, list[ReplyStream]]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.handled = 0

    # ----- running ----------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self.nc = await connect(self.nats_url, f"worker-{self.worker_id}")
        self.js = self.nc.jetstream()
        await ensure_streams(self.js)
        self.leases = Leases(self.js, self.worker_id, self.partitions, self.lease_seconds)
        await self.leases.open()
        await self.nc.subscribe("rwkv.cancel.*", cb=self._on_cancel)
        await self.nc.subscribe(NAMES_SUBJECT, queue=WORKERS_QUEUE, cb=self._on_names)
        await self.store.forget_handled(HANDLED_KEEP)
        log.info("worker %s: serving up to %d partitions (lease %gs)", self.worker_id, self.partitions,
                 self.leases.seconds)
        try:
            while not stop.is_set():
                try:
                    await self._tick()
                except Exception as exc:  # the broker is away: the leases say what still holds
                    log.info("worker %s: tick failed (%s: %s)", self.worker_id, type(exc).__name__, exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.leases.seconds / 3)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Finish what is in flight (limits.shutdown_seconds), then give the leases back: the others take the
        partitions at once instead of after the TTL."""
        for part in self._parts.values():
            part.stopping = True
        working = [task for part in self._parts.values() for task in part.working]
        if working:
            await asyncio.wait(working, timeout=self.app.config.limits.shutdown_seconds)
        await asyncio.gather(*(p.task for p in self._parts.values() if p.task), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.leases.release_all()
        with contextlib.suppress(Exception):
            await self.nc.drain()

    async def _tick(self) -> None:
        for number in await self.leases.renew():
            self._lose(number)
        await self.leases.report(self.load())
        owners = await self.leases.owners()
        active = {w: load.get("active", 0) for w, load in (await self.leases.workers()).items()}
        take, give = plan(self.worker_id, self.partitions, owners, active)
        for number in give:
            self._spawn(self._give_up(number))
        for number in take:
            revision = await self.leases.take(number)
            if revision is None:
                continue
            if not await self.store.take_fence(number, revision, self.worker_id):
                await self.leases.release(number)
                continue
            part = self._parts[number] = _Partition(number, revision)
            part.task = asyncio.create_task(self._serve(part), name=f"partition-{number}")
            part.task.add_done_callback(self._served)
            log.info("worker %s: serving partition %d (lease revision %d)", self.worker_id, number, revision)

    def load(self) -> dict:
        engine = self.app.engine
        return {"partitions": sorted(p for p, part in self._parts.items() if not part.stopping),
                "active": self.app.conversations.active_channels(), "queue": engine.queue_depth(),
                "tps": round(engine.tokens_per_second(), 1), "working": len(self._working),
                "handled": self.handled, "at": time.time()}

    # ----- partitions -------------------------------------------------------------------------------------
    async def _serve(self, part: _Partition) -> None:
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT, max_deliver=-1,
                                max_ack_pending=MAX_ACK_PENDING)
        sub = await self.js.pull_subscribe(in_subject(part.number), durable=consumer_name(part.number),
                                           stream=IN_STREAM, config=config)
        try:
            while not part.stopping:
                if not self.leases.holds(part.number):  # a renewal is late (a slow tick): wait for it
                    await asyncio.sleep(0.1)
                    continue
                try:
                    messages = await sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises either when none came
                    continue
                except (nats.errors.Error, OSError) as exc:
                    log.info("partition %d: fetch failed (%s)", part.number, type(exc).__name__)
                    await asyncio.sleep(FETCH_WAIT)
                    continue
                for message in messages:
                    if not self._serving(part):
                        break  # not acked: redelivered to the partition's next owner
                    self._take(part, message)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _served(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: %s stopped", self.worker_id, task.get_name(), exc_info=task.exception())

    def _serving(self, part: _Partition) -> bool:
        return not part.stopping and self.leases.holds(part.number)

    async def _give_up(self, number: int) -> None:
        """Hand a partition over (another worker is below its share): stop taking its events, finish those in
        flight, then delete the lease so the least-loaded worker takes it."""
        part = self._parts.get(number)
        if part is None or part.stopping:
            return
        part.stopping = True
        if part.working:
            await asyncio.wait(set(part.working), timeout=self.app.config.limits.shutdown_seconds)
        if part.task:
            await asyncio.gather(part.task, return_exceptions=True)
        self._parts.pop(number, None)
        await self.leases.release(number)
        self.app.conversations.forget_hot_states()
        log.info("worker %s: gave partition %d up", self.worker_id, number)

    def _lose(self, number: int) -> None:
        """Another worker owns the partition now: stop at once, and drop every state in memory (the new owner
        may change a channel we would otherwise resume from a stale state when the partition comes back)."""
        part = self._parts.pop(number, None)
        self.leases.held.pop(number, None)
        if part is None:
            return
        part.stopping = part.lost = True
        for partition, streams in list(self._working.values()):
            if partition == number:
                for stream in streams:
                    stream.cancel()
        self.app.conversations.forget_hot_states()
        log.warning("worker %s: lost partition %d", self.worker_id, number)

    def _fence_refused(self, number: int) -> None:
        log.warning("worker %s: partition %d: a write was refused by its fence", self.worker_id, number)
        self._lose(number)

    def _spawn(self, work) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ----- one event --------------------------------------------------------------------------------------
    def _take(self, part: _Partition, message) -> None:
        """Synchronously, in stream order: a message takes its place in its channel's order here."""
        try:
            envelope = Envelope.decode(message.data)
            incoming = Incoming.from_dict(envelope.data) if envelope.kind in (MESSAGE, EDIT) else None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("partition %d: dropped a malformed event (%s)", part.number, type(exc).__name__)
            self._spawn(message.term())
            return
        if envelope.request in self._working:
            return  # redelivered while still being worked on here (a slow keep-alive): the first one answers
        self._working[envelope.request] = (part.number, [])
        arrival = self.commands.arrive(incoming) if incoming is not None else None
        task = asyncio.create_task(self._work(part, message, envelope, incoming, arrival))
        part.working.add(task)
        task.add_done_callback(part.working.discard)

    async def _work(self, part: _Partition, message, envelope: Envelope, incoming, arrival) -> None:
        started = time.monotonic()
        serving.set((part.number, part.epoch))
        keep_alive = asyncio.create_task(self._keep_alive(message))
        attempt = message.metadata.num_delivered
        try:
            recorded = await self.store.handled(envelope.key) if attempt > 1 else None
            if recorded is None and attempt > 1 and envelope.kind == MESSAGE:
                recorded = await self._committed_turn(incoming)
            if recorded is not None:
                if arrival is not None:
                    arrival.placed()
                await self._resend(envelope, attempt, recorded, started)
            else:
                answer = await self._handle(envelope, incoming, arrival)
                recorded = await self._publish(part, envelope, attempt, answer, started)
            if envelope.kind != SHOWN:
                await self.store.record_handled(envelope.key, recorded)
            if part.lost:
                raise Abandoned
            await message.ack_sync()
            self.handled += 1
        except (Abandoned, FenceLost):
            log.info("partition %d: event left to the partition's new owner", part.number)
        except Exception:
            log.exception("partition %d: event failed", part.number)
            with contextlib.suppress(Exception):
                await self._publish_out(envelope.front, answer_message(envelope.request, attempt, Answer(
                    [Reply(t("engine_error", self.commands.lang), ephemeral=True)], self.commands.lang).to_dict()))
                await message.ack_sync()
        finally:
            keep_alive.cancel()
            self._working.pop(envelope.request, None)

    async def _keep_alive(self, message) -> None:
        while True:
            await asyncio.sleep(KEEP_ALIVE)
            with contextlib.suppress(Exception):
                await message.in_progress()

    async def _handle(self, envelope: Envelope, incoming, arrival) -> Answer | None:
        if envelope.kind == MESSAGE:
            return await self.commands.handle(incoming, arrival)
        if envelope.kind == EDIT:
            return await self.commands.edited(incoming, arrival)
        if envelope.kind == DELETED:
            return await self.commands.deleted(MessageGone.from_dict(envelope.data))
        await self.commands.shown(ReplyShown.from_dict(envelope.data))
        return None

    async def _publish(self, part: _Partition, envelope: Envelope, attempt: int, answer: Answer | None,
                       started: float) -> dict:
        """The answer, then each reply stream's events; what to record for a redelivery."""
        if answer is None:
            return {}
        header = answer.to_dict()
        streams = [o for o in answer.outputs if isinstance(o, ReplyStream)]
        self._working[envelope.request] = (part.number, streams)
        await self._publish_out(envelope.front, answer_message(envelope.request, attempt, header))
        finals = []
        for index, stream in enumerate(streams):
            finals.append(await self._forward(part, envelope, attempt, index, stream, started))
        recorded = {"answer": header, "finals": finals}
        if len(json.dumps(recorded)) > HANDLED_MAX_BYTES:
            recorded = {"answer": dict(header, outputs=[o for o in header["outputs"] if o["type"] == "stream"]),
                        "finals": finals}
        return recorded

    async def _forward(self, part: _Partition, envelope: Envelope, attempt: int, index: int, stream: ReplyStream,
                       started: float) -> dict:
        last = 0.0
        async for event in stream:
            if isinstance(event, Final):
                if part.lost:
                    raise Abandoned  # it failed because we lost the partition: the new owner writes it
                final = event.to_dict()
                await self._publish_out(envelope.front, event_message(envelope.request, attempt, index, final,
                                                                      time.monotonic() - started))
                return final
            now = time.monotonic()
            if isinstance(event, Queued) or (isinstance(event, Partial) and now - last >= LIVE_INTERVAL):
                last = now
                with contextlib.suppress(Exception):  # a lost frame: the next one carries the whole text
                    await self.nc.publish(live_subject(envelope.front),
                                          event_message(envelope.request, attempt, index, event.to_dict()))
        raise RuntimeError("a reply stream ended without its Final")

    async def _resend(self, envelope: Envelope, attempt: int, recorded: dict, started: float) -> None:
        if not recorded.get("answer"):
            return
        await self._publish_out(envelope.front, answer_message(envelope.request, attempt, recorded["answer"]))
        for index, final in enumerate(recorded.get("finals", [])):
            await self._publish_out(envelope.front, event_message(envelope.request, attempt, index, final,
                                                                  time.monotonic() - started))

    async def _committed_turn(self, incoming: Incoming) -> dict | None:
        """The reply already committed for this platform message (the worker before us died after committing,
        before acknowledging), as a recorded answer."""
        if not incoming.message_id or incoming.command is not None or incoming.button is not None:
            return None
        channel = await self.store.find_channel(incoming.platform, incoming.channel_id)
        turn = channel and await self.store.turn_by_message(channel.id, incoming.message_id)
        if not turn:
            return None
        place, count = await self.store.swipe_label(turn.id)
        final = Final(turn.out_text, DONE if (turn.out_text or "").strip() else EMPTY,
                      swipe_buttons(turn.id, place, count, incoming.user_id), turn.position)
        stream = ReplyStream(turn.out_speaker or "", None, _nothing())
        answer = Answer([stream], self.commands.lang)
        return {"answer": answer.to_dict(), "finals": [final.to_dict()]}

    async def _publish_out(self, front: str, data: bytes) -> None:
        """Into RWKV_OUT, kept until the front fetches it; retried while the broker is away."""
        deadline = time.monotonic() + PUBLISH_RETRY_SECONDS
        while True:
            try:
                await self.js.publish(out_subject(front), data, timeout=5)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    # ----- core NATS requests -------------------------------------------------------------------------------
    async def _on_cancel(self, msg) -> None:
        for stream in self._working.get(msg.subject.rsplit(".", 1)[-1], (0, []))[1]:
            stream.cancel()

    async def _on_names(self, msg) -> None:
        try:
            who = json.loads(msg.data or b"{}").get("who")
        except ValueError:
            who = None
        await msg.respond(json.dumps(self.commands.character_names(who)).encode())


async def _nothing():
    return
    yield  # an async generator with no events: a recorded stream's events are resent separately


async def run_worker(config, *, backend=None, stop: asyncio.Event | None = None) -> int:
    """Build the app on a fenced store and serve until SIGTERM/SIGINT (or `stop`)."""
    import signal

    from bot.app import build_app

    section = config.cluster
    store = FencedStore(config.database.url, snapshots=config.database.snapshots)
    app = await build_app(config, backend, store=store)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    worker = Worker(app, nats_url=section.nats_url, worker_id=section.worker_id or default_worker_id(),
                    partitions=section.partitions, lease_seconds=section.lease_seconds)
    try:
        await worker.run(stop)
    finally:
        await app.close()
    return 0


def default_worker_id() -> str:
    import os
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname().split('.')[0]}-{os.getpid()}")[-64:]
