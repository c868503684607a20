"""`rwkv-bot front`: only the platform adapters; `RemoteCommands` stands where `Commands` stands in one process.

The adapters call `arrive`, `handle`, `edited`, `deleted`, `shown` exactly as they do in-process. Here each one
becomes an envelope published to its channel's partition (JetStream acknowledges it before the adapter goes on
to the channel's next message, so the worker sees them in order), and the answer comes back on this front's
subjects: the answer and each stream's last event from RWKV_OUT, the text so far from `rwkv.live.<front>`.

A worker that dies mid-reply is replaced by the partition's next owner, which redoes the event: its answer comes
with a higher attempt number and its events continue the streams the adapter is already painting (each event
carries the whole text so far), so the user sees the reply finish once.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors as js_errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bot.cluster.broker import connect, ensure_streams
from bot.cluster.partitions import partition_of
from bot.cluster.wire import (ANSWER, DELETED, EDIT, MESSAGE, NAMES_SUBJECT, OUT_STREAM, SHOWN, Envelope,
                              cancel_subject, decode_out, dedupe_key, in_subject, live_subject, out_subject)
from bot.commands import Answer, ChannelKey, Incoming, MessageGone, Reply, ReplyShown
from bot.commands.base import CommandSpec, offered_commands
from bot.commands.intake import Arrival, ArrivalOrder
from bot.commands.messages import Final, event_from_dict, output_from_dict
from bot.i18n import normalize_lang, t

log = logging.getLogger(__name__)

ANSWER_SECONDS = 300.0  # no answer this long (no worker for the partition, the broker away): say so
PUBLISH_RETRY_SECONDS = 30.0  # an event is published again (same idempotency key) until the broker takes it
NAMES_REFRESH_SECONDS = 30.0
LATENCIES_KEPT = 10_000


@dataclass
class _Request:
    """One event waiting for its answer, and the reply streams of that answer."""
    id: str
    sent: float
    attempt: int = 0
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    streams: list[asyncio.Queue] = field(default_factory=list)
    ended: list[bool] = field(default_factory=list)  # each stream's Final has come


class RemoteCommands:
    def __init__(self, *, nats_url: str, front: str, partitions: int, lang: str = "en", user_imports: bool = False):
        self.nats_url = nats_url
        self.front = front
        self.partitions = partitions
        self.lang = lang
        self.user_imports = user_imports
        self.order = ArrivalOrder()
        self.signins = None  # the admin page runs beside a worker, not here
        self.nc = self.js = None
        self._pending: dict[str, _Request] = {}
        self._names: list[str] = []
        self._tasks: list[asyncio.Task] = []
        self.broker_seconds: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)

    # ----- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.nc = await connect(self.nats_url, f"front-{self.front}")
        self.js = self.nc.jetstream()
        await ensure_streams(self.js)
        await self.nc.subscribe(live_subject(self.front), cb=self._on_live)
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=30)
        self._out = await self.js.pull_subscribe(out_subject(self.front), durable=f"front-{self.front}",
                                                 stream=OUT_STREAM, config=config)
        self._tasks = [asyncio.create_task(self._read_out(), name="front-out"),
                       asyncio.create_task(self._refresh_names(), name="front-names")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()  # every answer it waited for has come or been given up

    # ----- what the adapters call (the same as Commands) ----------------------------------------------------
    def arrive(self, incoming: Incoming) -> Arrival:
        """The message's place in its channel's order on this front; flood control is the worker's (a channel
        always lands on one worker, so its counts are whole there)."""
        key = ChannelKey(incoming.platform, incoming.channel_id)
        before, placed = self.order.take(key)
        return Arrival(incoming, key, before, placed, self.order, None, False, user_imports=self.user_imports)

    async def handle(self, incoming: Incoming, arrival: Arrival | None = None) -> Answer:
        return await self._ask(MESSAGE, incoming, arrival or self.arrive(incoming))

    async def edited(self, incoming: Incoming, arrival: Arrival | None = None) -> Answer:
        return await self._ask(EDIT, incoming, arrival or self.arrive(incoming))

    async def deleted(self, gone: MessageGone) -> Answer:
        return await self._ask(DELETED, gone, None)

    async def shown(self, report: ReplyShown) -> None:
        request = uuid.uuid4().hex
        data = report.to_dict()
        with contextlib.suppress(Exception):  # only an edit or delete of that reply later needs it
            await self._send(Envelope(SHOWN, self.front, request, data, dedupe_key(SHOWN, data, request)),
                             report.platform, report.channel_id)

    async def language(self, incoming: Incoming) -> str:
        return normalize_lang(incoming.language_code, self.lang)

    def commands(self, place: str | None = None) -> list[CommandSpec]:
        return offered_commands(place)

    def character_names(self, who: str | None = None) -> list[str]:
        """The shared library's names, as a worker last said (a user's own cards are not offered here)."""
        return list(self._names)

    # ----- inside -----------------------------------------------------------------------------------------
    async def _ask(self, kind: str, item, arrival: Arrival | None) -> Answer:
        request = _Request(uuid.uuid4().hex, time.monotonic())
        self._pending[request.id] = request
        data = item.to_dict()
        envelope = Envelope(kind, self.front, request.id, data, dedupe_key(kind, data, request.id))
        try:
            if arrival is not None:
                await arrival.wait_turn()
            request.sent = time.monotonic()
            first = await self._send(envelope, item.platform, item.channel_id)
        except Exception:
            self._finish(request)
            log.warning("front %s: the broker did not take a %s event", self.front, kind)
            return Answer([Reply(t("cluster_unavailable", self.lang), ephemeral=True)], self.lang)
        finally:
            if arrival is not None:
                arrival.placed()
        if first.duplicate:  # the platform sent this message again (a webhook retry): it has its answer already
            self._finish(request)
            log.info("front %s: a %s event the broker already has was dropped", self.front, kind)
            return Answer([], self.lang, answered=False)
        try:
            return await asyncio.wait_for(asyncio.shield(request.answer), ANSWER_SECONDS)
        except asyncio.TimeoutError:
            self._finish(request)
            log.warning("front %s: no worker answered a %s event in %gs", self.front, kind, ANSWER_SECONDS)
            return Answer([Reply(t("cluster_unavailable", self.lang), ephemeral=True)], self.lang)

    async def _send(self, envelope: Envelope, platform: str, channel_id: str):
        """Publish until the broker takes it; the first attempt's acknowledgement (a retry of ours that finds
        the event stored already is no duplicate of the platform's)."""
        subject = in_subject(partition_of(platform, channel_id, self.partitions))
        deadline = time.monotonic() + PUBLISH_RETRY_SECONDS
        retried = False
        while True:
            try:
                ack = await self.js.publish(subject, envelope.encode(), timeout=5,
                                            headers={"Nats-Msg-Id": envelope.key})
                if retried:
                    ack.duplicate = False
                return ack
            except (nats.errors.Error, js_errors.Error, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                retried = True
                await asyncio.sleep(0.5)

    async def _read_out(self) -> None:
        while True:
            try:
                messages = await self._out.fetch(1, timeout=1.0)  # one at a time: see worker.FETCH_BATCH
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is away: the durable consumer resumes where it was
                log.info("front %s: fetch failed (%s)", self.front, type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                try:
                    self._deliver(decode_out(message.data))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("front %s: dropped a malformed answer (%s)", self.front, type(exc).__name__)
                with contextlib.suppress(Exception):
                    await message.ack()

    async def _on_live(self, message) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            self._deliver(decode_out(message.data))

    def _deliver(self, data: dict) -> None:
        request = self._pending.get(data["request"])
        attempt = int(data.get("attempt", 1))
        if request is None or attempt < request.attempt:
            return  # finished already, or from a worker that has since been replaced
        request.attempt = attempt
        if data["type"] == ANSWER:
            if not request.answer.done():
                request.answer.set_result(self._answer(request, data["answer"]))
            elif len(request.streams) != sum(o["type"] == "stream" for o in data["answer"]["outputs"]):
                log.warning("front %s: a redone answer differs in shape; keeping the first", self.front)
            if all(request.ended):
                self._finish(request)
            return
        index = int(data["stream"])
        if index >= len(request.streams) or request.ended[index]:
            return  # the text so far before the answer that opens its stream (the next frame repaints it), or late
        event = event_from_dict(data["event"])
        request.streams[index].put_nowait(event)
        if isinstance(event, Final):
            worker_seconds = float(data.get("worker_seconds", 0))
            self.broker_seconds.append(max(0.0, time.monotonic() - request.sent - worker_seconds))
            request.ended[index] = True
            if all(request.ended):
                self._finish(request)

    def _answer(self, request: _Request, data: dict) -> Answer:
        outputs = []
        for output in data["outputs"]:
            if output["type"] == "stream":
                queue: asyncio.Queue = asyncio.Queue()
                request.streams.append(queue)
                request.ended.append(False)
                outputs.append(output_from_dict(output, _events(queue), self._canceller(request.id)))
            else:
                outputs.append(output_from_dict(output))
        return Answer(outputs, data["lang"], data.get("answered", True))

    def _canceller(self, request: str):
        def cancel() -> None:
            if self.nc is not None and self.nc.is_connected:
                asyncio.ensure_future(self.nc.publish(cancel_subject(request), b""))
        return cancel

    def _finish(self, request: _Request) -> None:
        self._pending.pop(request.id, None)  # what comes for it later (a redone answer, late frames) is dropped

    async def _refresh_names(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                reply = await self.nc.request(NAMES_SUBJECT, json.dumps({"who": None}).encode(), timeout=5)
                self._names = [str(n) for n in json.loads(reply.data)]
            await asyncio.sleep(NAMES_REFRESH_SECONDS)


async def _events(queue: asyncio.Queue):
    while True:
        event = await queue.get()
        yield event
        if isinstance(event, Final):
            return


@dataclass
class FrontApp:
    """What the adapters are given in place of the whole app: the configuration and the commands."""
    config: object
    commands: RemoteCommands


async def run_front(config, *, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None) -> int:
    """The platform adapters of this front until SIGTERM/SIGINT (or `stop`)."""
    import signal

    from bot.adapters import platform_runners

    section = config.cluster
    commands = RemoteCommands(nats_url=section.nats_url, front=section.name or default_front_name(),
                              partitions=section.partitions, lang=config.ui.lang,
                              user_imports=config.characters.user_imports)
    await commands.start()
    app = FrontApp(config, commands)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        tasks = [asyncio.create_task(runner(stop)) for runner in platform_runners(app)]
        if ready is not None:
            ready.set()
        log.info("front %s: %d platform(s), %d partitions", commands.front, len(tasks), commands.partitions)
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await commands.close()
    return 0


def default_front_name() -> str:
    from bot.cluster.worker import default_worker_id

    return default_worker_id()
