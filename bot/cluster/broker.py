"""The NATS connection and the JetStream streams both sides use (created on first use, idempotently)."""
from __future__ import annotations

import asyncio
import logging

import nats
import nats.js.errors as js_errors
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from bot.cluster.wire import IN_STREAM, IN_SUBJECTS, OUT_KEEP_SECONDS, OUT_STREAM, OUT_SUBJECTS

log = logging.getLogger(__name__)
CONNECT_SECONDS = 5.0
RECONNECT_WAIT = 0.5  # seconds between reconnection attempts (for ever: a broker restart is a pause)


async def connect(url: str, name: str):
    """Connected, reconnecting for ever after; a broker that cannot be reached at the start is an OSError (the
    client's own reconnecting would wait for it silently)."""
    await _reachable(url)
    client = None

    async def disconnected() -> None:
        if client is not None and not (client.is_closed or client.is_draining):  # not our own close
            log.warning("broker: disconnected from %s; reconnecting", url)

    async def reconnected() -> None:
        log.info("broker: reconnected to %s", url)

    async def error(exc: Exception) -> None:
        log.info("broker: %s: %s", type(exc).__name__, exc)

    client = await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=RECONNECT_WAIT,
                              allow_reconnect=True, connect_timeout=5, disconnected_cb=disconnected,
                              reconnected_cb=reconnected, error_cb=error)
    return client


async def _reachable(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"nats://{url}")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222),
                                           CONNECT_SECONDS)
    except (OSError, asyncio.TimeoutError) as exc:
        raise OSError(f"no answer from {parts.hostname}:{parts.port or 4222} ({type(exc).__name__})") from None
    writer.close()


async def ensure_streams(js) -> None:
    """RWKV_IN: the incoming events, removed once acknowledged (a work queue), on disk so a broker restart keeps
    what was not yet handled. RWKV_OUT: answers for the fronts, on disk, kept an hour at most."""
    wanted = (StreamConfig(name=IN_STREAM, subjects=[IN_SUBJECTS], retention=RetentionPolicy.WORK_QUEUE,
                           storage=StorageType.FILE, duplicate_window=120.0),
              StreamConfig(name=OUT_STREAM, subjects=[OUT_SUBJECTS], storage=StorageType.FILE,
                           max_age=OUT_KEEP_SECONDS, duplicate_window=120.0))
    for config in wanted:
        try:
            await js.stream_info(config.name)
        except js_errors.NotFoundError:
            try:
                await js.add_stream(config)
            except js_errors.BadRequestError:  # another process created it meanwhile
                await js.stream_info(config.name)
