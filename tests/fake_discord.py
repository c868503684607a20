"""A fake Discord for the tests: gateway websocket, REST API under /api/v10 and a CDN.

It runs on 127.0.0.1 (random free port) inside the test's own event loop, and the real
discord.py 2.x library talks to it once :meth:`FakeDiscord.patched` has pointed
``discord.http.Route.BASE`` and ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` at it.

It keeps Discord's observable behaviour where a chat bot can trip over it: 2000-character
content limit (400/50035 with the ``errors`` object), empty messages (400/50006), unknown
channel/message/webhook/interaction (404 10003/10008/10015/10062), permissions computed
from roles and channel overwrites (403 50001/50013), only the author may edit a message
(403 50005), webhooks cannot live on threads (400 50024), interactions expire after 3 s
without a callback, a deferred response's first followup edits the loading message,
ephemeral responses are never dispatched to the gateway, the Message Content intent
blanks content the bot is not entitled to, injected 429s/5xx carry the headers
discord.py reads (``Via``, ``X-RateLimit-*``, JSON body with ``retry_after``).

Usage::

    async with FakeDiscord() as fake:
        fake.add_guild(GUILD, "Test server", owner_id=OWNER)
        fake.add_channel(GUILD, CHANNEL, "general")
        with fake.patched():
            client = discord.Client(intents=discord.Intents.all())
            async with fake.running(client):
                msg = await fake.send_message(CHANNEL, OWNER, "hello")
                await fake.wait_for(lambda: fake.channel_messages(CHANNEL)[1:])
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import fnmatch
import hashlib
import itertools
import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from aiohttp import WSMsgType, web

__all__ = [
    "FakeDiscord",
    "FakeDiscordError",
    "FakeUser",
    "FakeRole",
    "FakeMember",
    "FakeChannel",
    "FakeGuild",
    "FakeAttachment",
    "FakeMessage",
    "FakeWebhook",
    "FakeInteraction",
    "RequestRecord",
    "Perm",
    "Intent",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "DEFAULT_BOT_PERMISSIONS",
]

DISCORD_EPOCH_MS = 1420070400000
MAX_CONTENT = 2000
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024


class Perm:
    """Permission bits (https://discord.com/developers/docs/topics/permissions)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    MANAGE_NICKNAMES = 1 << 27
    MANAGE_ROLES = 1 << 28
    MANAGE_WEBHOOKS = 1 << 29
    USE_APPLICATION_COMMANDS = 1 << 31
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1


class Intent:
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = {"members": GUILD_MEMBERS, "presences": GUILD_PRESENCES, "message_content": MESSAGE_CONTENT}


DEFAULT_EVERYONE_PERMISSIONS = (
    Perm.CREATE_INSTANT_INVITE
    | Perm.ADD_REACTIONS
    | Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.USE_EXTERNAL_EMOJIS
    | Perm.CHANGE_NICKNAME
    | Perm.USE_APPLICATION_COMMANDS
    | Perm.CREATE_PUBLIC_THREADS
    | Perm.SEND_MESSAGES_IN_THREADS
)
DEFAULT_BOT_PERMISSIONS = (
    Perm.VIEW_CHANNEL
    | Perm.SEND_MESSAGES
    | Perm.SEND_MESSAGES_IN_THREADS
    | Perm.EMBED_LINKS
    | Perm.ATTACH_FILES
    | Perm.READ_MESSAGE_HISTORY
    | Perm.MANAGE_WEBHOOKS
)

CHANNEL_TYPES = {
    "text": 0,
    "dm": 1,
    "voice": 2,
    "category": 4,
    "news": 5,
    "news_thread": 10,
    "thread": 11,
    "public_thread": 11,
    "private_thread": 12,
    "forum": 15,
}
THREAD_TYPES = (10, 11, 12)

# Option types of application commands.
OPT_SUB, OPT_GROUP, OPT_STRING, OPT_INT, OPT_BOOL, OPT_USER, OPT_CHANNEL, OPT_ROLE = 1, 2, 3, 4, 5, 6, 7, 8
OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = 9, 10, 11

_NAME_RE = re.compile(r"^[-_'\w]{1,32}$", re.UNICODE)
_USER_MENTION = re.compile(r"<@!?([0-9]+)>")
_ROLE_MENTION = re.compile(r"<@&([0-9]+)>")


class FakeDiscordError(Exception):
    """Raised by the fake's test-facing helpers (not sent to discord.py)."""


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: Optional[dict] = None):
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def _form_error(path: Iterable[Union[str, int]], code: str, message: str) -> _ApiError:
    """400 Invalid Form Body with Discord's nested ``errors`` object."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(list(path)):
        errors = {str(key): errors}
    return _ApiError(400, 50035, "Invalid Form Body", errors)


def _unknown(kind: str) -> _ApiError:
    codes = {
        "Channel": 10003,
        "Guild": 10004,
        "Member": 10007,
        "Message": 10008,
        "Role": 10011,
        "Webhook": 10015,
        "User": 10013,
        "interaction": 10062,
        "application command": 10063,
    }
    return _ApiError(404, codes[kind], f"Unknown {kind}")


MISSING_PERMS = lambda: _ApiError(403, 50013, "Missing Permissions")  # noqa: E731
MISSING_ACCESS = lambda: _ApiError(403, 50001, "Missing Access")  # noqa: E731


def _iso(ms: float) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat()


def snowflake_time_ms(snowflake: int) -> int:
    return (snowflake >> 22) + DISCORD_EPOCH_MS


# --------------------------------------------------------------------------- model


@dataclass
class FakeUser:
    id: int
    username: str
    global_name: Optional[str] = None
    bot: bool = False
    avatar: Optional[str] = None

    @property
    def display_name(self) -> str:
        return self.global_name or self.username

    def payload(self) -> dict:
        data = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": self.avatar,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class FakeRole:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: Optional[int] = None
    mentionable: bool = False

    def payload(self) -> dict:
        data = {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class FakeMember:
    guild_id: int
    user_id: int
    roles: list[int] = field(default_factory=list)
    nick: Optional[str] = None
    joined_at: str = ""

    def partial_payload(self) -> dict:
        """The member object without ``user`` (MESSAGE_CREATE ``member``, mentions)."""
        return {
            "roles": [str(r) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }


@dataclass
class FakeOverwrite:
    id: int
    type: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict:
        return {"id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny)}


@dataclass
class FakeChannel:
    id: int
    type: int
    guild_id: Optional[int]
    name: Optional[str]
    parent_id: Optional[int] = None
    position: int = 0
    topic: Optional[str] = None
    nsfw: bool = False
    overwrites: list[FakeOverwrite] = field(default_factory=list)
    recipient_ids: list[int] = field(default_factory=list)
    owner_id: Optional[int] = None
    archived: bool = False
    locked: bool = False
    last_message_id: Optional[int] = None
    message_count: int = 0
    created_ms: float = 0.0

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    @property
    def is_dm(self) -> bool:
        return self.type in (1, 3)


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int
    locale: str = "en-US"
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    bot_role_id: Optional[int] = None
    joined_at: str = ""

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]


@dataclass
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    channel_id: int
    content_type: Optional[str]
    url: str
    proxy_url: str
    ephemeral: bool = False
    description: Optional[str] = None

    def payload(self) -> dict:
        data = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data),
            "url": self.url,
            "proxy_url": self.proxy_url,
            "content_type": self.content_type,
            "flags": 0,
        }
        if self.ephemeral:
            data["ephemeral"] = True
        if self.description is not None:
            data["description"] = self.description
        return data


@dataclass
class FakeMessage:
    """A message as the fake stores it.  ``history`` holds (monotonic time, content) for the
    creation and every edit; ``allowed_mentions`` is exactly what the sender sent (None when
    the field was absent); ``mentions`` are the user ids Discord would actually ping."""

    id: int
    channel_id: int
    guild_id: Optional[int]
    author_id: int
    author: dict
    content: str
    embeds: list[dict] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    webhook_id: Optional[int] = None
    username: Optional[str] = None  # webhook username override as sent
    avatar_url: Optional[str] = None  # webhook avatar_url as sent
    allowed_mentions: Optional[dict] = None
    mentions: list[int] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    message_reference: Optional[dict] = None
    flags: int = 0
    tts: bool = False
    type: int = 0
    interaction_id: Optional[int] = None
    application_id: Optional[int] = None
    components: list[dict] = field(default_factory=list)
    nonce: Optional[Union[str, int]] = None
    source: str = "user"  # user | rest | webhook | interaction
    created_at: float = 0.0  # loop.time()
    edited_ms: Optional[float] = None
    history: list[tuple[float, str]] = field(default_factory=list)
    edit_allowed_mentions: list[Optional[dict]] = field(default_factory=list)
    deleted: bool = False

    @property
    def edits(self) -> list[tuple[float, str]]:
        return self.history[1:]

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        return bool(self.flags & 128)

    @property
    def author_name(self) -> str:
        return self.username or self.author.get("global_name") or self.author["username"]

    @property
    def is_bot(self) -> bool:
        return bool(self.author.get("bot"))

    @property
    def timestamp(self) -> str:
        return _iso(snowflake_time_ms(self.id))


@dataclass
class FakeWebhook:
    id: int
    token: str
    channel_id: int
    guild_id: Optional[int]
    name: str
    avatar: Optional[str] = None
    creator_id: Optional[int] = None
    application_id: Optional[int] = None
    type: int = 1


@dataclass
class RequestRecord:
    method: str
    path: str  # concrete path below /api/v10 (or /cdn/...)
    route: Optional[str]  # template, e.g. "POST /channels/{channel_id}/messages"
    query: dict
    json: Any
    files: list[tuple[str, bytes]]
    status: int = 0
    response: Any = None
    at: float = 0.0
    authorized: bool = False

    def __repr__(self) -> str:  # keep failure output short
        return f"<{self.method} {self.path} -> {self.status}>"


class FakeInteraction:
    """An interaction the fake dispatched.  ``responses`` lists every callback, followup and
    @original edit/delete as dicts with ``kind`` ('callback', 'followup', 'edit_original',
    'delete_original'), ``type`` (callback type), ``data`` (as sent), ``flags``, ``ephemeral``,
    ``message_id`` and ``at`` (loop time); rejected ones also carry ``error`` (code)."""

    def __init__(self, fake: "FakeDiscord", *, id: int, token: str, type: int, name: str, payload: dict,
                 user_id: int, channel_id: int, guild_id: Optional[int], locale: str):
        self._fake = fake
        self.id, self.token, self.type, self.name = id, token, type, name
        self.payload = payload
        self.user_id, self.channel_id, self.guild_id, self.locale = user_id, channel_id, guild_id, locale
        self.created_at = asyncio.get_running_loop().time()
        self.dispatched_at: Optional[float] = None
        self.responses: list[dict] = []
        self.errors: list[dict] = []  # rejected calls: {"kind", "status", "code", "message"}
        self.acknowledged = False
        self.expired = False
        self.deferred = False
        self.original_message_id: Optional[int] = None
        self.followup_ids: list[int] = []
        self.choices: Optional[list[dict]] = None
        self._first_followup_done = False
        self._timer: Optional[asyncio.TimerHandle] = None

    @property
    def callback(self) -> Optional[dict]:
        return next((r for r in self.responses if r["kind"] == "callback"), None)

    @property
    def original(self) -> Optional[FakeMessage]:
        if self.original_message_id is None:
            return None
        return self._fake.messages.get(self.original_message_id)

    @property
    def followups(self) -> list[FakeMessage]:
        return [self._fake.messages[i] for i in self.followup_ids]

    @property
    def ephemeral(self) -> bool:
        cb = self.callback
        return bool(cb and cb["ephemeral"])

    def visible_messages(self) -> list[FakeMessage]:
        """Original (when it has been answered) and followups, in order, not deleted."""
        out = []
        if self.original is not None and not self.original.loading and not self.original.deleted:
            out.append(self.original)
        out.extend(m for m in self.followups if not m.deleted)
        return out

    def texts(self) -> list[str]:
        return [m.content for m in self.visible_messages()]

    async def wait_callback(self, timeout: float = 5.0) -> dict:
        """Wait for the initial callback; raise FakeDiscordError if the interaction expired."""
        await self._fake.wait_for(lambda: self.callback is not None or self.expired, timeout=timeout)
        if self.callback is None:
            raise FakeDiscordError(f"interaction {self.name!r} expired without a callback; errors={self.errors}")
        return self.callback

    def __repr__(self) -> str:
        return f"<FakeInteraction {self.name!r} type={self.type} responses={len(self.responses)} expired={self.expired}>"


# --------------------------------------------------------------------------- gateway plumbing


_CLOSE = object()


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, path: str, query: dict):
        self.ws, self.path, self.query = ws, path, query
        self.queue: asyncio.Queue = asyncio.Queue()
        self.session: Optional[_Session] = None
        self.closed = asyncio.Event()
        self.close_code: Optional[int] = None
        self.heartbeats = 0
        self.writer: Optional[asyncio.Task] = None
        self.closing = False

    @property
    def live(self) -> bool:
        return not self.closed.is_set()

    def send(self, frame: dict) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if not self.live:
            fut.set_result(None)
        else:
            self.queue.put_nowait((json.dumps(frame), fut))
        return fut


@dataclass
class _Session:
    id: str
    intents: int
    seq: int = 0
    events: list[dict] = field(default_factory=list)
    conn: Optional[_Conn] = None
    valid: bool = True
    shard: Optional[list] = None  # [shard_id, shard_count] as identified

    def owns(self, guild_id: Any) -> bool:
        """Discord routes a guild's events to shard (guild_id >> 22) % count; DMs to shard 0."""
        if not self.shard or self.shard[1] <= 1:
            return True
        if guild_id is None:
            return self.shard[0] == 0
        return (int(guild_id) >> 22) % self.shard[1] == self.shard[0]


# --------------------------------------------------------------------------- the fake


class FakeDiscord:
    def __init__(
        self,
        *,
        bot_name: str = "RWKV Bot",
        bot_user_id: Optional[int] = None,
        application_id: Optional[int] = None,
        interaction_deadline: float = 3.0,
        heartbeat_interval: float = 41.25,
        privileged_intents: Iterable[str] = ("members", "presences", "message_content"),
    ):
        self._ids = itertools.count(1)
        self._last_ms = 0
        self.bot_user_id: int = bot_user_id or self.snowflake()
        self.application_id: int = application_id or self.bot_user_id
        id_b64 = base64.b64encode(str(self.bot_user_id).encode()).decode().rstrip("=")
        self.token: str = f"{id_b64}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(28)}"
        self.interaction_deadline = interaction_deadline
        self.heartbeat_interval = heartbeat_interval
        self.privileged_intents = set(privileged_intents)
        unknown = self.privileged_intents - set(Intent.PRIVILEGED)
        if unknown:
            raise ValueError(f"unknown privileged intents {unknown}")

        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.webhooks: dict[int, FakeWebhook] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.commands: dict[Optional[int], list[dict]] = {}  # None = global
        self.sync_calls: list[tuple[Optional[int], list]] = []
        self.requests: list[RequestRecord] = []
        self.typing_calls: list[tuple[int, float]] = []
        self.gateway_log: list[tuple[str, Any, Optional[str]]] = []  # (direction, op, event)
        self.gateway_connections: list[_Conn] = []
        self.identify_payloads: list[dict] = []
        self.presence_updates: list[dict] = []
        self.identify_count = 0
        self.resume_count = 0

        self._sessions: dict[str, _Session] = {}
        self._failures: list[dict] = []
        self._limits: list[tuple[str, int, float]] = []
        self._buckets: dict[tuple, list] = {}
        self._changed: Optional[asyncio.Event] = None
        self._runner: Optional[web.AppRunner] = None
        self.port: Optional[int] = None
        self.bot_user = self.add_user(self.bot_user_id, bot_name, bot=True)

    # ------------------------------------------------------------------ ids, lifecycle

    def snowflake(self) -> int:
        """A fresh snowflake with a realistic timestamp (18-19 digits)."""
        ms = max(int(time.time() * 1000), self._last_ms)
        self._last_ms = ms
        return ((ms - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """What Route.BASE must be set to."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway/"

    @property
    def resume_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/resume-gateway/"

    async def start(self) -> "FakeDiscord":
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("GET", "/gateway/", self._ws_handler)
        app.router.add_route("GET", "/resume-gateway/", self._ws_handler)
        app.router.add_route("GET", "/cdn/{tail:.*}", self._cdn_handler)
        app.router.add_route("*", "/api/{version:v\\d+}/{tail:.*}", self._api_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for inter in self.interactions.values():
            if inter._timer:
                inter._timer.cancel()
        await self.close_gateway(code=1001, invalidate=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeDiscord":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @contextlib.contextmanager
    def patched(self, *, guild_ready_timeout: Optional[float] = 0.05) -> Iterator["FakeDiscord"]:
        """Point discord.py at the fake; restore the original values afterwards.

        Patches ``discord.http.Route.BASE`` (REST, webhooks, interaction callbacks),
        ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` and ``discord.asset.Asset.BASE``.
        ``guild_ready_timeout``: discord.py waits this long after the last GUILD_CREATE before
        on_ready (its default is 2 s); the fake sends all of them at once, so a short default
        is set for clients that do not pass ``guild_ready_timeout`` themselves (None: leave it)."""
        import discord.asset
        import discord.gateway
        import discord.http
        import discord.state
        import yarl

        route, ws_cls = discord.http.Route, discord.gateway.DiscordWebSocket
        state_cls = discord.state.ConnectionState
        saved = (route.BASE, ws_cls.DEFAULT_GATEWAY, discord.asset.Asset.BASE, state_cls.__dict__["__init__"])
        route.BASE = self.api_base
        ws_cls.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        discord.asset.Asset.BASE = f"{self.base_url}/cdn"
        if guild_ready_timeout is not None:
            original_init = saved[3]

            def __init__(state: Any, *args: Any, **options: Any) -> None:
                original_init(state, *args, **options)
                if "guild_ready_timeout" not in options:
                    state.guild_ready_timeout = guild_ready_timeout

            state_cls.__init__ = __init__  # type: ignore[method-assign]
        try:
            yield self
        finally:
            route.BASE, ws_cls.DEFAULT_GATEWAY, discord.asset.Asset.BASE = saved[:3]
            state_cls.__init__ = saved[3]  # type: ignore[method-assign]

    @contextlib.asynccontextmanager
    async def running(self, client: Any, *, timeout: float = 5.0, token: Optional[str] = None):
        """Start ``client.start(token)`` in a task, wait for on_ready, yield, close the client.
        Errors of the client task (LoginFailure, PrivilegedIntentsRequired...) propagate."""
        task = asyncio.create_task(client.start(token or self.token))
        try:
            await self.wait_for(lambda: task.done() or client.is_ready(), timeout=timeout)
            if task.done():
                task.result()  # raises what stopped the client
                raise FakeDiscordError("client stopped before it was ready")
            yield client
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        finally:
            if not client.is_closed():
                await client.close()
            if not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=5)
                except asyncio.TimeoutError:
                    task.cancel()
                except Exception:
                    pass
            elif not task.cancelled():
                task.exception()  # mark retrieved

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Return predicate()'s first truthy value; re-checked whenever the bot does anything
        (REST call, gateway frame) and at least every 20 ms.  TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = self.requests[-8:]
                raise asyncio.TimeoutError(f"fake Discord: condition not met within {timeout}s; last requests {recent}")
            event = self._changed or asyncio.Event()
            try:
                await asyncio.wait_for(event.wait(), timeout=min(remaining, 0.02))
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ setup API

    def add_user(self, user_id: int, name: str, global_name: Optional[str] = None, bot: bool = False) -> FakeUser:
        user = FakeUser(user_id, name, global_name, bot)
        self.users[user_id] = user
        return user

    def add_guild(self, guild_id: int, name: str, owner_id: int, *, locale: str = "en-US",
                  everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
                  bot_permissions: int = DEFAULT_BOT_PERMISSIONS) -> FakeGuild:
        """A guild with its @everyone role (id = guild id), the bot as member with a managed
        bot role (``bot_permissions``), and the owner as member (user created if unknown)."""
        now = _iso(time.time() * 1000)
        guild = FakeGuild(guild_id, name, owner_id, locale=locale, joined_at=now)
        guild.roles[guild_id] = FakeRole(guild_id, guild_id, "@everyone", everyone_permissions, position=0)
        self.guilds[guild_id] = guild
        bot_role = FakeRole(self.snowflake(), guild_id, self.bot_user.username, bot_permissions, position=1,
                            managed=True, bot_id=self.bot_user_id)
        guild.roles[bot_role.id] = bot_role
        guild.bot_role_id = bot_role.id
        guild.members[self.bot_user_id] = FakeMember(guild_id, self.bot_user_id, [bot_role.id], joined_at=now)
        if owner_id not in self.users:
            self.add_user(owner_id, f"owner{owner_id % 10000}")
        guild.members[owner_id] = FakeMember(guild_id, owner_id, [], joined_at=now)
        self._dispatch_guild_event("GUILD_CREATE", lambda: self._guild_create_payload(guild), guild_id, Intent.GUILDS)
        return guild

    def add_role(self, guild_id: int, role_id: int, name: str, permissions: int = 0, *,
                 position: Optional[int] = None, mentionable: bool = False) -> FakeRole:
        guild = self._guild(guild_id)
        if position is None:
            position = max(r.position for r in guild.roles.values()) + 1
        role = FakeRole(role_id, guild_id, name, permissions, position=position, mentionable=mentionable)
        guild.roles[role_id] = role
        self._dispatch_guild_event("GUILD_ROLE_CREATE", lambda: {"guild_id": str(guild_id), "role": role.payload()},
                                   guild_id, Intent.GUILDS)
        return role

    def set_role_permissions(self, guild_id: int, role_id: int, permissions: int) -> None:
        role = self._guild(guild_id).roles[role_id]
        role.permissions = permissions
        self._dispatch_guild_event("GUILD_ROLE_UPDATE", lambda: {"guild_id": str(guild_id), "role": role.payload()},
                                   guild_id, Intent.GUILDS)

    def set_bot_permissions(self, guild_id: int, permissions: int) -> None:
        """Set the permissions of the bot's managed role (e.g. without MANAGE_WEBHOOKS)."""
        guild = self._guild(guild_id)
        assert guild.bot_role_id is not None
        self.set_role_permissions(guild_id, guild.bot_role_id, permissions)

    def bot_role_id(self, guild_id: int) -> int:
        role_id = self._guild(guild_id).bot_role_id
        assert role_id is not None
        return role_id

    def add_member(self, guild_id: int, user_id: int, roles: Iterable[int] = (), nick: Optional[str] = None) -> FakeMember:
        guild = self._guild(guild_id)
        if user_id not in self.users:
            raise FakeDiscordError(f"add_user({user_id}, ...) first")
        for r in roles:
            if r not in guild.roles:
                raise FakeDiscordError(f"unknown role {r} in guild {guild_id}")
        member = FakeMember(guild_id, user_id, list(roles), nick, joined_at=_iso(time.time() * 1000))
        guild.members[user_id] = member
        self._dispatch_guild_event(
            "GUILD_MEMBER_ADD", lambda: {**self._member_payload(member), "guild_id": str(guild_id)},
            guild_id, Intent.GUILD_MEMBERS)
        return member

    def add_channel(self, guild_id: Optional[int], channel_id: int, name: Optional[str] = None,
                    type: Union[str, int] = "text", *, parent_id: Optional[int] = None,
                    recipient_id: Optional[int] = None, owner_id: Optional[int] = None,
                    topic: Optional[str] = None, nsfw: bool = False,
                    overwrites: Iterable[FakeOverwrite] = ()) -> FakeChannel:
        """type: 'text' | 'thread' (public, needs parent_id) | 'private_thread' | 'dm'
        (guild_id None, needs recipient_id) | 'news' | 'voice' | 'category' | 'forum' or an int."""
        ctype = CHANNEL_TYPES[type] if isinstance(type, str) else int(type)
        if ctype == 1:
            if recipient_id is None or recipient_id not in self.users:
                raise FakeDiscordError("a DM channel needs a known recipient_id")
            channel = FakeChannel(channel_id, 1, None, None, recipient_ids=[recipient_id],
                                  created_ms=time.time() * 1000)
            self.channels[channel_id] = channel
            return channel
        if guild_id is None:
            raise FakeDiscordError("guild channels need a guild_id")
        guild = self._guild(guild_id)
        if ctype in THREAD_TYPES:
            parent = self.channels.get(parent_id) if parent_id else None
            if parent is None or parent.guild_id != guild_id:
                raise FakeDiscordError("a thread needs the parent_id of a channel in the same guild")
        position = len([c for c in guild.channel_ids if not self.channels[c].is_thread])
        channel = FakeChannel(channel_id, ctype, guild_id, name or f"channel-{channel_id}", parent_id=parent_id,
                              position=position, topic=topic, nsfw=nsfw, overwrites=list(overwrites),
                              owner_id=owner_id or (self.bot_user_id if ctype in THREAD_TYPES else None),
                              created_ms=time.time() * 1000)
        self.channels[channel_id] = channel
        guild.channel_ids.append(channel_id)
        if channel.is_thread:
            self._dispatch_guild_event(
                "THREAD_CREATE", lambda: {**self._channel_payload(channel), "newly_created": True},
                guild_id, Intent.GUILDS)
        else:
            self._dispatch_guild_event("CHANNEL_CREATE", lambda: self._channel_payload(channel), guild_id, Intent.GUILDS)
        return channel

    def set_overwrite(self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0,
                      type: str = "role") -> None:
        """Set (replace) a channel permission overwrite for a role or a member."""
        channel = self._channel(channel_id)
        channel.overwrites = [o for o in channel.overwrites if o.id != target_id]
        channel.overwrites.append(FakeOverwrite(target_id, 0 if type == "role" else 1, allow, deny))
        if channel.guild_id is not None:
            self._dispatch_guild_event("CHANNEL_UPDATE", lambda: self._channel_payload(channel),
                                       channel.guild_id, Intent.GUILDS)

    # ------------------------------------------------------------------ permissions

    def permissions_for(self, channel_id: Optional[int], user_id: int, guild_id: Optional[int] = None) -> int:
        """Discord's algorithm: base from @everyone + roles (owner/ADMINISTRATOR = all), then the
        channel's (a thread uses its parent's) @everyone, role and member overwrites."""
        channel = self.channels.get(channel_id) if channel_id is not None else None
        if channel is not None and channel.is_dm:
            return DEFAULT_EVERYONE_PERMISSIONS & ~Perm.MANAGE_WEBHOOKS
        gid = channel.guild_id if channel is not None else guild_id
        guild = self._guild(gid)  # type: ignore[arg-type]
        member = guild.members.get(user_id)
        if member is None:
            return 0
        if guild.owner_id == user_id:
            return Perm.ALL
        perms = guild.everyone.permissions
        for r in member.roles:
            perms |= guild.roles[r].permissions
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        if channel is None:
            return perms
        source = self.channels[channel.parent_id] if channel.is_thread and channel.parent_id else channel
        ows = {o.id: o for o in source.overwrites}
        if guild.id in ows:
            perms = (perms & ~ows[guild.id].deny) | ows[guild.id].allow
        allow = deny = 0
        for r in member.roles:
            if r in ows and ows[r].type == 0:
                allow |= ows[r].allow
                deny |= ows[r].deny
        perms = (perms & ~deny) | allow
        if user_id in ows and ows[user_id].type == 1:
            perms = (perms & ~ows[user_id].deny) | ows[user_id].allow
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        return perms

    # ------------------------------------------------------------------ observation API

    def channel_messages(self, channel_id: int, *, include_ephemeral: bool = False,
                         include_deleted: bool = False) -> list[FakeMessage]:
        """Messages of a channel, oldest first (ephemeral interaction responses excluded unless asked)."""
        return [m for m in self.messages.values() if m.channel_id == channel_id
                and (include_ephemeral or not m.ephemeral) and (include_deleted or not m.deleted)]

    def bot_messages(self, channel_id: int, **kw: Any) -> list[FakeMessage]:
        """Messages in the channel sent by the bot: as itself, by its webhooks, or as interaction responses."""
        own_hooks = {w.id for w in self.webhooks.values() if w.creator_id == self.bot_user_id}
        return [m for m in self.channel_messages(channel_id, **kw)
                if m.author_id == self.bot_user_id or m.webhook_id in own_hooks]

    @property
    def synced_commands(self) -> dict[Union[str, int], list[dict]]:
        """{"global": [...], guild_id: [...]} as stored after the bot's PUT/POST calls."""
        return {("global" if k is None else k): v for k, v in self.commands.items()}

    def requests_to(self, pattern: str) -> list[RequestRecord]:
        """Requests whose 'METHOD /path' (or route template) matches the fnmatch pattern."""
        return [r for r in self.requests if _pattern_matches(pattern, r.method, r.path, r.route)]

    @property
    def connected(self) -> bool:
        """A gateway connection is open and has an identified/resumed session."""
        return any(c.live and c.session is not None for c in self.gateway_connections)

    # ------------------------------------------------------------------ fault injection

    def fail_next(self, route_pattern: str, status: int = 429, *, retry_after: float = 0.3, count: int = 1,
                  code: Optional[int] = None, message: Optional[str] = None, is_global: bool = False) -> None:
        """Answer the next ``count`` matching REST calls with ``status``.  ``route_pattern`` is an
        fnmatch pattern on 'METHOD /path' below /api/v10 (method optional), e.g.
        'POST /channels/*/messages', 'PATCH /webhooks/*', or a route template
        'POST /channels/{channel_id}/messages'.  429s carry ``retry_after`` (body and headers)."""
        self._failures.append(dict(pattern=route_pattern, status=status, retry_after=retry_after, count=count,
                                   code=code, message=message, is_global=is_global))

    def set_rate_limit(self, route_pattern: str, limit: int, per: float) -> None:
        """Enforce a bucket of ``limit`` requests per ``per`` seconds (fixed window, one bucket per
        major parameter: channel, webhook, interaction) with the real headers; excess -> 429."""
        self._limits.append((route_pattern, limit, per))

    @property
    def rate_limited(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.status == 429]

    async def close_gateway(self, code: int = 4000, *, invalidate: bool = False, reason: str = "") -> None:
        """Force-close every open gateway websocket with ``code``.  discord.py reconnects to
        resume_gateway_url and RESUMEs (events dispatched meanwhile are replayed); with
        ``invalidate`` the session is forgotten, RESUME gets INVALID_SESSION and it re-IDENTIFYs."""
        conns = [c for c in self.gateway_connections if c.live]
        if invalidate:
            for s in self._sessions.values():
                s.valid = False
        for c in conns:
            c.queue.put_nowait((_CLOSE, code, reason))
        for c in conns:
            try:
                await asyncio.wait_for(c.closed.wait(), timeout=5)
            except asyncio.TimeoutError:
                pass

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT to every open connection."""
        await self._flush([c.send({"op": 7, "d": None, "s": None, "t": None})
                           for c in self.gateway_connections if c.live])

    async def send_invalid_session(self, resumable: bool = False) -> None:
        if not resumable:
            for s in self._sessions.values():
                s.valid = False
        await self._flush([c.send({"op": 9, "d": resumable, "s": None, "t": None})
                           for c in self.gateway_connections if c.live])

    # ------------------------------------------------------------------ injection API

    async def send_message(self, channel_id: int, author_id: int, content: str = "", *,
                           mentions: Optional[Iterable[int]] = None, attachments: Iterable[Any] = (),
                           reply_to: Optional[int] = None, embeds: Iterable[dict] = ()) -> FakeMessage:
        """A user (or another bot: add_user(..., bot=True)) posts in a channel; MESSAGE_CREATE is
        dispatched (content blanked for sessions without the Message Content intent unless it is a DM
        or mentions the bot).  ``mentions``: user ids (default: parsed from <@id> in content).
        ``attachments``: bytes, (filename, bytes[, content_type]) or dicts {filename, data, content_type}."""
        channel = self._channel(channel_id)
        author = self.users.get(author_id)
        if author is None:
            raise FakeDiscordError(f"unknown user {author_id}; add_user first")
        if channel.is_dm:
            if author_id not in channel.recipient_ids and author_id != self.bot_user_id:
                raise FakeDiscordError("author is not a recipient of this DM")
        elif author_id not in self._guild(channel.guild_id).members:  # type: ignore[arg-type]
            raise FakeDiscordError(f"user {author_id} is not a member of guild {channel.guild_id}")
        atts = [self._store_attachment(channel_id, a) for a in attachments]
        if not content and not atts and not list(embeds):
            raise FakeDiscordError("Discord does not deliver empty messages")
        user_ids = list(mentions) if mentions is not None else [int(x) for x in _USER_MENTION.findall(content)]
        ref = None
        if reply_to is not None:
            target = self.messages.get(reply_to)
            if target is None:
                raise FakeDiscordError(f"unknown message {reply_to}")
            ref = {"message_id": str(reply_to), "channel_id": str(target.channel_id), "type": 0}
            if target.guild_id:
                ref["guild_id"] = str(target.guild_id)
            if target.author_id not in user_ids and not target.webhook_id:
                user_ids.append(target.author_id)
        msg = FakeMessage(
            id=self.snowflake(), channel_id=channel_id, guild_id=channel.guild_id, author_id=author_id,
            author=author.payload(), content=content, embeds=list(embeds), attachments=atts,
            mentions=[u for u in user_ids if u in self.users],
            mention_roles=[int(r) for r in _ROLE_MENTION.findall(content)],
            mention_everyone="@everyone" in content or "@here" in content,
            message_reference=ref, type=19 if ref else 0, source="user")
        await self._flush(self._post(msg))
        return msg

    async def edit_user_message(self, message_id: int, content: str) -> FakeMessage:
        """The author edits their message: its content changes and MESSAGE_UPDATE is dispatched (discord.py's
        on_raw_message_edit, and on_message_edit where it had the message cached)."""
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted or msg.source != "user":
            raise FakeDiscordError(f"no user message {message_id}")
        if not content and not msg.attachments:
            raise FakeDiscordError("Discord does not keep an empty message")
        msg.content = content
        msg.mentions = [int(x) for x in _USER_MENTION.findall(content) if int(x) in self.users]
        await self._flush(self._updated(msg, None))
        return msg

    async def delete_message(self, message_id: int, *, by: Optional[int] = None) -> None:
        """A message is deleted in the client: by its author, or (`by`) by a member who may Manage Messages (a
        moderator deleting anyone's, the bot's included). MESSAGE_DELETE is dispatched; like Discord's, it does
        not say who deleted it."""
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted:
            raise FakeDiscordError(f"no message {message_id}")
        if by is not None and by != msg.author_id and msg.guild_id is not None:
            if not self.permissions_for(msg.channel_id, by) & Perm.MANAGE_MESSAGES:
                raise FakeDiscordError(f"user {by} may not delete others' messages here")
        await self._flush(self._deleted(msg))

    async def send_webhook_message(self, channel_id: int, content: str, *, username: str = "Some Webhook",
                                   webhook_id: Optional[int] = None) -> FakeMessage:
        """A message by a webhook that is not the bot's (e.g. another integration)."""
        channel = self._channel(channel_id)
        hook_id = webhook_id or self.snowflake()
        msg = FakeMessage(
            id=self.snowflake(), channel_id=channel_id, guild_id=channel.guild_id, author_id=hook_id,
            author={"id": str(hook_id), "username": username, "discriminator": "0000", "avatar": None,
                    "bot": True, "global_name": None},
            content=content, webhook_id=hook_id, username=username, source="webhook")
        await self._flush(self._post(msg))
        return msg

    async def invoke_command(self, name: str, options: Union[dict, list, None], user_id: int, channel_id: int,
                             guild_id: Optional[int] = None, locale: str = "en-US",
                             subcommand: Optional[str] = None) -> FakeInteraction:
        """A user runs a synced slash command.  ``name`` may include the subcommand ('char use') or
        pass ``subcommand`` ('use' or 'group sub').  ``options`` is {name: value}, converted with the
        synced schema (integers, numbers, booleans, users/channels/roles by id with ``resolved``,
        attachments given as bytes / (filename, bytes[, content_type]) / dict with ``resolved.attachments``);
        a list is sent as raw options.  Returns the interaction record right after dispatch."""
        inter = self._build_interaction(2, name, options, user_id=user_id, channel_id=channel_id,
                                        guild_id=guild_id, locale=locale, subcommand=subcommand)
        await self._dispatch_interaction(inter)
        return inter

    async def press_button(self, message_id: int, custom_id: str, user_id: int,
                           locale: str = "en-US") -> FakeInteraction:
        """A user presses the button ``custom_id`` under a message (a component interaction, type 3). As on
        Discord, only a button the message shows now can be pressed (FakeDiscordError otherwise). Its
        ``@original`` is the message the button is on: a deferred update (callback type 6) or an update (7) and
        later edits of ``@original`` change that message."""
        msg = self.messages.get(message_id)
        if msg is None or msg.deleted:
            raise FakeDiscordError(f"no message {message_id}")
        if custom_id not in self.button_ids(msg):
            raise FakeDiscordError(f"message {message_id} shows no button {custom_id!r}")
        channel = self._channel(msg.channel_id)
        guild = self.guilds.get(channel.guild_id) if channel.guild_id else None
        if user_id not in self.users or (guild is not None and user_id not in guild.members):
            raise FakeDiscordError(f"user {user_id} cannot see message {message_id}")
        inter_id = self.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload: dict[str, Any] = {
            "id": str(inter_id), "application_id": str(self.application_id), "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "message": self._message_payload(msg, gateway=False),
            "channel_id": str(msg.channel_id), "channel": self._channel_payload(channel), "token": token,
            "version": 1, "locale": locale, "entitlements": [], "attachment_size_limit": MAX_ATTACHMENT_BYTES,
            "app_permissions": str(self.permissions_for(msg.channel_id, self.bot_user_id)),
        }
        if guild is not None:
            payload.update(guild_id=str(guild.id), guild={"id": str(guild.id), "locale": guild.locale,
                                                          "features": []}, guild_locale=guild.locale,
                           member={**self._member_payload(guild.members[user_id]),
                                   "permissions": str(self.permissions_for(msg.channel_id, user_id))},
                           authorizing_integration_owners={"0": str(guild.id)}, context=0)
        else:
            payload.update(user=self.users[user_id].payload(), authorizing_integration_owners={"0": "0"}, context=1)
        inter = FakeInteraction(self, id=inter_id, token=token, type=3, name=custom_id, payload=payload,
                                user_id=user_id, channel_id=msg.channel_id, guild_id=channel.guild_id, locale=locale)
        inter.original_message_id = msg.id
        self.interactions[inter_id] = inter
        await self._dispatch_interaction(inter)
        return inter

    @staticmethod
    def button_ids(msg: FakeMessage) -> list[str]:
        """The custom ids of the buttons a message shows now, row by row."""
        return [c.get("custom_id") for row in msg.components for c in row.get("components", [])
                if c.get("type") == 2]

    @staticmethod
    def button_labels(msg: FakeMessage) -> list[str]:
        return [c.get("label") for row in msg.components for c in row.get("components", []) if c.get("type") == 2]

    async def autocomplete(self, name: str, focused: str, value: str = "", options: Optional[dict] = None, *,
                           user_id: int, channel_id: int, guild_id: Optional[int] = None, locale: str = "en-US",
                           subcommand: Optional[str] = None, timeout: float = 5.0) -> list[dict]:
        """Type ``value`` into option ``focused`` and return the bot's choices ([{name, value}])."""
        opts = dict(options or {})
        opts[focused] = value
        inter = self._build_interaction(4, name, opts, user_id=user_id, channel_id=channel_id, guild_id=guild_id,
                                        locale=locale, subcommand=subcommand, focused=focused)
        await self._dispatch_interaction(inter)
        await self.wait_for(lambda: inter.choices is not None or inter.expired or inter.errors, timeout=timeout)
        if inter.choices is None:
            raise FakeDiscordError(f"autocomplete for {name!r} not answered: expired={inter.expired} "
                                   f"errors={inter.errors}")
        return inter.choices

    # ------------------------------------------------------------------ internals: helpers

    def _guild(self, guild_id: Optional[int]) -> FakeGuild:
        guild = self.guilds.get(guild_id)  # type: ignore[arg-type]
        if guild is None:
            raise FakeDiscordError(f"unknown guild {guild_id}")
        return guild

    def _channel(self, channel_id: int) -> FakeChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise FakeDiscordError(f"unknown channel {channel_id}")
        return channel

    def _member_payload(self, member: FakeMember) -> dict:
        return {**member.partial_payload(), "user": self.users[member.user_id].payload()}

    def _channel_payload(self, channel: FakeChannel, *, with_guild_id: bool = True) -> dict:
        if channel.is_dm:
            return {"id": str(channel.id), "type": channel.type, "flags": 0,
                    "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
                    "recipients": [self.users[u].payload() for u in channel.recipient_ids]}
        data: dict[str, Any] = {
            "id": str(channel.id),
            "type": channel.type,
            "name": channel.name,
            "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
            "rate_limit_per_user": 0,
            "flags": 0,
            "parent_id": str(channel.parent_id) if channel.parent_id else None,
        }
        if with_guild_id:
            data["guild_id"] = str(channel.guild_id)
        if channel.is_thread:
            created = _iso(channel.created_ms)
            data.update({
                "owner_id": str(channel.owner_id),
                "message_count": channel.message_count,
                "member_count": 1,
                "total_message_sent": channel.message_count,
                "thread_metadata": {"archived": channel.archived, "auto_archive_duration": 1440,
                                    "archive_timestamp": created, "locked": channel.locked,
                                    "create_timestamp": created, "invitable": True},
            })
        else:
            data.update({
                "position": channel.position,
                "permission_overwrites": [o.payload() for o in channel.overwrites],
                "topic": channel.topic,
                "nsfw": channel.nsfw,
                "default_auto_archive_duration": 1440,
            })
            if channel.type == 2:
                data.update({"bitrate": 64000, "user_limit": 0, "rtc_region": None})
        return data

    def _guild_payload(self, guild: FakeGuild) -> dict:
        return {
            "id": str(guild.id), "name": guild.name, "icon": None, "splash": None, "discovery_splash": None,
            "banner": None, "owner_id": str(guild.owner_id), "afk_channel_id": None, "afk_timeout": 300,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
            "roles": [r.payload() for r in guild.roles.values()], "emojis": [], "stickers": [], "features": [],
            "mfa_level": 0, "application_id": None, "system_channel_id": None, "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "vanity_url_code": None, "description": None, "premium_tier": 0, "premium_subscription_count": 0,
            "preferred_locale": guild.locale, "nsfw_level": 0, "premium_progress_bar_enabled": False,
            "max_members": 500000, "max_video_channel_users": 25, "incidents_data": None,
        }

    def _guild_create_payload(self, guild: FakeGuild, intents: int = -1) -> dict:
        if intents & Intent.GUILD_MEMBERS:
            members = list(guild.members.values())
        else:  # without the intent Discord only sends the bot itself
            members = [guild.members[self.bot_user_id]]
        chans = [self.channels[c] for c in guild.channel_ids]
        return {
            **self._guild_payload(guild),
            "joined_at": guild.joined_at, "large": False, "unavailable": False,
            "member_count": len(guild.members),
            "members": [self._member_payload(m) for m in members],
            "channels": [self._channel_payload(c, with_guild_id=False) for c in chans if not c.is_thread],
            "threads": [self._channel_payload(c) for c in chans if c.is_thread],
            "presences": [], "voice_states": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [], "lazy": True,
        }

    def _store_attachment(self, channel_id: int, spec: Any, *, ephemeral: bool = False) -> FakeAttachment:
        content_type = None
        description = None
        if isinstance(spec, (bytes, bytearray)):
            filename, data = "file.bin", bytes(spec)
        elif isinstance(spec, tuple):
            filename, data = spec[0], bytes(spec[1])
            content_type = spec[2] if len(spec) > 2 else None
        elif isinstance(spec, dict):
            filename, data = spec["filename"], bytes(spec["data"])
            content_type = spec.get("content_type")
            description = spec.get("description")
        else:
            raise FakeDiscordError(f"bad attachment spec {spec!r}")
        filename = re.sub(r"\s+", "_", filename)  # Discord replaces spaces
        att_id = self.snowflake()
        ex = format(int(time.time()) + 86400, "x")
        sig = hashlib.sha256(f"{att_id}{ex}".encode()).hexdigest()
        path = f"/cdn/attachments/{channel_id}/{att_id}/{filename}"
        query = f"?ex={ex}&is={format(int(time.time()), 'x')}&hm={sig}&"
        att = FakeAttachment(att_id, filename, data, channel_id, content_type, self.base_url + path + query,
                             self.base_url + path.replace("/cdn/", "/cdn/media/", 1) + query,
                             ephemeral=ephemeral, description=description)
        self.attachments[att_id] = att
        return att

    def _message_payload(self, msg: FakeMessage, *, gateway: bool) -> dict:
        data: dict[str, Any] = {
            "id": str(msg.id), "channel_id": str(msg.channel_id), "type": msg.type,
            "author": msg.author, "content": msg.content, "timestamp": msg.timestamp,
            "edited_timestamp": _iso(msg.edited_ms) if msg.edited_ms else None, "tts": msg.tts,
            "mention_everyone": msg.mention_everyone, "mentions": [], "mention_roles": [str(r) for r in msg.mention_roles],
            "attachments": [a.payload() for a in msg.attachments], "embeds": msg.embeds, "pinned": False,
            "flags": msg.flags, "components": msg.components,
        }
        guild = self.guilds.get(msg.guild_id) if msg.guild_id else None
        for uid in msg.mentions:
            user = self.users.get(uid)
            if user is None:
                continue
            mention = user.payload()
            if guild is not None and uid in guild.members:
                mention["member"] = guild.members[uid].partial_payload()
            data["mentions"].append(mention)
        if msg.webhook_id is not None:
            data["webhook_id"] = str(msg.webhook_id)
        if msg.application_id is not None:
            data["application_id"] = str(msg.application_id)
        if msg.nonce is not None:
            data["nonce"] = msg.nonce
        if msg.message_reference is not None:
            data["message_reference"] = msg.message_reference
            ref = self.messages.get(int(msg.message_reference["message_id"]))
            data["referenced_message"] = (self._message_payload(ref, gateway=False)
                                          if ref is not None and not ref.deleted else None)
        if msg.interaction_id is not None:
            inter = self.interactions[msg.interaction_id]
            user = self.users[inter.user_id].payload()
            data["interaction_metadata"] = {"id": str(inter.id), "type": inter.type, "name": inter.name,
                                            "user": user, "authorizing_integration_owners": {}}
            data["interaction"] = {"id": str(inter.id), "type": inter.type, "name": inter.name, "user": user}
        if gateway and guild is not None:
            data["guild_id"] = str(guild.id)
            if msg.webhook_id is None and msg.author_id in guild.members:
                data["member"] = guild.members[msg.author_id].partial_payload()
        return data

    def _visible_to(self, session: _Session, payload: dict, msg: FakeMessage) -> dict:
        """Blank what a session without the Message Content intent may not read."""
        if session.intents & Intent.MESSAGE_CONTENT:
            return payload
        if msg.guild_id is None or msg.author_id == self.bot_user_id or self.bot_user_id in msg.mentions:
            return payload
        return {**payload, "content": "", "embeds": [], "attachments": [], "components": []}

    def _post(self, msg: FakeMessage) -> list[asyncio.Future]:
        """Store a new message and dispatch MESSAGE_CREATE (unless ephemeral)."""
        loop = asyncio.get_running_loop()
        msg.created_at = loop.time()
        msg.history.append((msg.created_at, msg.content))
        self.messages[msg.id] = msg
        channel = self.channels.get(msg.channel_id)
        if channel is not None:
            channel.last_message_id = msg.id
            if channel.is_thread:
                channel.message_count += 1
        self._notify()
        if msg.ephemeral:
            return []
        payload = self._message_payload(msg, gateway=True)
        intent = Intent.DIRECT_MESSAGES if msg.guild_id is None else Intent.GUILD_MESSAGES
        return self._dispatch("MESSAGE_CREATE", payload, intent=intent,
                              per_session=lambda s, p: self._visible_to(s, p, msg))

    def _updated(self, msg: FakeMessage, allowed_mentions: Optional[dict]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        msg.edited_ms = time.time() * 1000
        msg.history.append((loop.time(), msg.content))
        msg.edit_allowed_mentions.append(allowed_mentions)
        self._notify()
        if msg.ephemeral:
            return []
        payload = self._message_payload(msg, gateway=True)
        intent = Intent.DIRECT_MESSAGES if msg.guild_id is None else Intent.GUILD_MESSAGES
        return self._dispatch("MESSAGE_UPDATE", payload, intent=intent,
                              per_session=lambda s, p: self._visible_to(s, p, msg))

    def _deleted(self, msg: FakeMessage) -> list[asyncio.Future]:
        msg.deleted = True
        self._notify()
        if msg.ephemeral:
            return []
        data = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if msg.guild_id:
            data["guild_id"] = str(msg.guild_id)
        intent = Intent.DIRECT_MESSAGES if msg.guild_id is None else Intent.GUILD_MESSAGES
        return self._dispatch("MESSAGE_DELETE", data, intent=intent)

    # ------------------------------------------------------------------ gateway

    def _dispatch(self, event: str, data: dict, *, intent: Optional[int] = None,
                  per_session: Optional[Callable[[_Session, dict], Optional[dict]]] = None) -> list[asyncio.Future]:
        futures = []
        for session in self._sessions.values():
            if not session.valid:
                continue
            if intent is not None and not session.intents & intent:
                continue
            if not session.owns(data.get("guild_id") or (data.get("id") if event == "GUILD_CREATE" else None)):
                continue
            payload = per_session(session, data) if per_session else data
            if payload is None:
                continue
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": payload}
            session.events.append(frame)
            if session.conn is not None and session.conn.live:
                futures.append(session.conn.send(frame))
                self.gateway_log.append(("send", 0, event))
        return futures

    def _dispatch_guild_event(self, event: str, make: Callable[[], dict], guild_id: int, intent: int) -> None:
        if not self._sessions:
            return
        if event == "GUILD_CREATE":
            guild = self.guilds[guild_id]
            self._dispatch(event, {"id": str(guild_id)}, intent=intent,
                           per_session=lambda s, _: self._guild_create_payload(guild, s.intents))
        else:
            self._dispatch(event, make(), intent=intent)

    async def _flush(self, futures: list[asyncio.Future]) -> None:
        if futures:
            await asyncio.wait(futures, timeout=5)
        self._notify()

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=2.0, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, request.path, dict(request.query))
        self.gateway_connections.append(conn)
        conn.writer = asyncio.create_task(self._ws_writer(conn))
        try:
            if request.query.get("v") not in (None, "9", "10"):
                conn.queue.put_nowait((_CLOSE, 4012, "Invalid API version"))
            elif request.query.get("encoding", "json") != "json":
                conn.queue.put_nowait((_CLOSE, 4002, "Decode error"))
            else:
                conn.send({"op": 10, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000),
                                            "_trace": ["fake-gateway"]}, "s": None, "t": None})
                self.gateway_log.append(("send", 10, None))
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    try:
                        payload = json.loads(frame.data)
                    except ValueError:
                        conn.queue.put_nowait((_CLOSE, 4002, "Decode error"))
                        continue
                    await self._on_frame(conn, payload)
                    self._notify()
                elif frame.type == WSMsgType.BINARY:
                    conn.queue.put_nowait((_CLOSE, 4002, "Decode error"))
                else:
                    break
        finally:
            conn.close_code = conn.close_code or ws.close_code
            conn.closed.set()
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            while not conn.queue.empty():  # release anyone waiting on undelivered frames
                item = conn.queue.get_nowait()
                if item[0] is not _CLOSE and not item[1].done():
                    item[1].set_result(None)
            if conn.writer is not None:
                if conn.closing:  # the writer is closing the socket: let it finish the handshake
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(conn.writer), timeout=3)
                else:
                    conn.writer.cancel()
            if not ws.closed:
                await ws.close()
            self._notify()
        return ws

    async def _ws_writer(self, conn: _Conn) -> None:
        while True:
            item = await conn.queue.get()
            if item[0] is _CLOSE:
                _, code, reason = item
                conn.closing = True
                conn.close_code = code
                self.gateway_log.append(("close", code, reason))
                conn.closed.set()
                if conn.session is not None and conn.session.conn is conn:
                    conn.session.conn = None
                await conn.ws.close(code=code, message=reason.encode())
                self._notify()
                return
            text, fut = item
            try:
                await conn.ws.send_str(text)
            except Exception:  # connection went away: the session keeps the event for RESUME
                pass
            if not fut.done():
                fut.set_result(None)

    async def _on_frame(self, conn: _Conn, payload: dict) -> None:
        op, d = payload.get("op"), payload.get("d")
        self.gateway_log.append(("recv", op, None))
        if op == 1:
            conn.heartbeats += 1
            conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, d or {})
        elif op == 6:
            await self._resume(conn, d or {})
        elif conn.session is None:
            conn.queue.put_nowait((_CLOSE, 4003, "Not authenticated"))
        elif op == 3:
            self.presence_updates.append(d)
        elif op == 4:
            pass  # voice state: not supported, ignored
        elif op == 8:
            self._request_members(conn, d or {})
        else:
            conn.queue.put_nowait((_CLOSE, 4001, "Unknown opcode"))

    async def _identify(self, conn: _Conn, d: dict) -> None:
        self.identify_payloads.append(d)
        if conn.session is not None:
            conn.queue.put_nowait((_CLOSE, 4005, "Already authenticated"))
            return
        if d.get("token") != self.token:
            conn.queue.put_nowait((_CLOSE, 4004, "Authentication failed"))
            return
        intents = d.get("intents")
        if not isinstance(intents, int):
            conn.queue.put_nowait((_CLOSE, 4013, "Invalid intent(s)"))
            return
        for name, bit in Intent.PRIVILEGED.items():
            if intents & bit and name not in self.privileged_intents:
                conn.queue.put_nowait((_CLOSE, 4014, "Disallowed intent(s)"))
                return
        self.identify_count += 1
        shard = d.get("shard")
        if shard is not None and (not isinstance(shard, list) or len(shard) != 2 or not 0 <= shard[0] < shard[1]):
            conn.queue.put_nowait((_CLOSE, 4010, "Invalid shard"))
            return
        session = _Session(secrets.token_hex(16), intents, conn=conn, shard=shard)
        self._sessions[session.id] = session
        conn.session = session
        flags = 0
        for name, bit in (("presences", 1 << 12), ("members", 1 << 14), ("message_content", 1 << 18)):
            if name in self.privileged_intents:
                flags |= bit
        ready = {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds if session.owns(g)],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_gateway_url,
            "application": {"id": str(self.application_id), "flags": flags},
            "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
            "geo_ordered_rtc_regions": [], "user_settings": {}, "_trace": ["fake-gateway"],
        }
        if shard is not None:
            ready["shard"] = shard
        futures = self._dispatch_to(session, "READY", ready)
        if intents & Intent.GUILDS:
            for guild in self.guilds.values():
                if not session.owns(guild.id):
                    continue
                futures += self._dispatch_to(session, "GUILD_CREATE", self._guild_create_payload(guild, intents))
        await self._flush(futures)

    def _dispatch_to(self, session: _Session, event: str, data: dict) -> list[asyncio.Future]:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        self.gateway_log.append(("send", 0, event))
        if session.conn is not None and session.conn.live:
            return [session.conn.send(frame)]
        return []

    async def _resume(self, conn: _Conn, d: dict) -> None:
        session = self._sessions.get(d.get("session_id") or "")
        if d.get("token") != self.token:
            conn.queue.put_nowait((_CLOSE, 4004, "Authentication failed"))
            return
        if session is None or not session.valid:
            conn.send({"op": 9, "d": False, "s": None, "t": None})
            self.gateway_log.append(("send", 9, None))
            return
        seq = d.get("seq") or 0
        if session.conn is not None and session.conn is not conn and session.conn.live:
            session.conn.queue.put_nowait((_CLOSE, 4000, "Session resumed elsewhere"))
        session.conn = conn
        conn.session = session
        self.resume_count += 1
        futures = [conn.send(frame) for frame in session.events if frame["s"] > seq]
        futures += self._dispatch_to(session, "RESUMED", {"_trace": ["fake-gateway"]})
        await self._flush(futures)

    def _request_members(self, conn: _Conn, d: dict) -> None:
        guild = self.guilds.get(int(d.get("guild_id", 0)))
        session = conn.session
        assert session is not None
        members: list[FakeMember] = []
        not_found: list[str] = []
        if guild is not None:
            if d.get("user_ids"):
                ids = d["user_ids"] if isinstance(d["user_ids"], list) else [d["user_ids"]]
                for uid in ids:
                    m = guild.members.get(int(uid))
                    if m is None:
                        not_found.append(str(uid))
                    else:
                        members.append(m)
            else:
                query = (d.get("query") or "").lower()
                for m in guild.members.values():
                    u = self.users[m.user_id]
                    names = [u.username.lower(), (u.global_name or "").lower(), (m.nick or "").lower()]
                    if any(n.startswith(query) for n in names if n or not query):
                        members.append(m)
                limit = d.get("limit") or 0
                if limit:
                    members = members[:limit]
        data = {"guild_id": str(d.get("guild_id")), "members": [self._member_payload(m) for m in members],
                "chunk_index": 0, "chunk_count": 1, "not_found": not_found}
        if d.get("nonce"):
            data["nonce"] = d["nonce"]
        self._dispatch_to(session, "GUILD_MEMBERS_CHUNK", data)

    # ------------------------------------------------------------------ interactions

    def _find_command(self, name: str, guild_id: Optional[int]) -> dict:
        if guild_id is not None:
            for cmd in self.commands.get(guild_id, []):
                if cmd["name"] == name and cmd.get("type", 1) == 1:
                    return cmd
        for cmd in self.commands.get(None, []):
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                if guild_id is None and not _allowed_in_dm(cmd):
                    raise FakeDiscordError(f"command {name!r} is not available in DMs")
                return cmd
        raise FakeDiscordError(f"command {name!r} has not been synced (global or for guild {guild_id})")

    def _convert_option(self, schema: dict, value: Any, *, channel_id: int, guild_id: Optional[int],
                        resolved: dict, focused: bool) -> dict:
        otype, oname = schema["type"], schema["name"]
        out: dict[str, Any] = {"name": oname, "type": otype}
        if focused:
            out["value"] = str(value)
            out["focused"] = True
            return out
        if otype == OPT_STRING:
            value = str(value)
            if "min_length" in schema and len(value) < schema["min_length"]:
                raise FakeDiscordError(f"option {oname!r}: shorter than min_length")
            if "max_length" in schema and len(value) > schema["max_length"]:
                raise FakeDiscordError(f"option {oname!r}: longer than max_length")
        elif otype == OPT_INT:
            if isinstance(value, bool) or int(value) != value:
                raise FakeDiscordError(f"option {oname!r} wants an integer, got {value!r}")
            value = int(value)
        elif otype == OPT_NUMBER:
            value = float(value)
        elif otype == OPT_BOOL:
            value = bool(value)
        elif otype in (OPT_USER, OPT_MENTIONABLE) and int(value) in self.users:
            uid = int(value)
            resolved.setdefault("users", {})[str(uid)] = self.users[uid].payload()
            guild = self.guilds.get(guild_id) if guild_id else None
            if guild is not None and uid in guild.members:
                resolved.setdefault("members", {})[str(uid)] = {
                    **guild.members[uid].partial_payload(),
                    "permissions": str(self.permissions_for(channel_id, uid))}
            value = str(uid)
        elif otype in (OPT_ROLE, OPT_MENTIONABLE):
            guild = self._guild(guild_id)
            role = guild.roles.get(int(value))
            if role is None:
                raise FakeDiscordError(f"option {oname!r}: unknown role {value}")
            resolved.setdefault("roles", {})[str(role.id)] = role.payload()
            value = str(role.id)
        elif otype == OPT_CHANNEL:
            ch = self._channel(int(value))
            data = {k: v for k, v in self._channel_payload(ch).items()
                    if k in ("id", "name", "type", "parent_id", "thread_metadata", "owner_id", "member_count",
                             "message_count", "guild_id")}
            data["permissions"] = str(self.permissions_for(ch.id, self.bot_user_id))
            resolved.setdefault("channels", {})[str(ch.id)] = data
            value = str(ch.id)
        elif otype == OPT_ATTACHMENT:
            att = value if isinstance(value, FakeAttachment) else self._store_attachment(channel_id, value,
                                                                                         ephemeral=True)
            resolved.setdefault("attachments", {})[str(att.id)] = att.payload()
            value = str(att.id)
        if otype in (OPT_INT, OPT_NUMBER):
            if "min_value" in schema and value < schema["min_value"]:
                raise FakeDiscordError(f"option {oname!r}: below min_value")
            if "max_value" in schema and value > schema["max_value"]:
                raise FakeDiscordError(f"option {oname!r}: above max_value")
        if schema.get("choices") and value not in [c["value"] for c in schema["choices"]]:
            raise FakeDiscordError(f"option {oname!r}: {value!r} is not one of the choices")
        out["value"] = value
        return out

    def _build_interaction(self, itype: int, name: str, options: Union[dict, list, None], *, user_id: int,
                           channel_id: int, guild_id: Optional[int], locale: str, subcommand: Optional[str],
                           focused: Optional[str] = None) -> FakeInteraction:
        parts = name.split()
        name, path = parts[0], parts[1:] + (subcommand.split() if subcommand else [])
        channel = self._channel(channel_id)
        if guild_id is None:
            guild_id = channel.guild_id
        elif channel.guild_id != guild_id:
            raise FakeDiscordError(f"channel {channel_id} is not in guild {guild_id}")
        if user_id not in self.users:
            raise FakeDiscordError(f"unknown user {user_id}")
        guild = self.guilds.get(guild_id) if guild_id else None
        if guild is not None and user_id not in guild.members:
            raise FakeDiscordError(f"user {user_id} is not a member of guild {guild_id}")
        cmd = self._find_command(name, guild_id)
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1}
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        resolved: dict[str, dict] = {}
        schema_opts = cmd.get("options", [])
        container: list = []
        top = container
        for sub in path:
            sub_schema = next((o for o in schema_opts if o["name"] == sub and o["type"] in (OPT_SUB, OPT_GROUP)), None)
            if sub_schema is None:
                raise FakeDiscordError(f"{name!r} has no subcommand {sub!r}")
            node = {"name": sub, "type": sub_schema["type"], "options": []}
            container.append(node)
            container = node["options"]
            schema_opts = sub_schema.get("options", [])
        if any(o["type"] in (OPT_SUB, OPT_GROUP) for o in schema_opts):
            raise FakeDiscordError(f"{name!r} needs a subcommand: {[o['name'] for o in schema_opts]}")
        if isinstance(options, list):
            container.extend(options)
        else:
            given = dict(options or {})
            for schema in schema_opts:
                if schema["name"] in given:
                    is_focused = schema["name"] == focused
                    if is_focused and not schema.get("autocomplete"):
                        raise FakeDiscordError(f"option {schema['name']!r} has no autocomplete")
                    container.append(self._convert_option(
                        schema, given.pop(schema["name"]), channel_id=channel_id, guild_id=guild_id,
                        resolved=resolved, focused=is_focused))
                elif schema.get("required") and itype == 2:
                    raise FakeDiscordError(f"required option {schema['name']!r} missing")
            if given:
                raise FakeDiscordError(f"unknown options {sorted(given)} for {name!r} {' '.join(path)}")
        if top:
            data["options"] = top
        if resolved:
            data["resolved"] = resolved
        inter_id = self.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload: dict[str, Any] = {
            "id": str(inter_id), "application_id": str(self.application_id), "type": itype, "data": data,
            "channel_id": str(channel_id), "channel": self._channel_payload(channel), "token": token, "version": 1,
            "locale": locale, "entitlements": [], "attachment_size_limit": MAX_ATTACHMENT_BYTES,
            "app_permissions": str(self.permissions_for(channel_id, self.bot_user_id)),
        }
        if guild is not None:
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": guild.locale, "features": []}
            payload["guild_locale"] = guild.locale
            payload["member"] = {**self._member_payload(guild.members[user_id]),
                                 "permissions": str(self.permissions_for(channel_id, user_id))}
            payload["authorizing_integration_owners"] = {"0": str(guild.id)}
            payload["context"] = 0
        else:
            payload["user"] = self.users[user_id].payload()
            payload["authorizing_integration_owners"] = {"0": "0"}
            payload["context"] = 1
        inter = FakeInteraction(self, id=inter_id, token=token, type=itype, name=" ".join([name, *path]),
                                payload=payload, user_id=user_id, channel_id=channel_id, guild_id=guild_id,
                                locale=locale)
        self.interactions[inter_id] = inter
        return inter

    async def _dispatch_interaction(self, inter: FakeInteraction) -> None:
        if not self.connected:
            raise FakeDiscordError("no gateway session is connected to receive the interaction")
        futures = self._dispatch("INTERACTION_CREATE", inter.payload)
        loop = asyncio.get_running_loop()
        inter.dispatched_at = loop.time()
        inter._timer = loop.call_later(self.interaction_deadline, self._expire, inter)
        await self._flush(futures)

    def _expire(self, inter: FakeInteraction) -> None:
        if not inter.acknowledged:
            inter.expired = True
            self._notify()

    # ------------------------------------------------------------------ REST plumbing

    ROUTES: list[tuple[str, str, str]] = [
        ("GET", "/gateway", "_r_gateway"),
        ("GET", "/gateway/bot", "_r_gateway_bot"),
        ("GET", "/users/@me", "_r_me"),
        ("POST", "/users/@me/channels", "_r_create_dm"),
        ("GET", "/users/{user_id}", "_r_user"),
        ("GET", "/oauth2/applications/@me", "_r_application"),
        ("GET", "/applications/@me", "_r_application"),
        ("GET", "/applications/{application_id}/commands", "_r_get_commands"),
        ("PUT", "/applications/{application_id}/commands", "_r_put_commands"),
        ("POST", "/applications/{application_id}/commands", "_r_post_command"),
        ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", "_r_get_commands"),
        ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", "_r_put_commands"),
        ("POST", "/applications/{application_id}/guilds/{guild_id}/commands", "_r_post_command"),
        ("GET", "/channels/{channel_id}", "_r_get_channel"),
        ("GET", "/channels/{channel_id}/messages", "_r_history"),
        ("POST", "/channels/{channel_id}/messages", "_r_create_message"),
        ("GET", "/channels/{channel_id}/messages/{message_id}", "_r_get_message"),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}", "_r_edit_message"),
        ("DELETE", "/channels/{channel_id}/messages/{message_id}", "_r_delete_message"),
        ("POST", "/channels/{channel_id}/typing", "_r_typing"),
        ("GET", "/channels/{channel_id}/webhooks", "_r_channel_webhooks"),
        ("POST", "/channels/{channel_id}/webhooks", "_r_create_webhook"),
        ("GET", "/guilds/{guild_id}/webhooks", "_r_guild_webhooks"),
        ("GET", "/webhooks/{webhook_id}", "_r_get_webhook"),
        ("PATCH", "/webhooks/{webhook_id}", "_r_edit_webhook"),
        ("DELETE", "/webhooks/{webhook_id}", "_r_delete_webhook"),
        ("GET", "/webhooks/{webhook_id}/{webhook_token}", "_r_get_webhook"),
        ("PATCH", "/webhooks/{webhook_id}/{webhook_token}", "_r_edit_webhook"),
        ("DELETE", "/webhooks/{webhook_id}/{webhook_token}", "_r_delete_webhook"),
        ("POST", "/webhooks/{webhook_id}/{webhook_token}", "_r_execute_webhook"),
        ("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "_r_get_webhook_message"),
        ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "_r_edit_webhook_message"),
        ("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "_r_delete_webhook_message"),
        ("POST", "/interactions/{interaction_id}/{interaction_token}/callback", "_r_interaction_callback"),
        ("GET", "/guilds/{guild_id}", "_r_get_guild"),
        ("GET", "/guilds/{guild_id}/channels", "_r_guild_channels"),
        ("GET", "/guilds/{guild_id}/roles", "_r_guild_roles"),
        ("GET", "/guilds/{guild_id}/members", "_r_guild_members"),
        ("GET", "/guilds/{guild_id}/members/{user_id}", "_r_guild_member"),
    ]
    _COMPILED = [(m, t, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t) + "$"), h) for m, t, h in ROUTES]

    async def _api_handler(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        loop = asyncio.get_running_loop()
        record = RequestRecord(method, path, None, dict(request.query), None, [], at=loop.time())
        headers: dict[str, str] = {}
        try:
            body, files = await self._read_body(request)
            record.json, record.files = body, [(f["filename"], f["data"]) for f in files]
            route = None
            allowed_methods = []
            for m, template, regex, handler in self._COMPILED:
                match = regex.match(path)
                if match:
                    allowed_methods.append(m)
                    if m == method:
                        route = (template, match.groupdict(), handler)
                        break
            if route is None:
                if allowed_methods:
                    raise _ApiError(405, 0, "405: Method Not Allowed")
                raise _ApiError(404, 0, "404: Not Found")
            template, params, handler = route
            record.route = f"{method} {template}"
            record.authorized = request.headers.get("Authorization") == f"Bot {self.token}"
            needs_auth = not (template.startswith("/webhooks/{webhook_id}/{webhook_token}")
                              or template.startswith("/interactions/"))
            if needs_auth and not record.authorized:
                raise _ApiError(401, 0, "401: Unauthorized")
            injected = self._take_failure(method, path, record.route)
            if injected is not None:
                status, data, headers = injected
            else:
                headers, limited = self._rate_limit(method, path, record.route)
                if limited is not None:
                    status, data = 429, limited
                else:
                    req = _Req(method, path, params, dict(request.query), body, files, request.headers)
                    status, data = await getattr(self, handler)(req)
        except _ApiError as e:
            status, data = e.status, e.body()
        record.status, record.response = status, data
        self.requests.append(record)
        self._notify()
        headers = {"Via": "1.1 google", **headers}
        if data is None or status == 204:
            return web.Response(status=204, headers=headers)
        headers["Content-Type"] = "application/json"  # exactly: discord.py compares the whole header
        return web.Response(status=status, body=json.dumps(data).encode(), headers=headers)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[dict]]:
        if not request.can_read_body:
            return None, []
        ctype = request.content_type
        if ctype.startswith("multipart/"):
            body: Any = None
            files = []
            reader = await request.multipart()
            async for part in reader:  # type: ignore[union-attr]
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    body = json.loads(data)
                elif part.filename:  # type: ignore[union-attr]
                    files.append({"name": part.name, "filename": part.filename, "data": bytes(data),  # type: ignore
                                  "content_type": part.headers.get("Content-Type")})  # type: ignore[union-attr]
            return body, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            raise _ApiError(400, 50109, "The request body contains invalid JSON.")

    def _take_failure(self, method: str, path: str, route: str) -> Optional[tuple[int, dict, dict]]:
        for failure in self._failures:
            if _pattern_matches(failure["pattern"], method, path, route):
                failure["count"] -= 1
                if failure["count"] <= 0:
                    self._failures.remove(failure)
                status = failure["status"]
                if status == 429:
                    return 429, *self._429(failure["retry_after"], route, is_global=failure["is_global"])
                message = failure["message"] or {500: "500: Internal Server Error", 502: "502: Bad Gateway",
                                                 503: "503: Service Unavailable"}.get(status, f"{status}: Error")
                return status, {"message": message, "code": failure["code"] or 0}, {}
        return None

    def _429(self, retry_after: float, route: str, *, is_global: bool = False) -> tuple[dict, dict]:
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
        headers = {
            "Retry-After": str(max(1, int(retry_after + 0.999))),
            "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": hashlib.md5(route.encode()).hexdigest(),
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        return body, headers

    def _rate_limit(self, method: str, path: str, route: str) -> tuple[dict, Optional[dict]]:
        now = time.monotonic()
        for pattern, limit, per in self._limits:
            if not _pattern_matches(pattern, method, path, route):
                continue
            segs = path.split("/")
            major = "/".join(segs[1:4] if segs[1] == "webhooks" else segs[1:3])
            key = (pattern, major)
            window = self._buckets.get(key)
            if window is None or now >= window[1]:
                window = self._buckets[key] = [0, now + per]
            # rounded up: a client sleeping exactly reset_after must land in the next window
            reset_after = math.ceil(max(window[1] - now, 0.0) * 1000) / 1000
            bucket = hashlib.md5(pattern.encode()).hexdigest()
            if window[0] >= limit:
                body, headers = self._429(reset_after, route)
                headers["X-RateLimit-Limit"] = str(limit)
                headers["X-RateLimit-Bucket"] = bucket
                return headers, body
            window[0] += 1
            return {
                "X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(limit - window[0]),
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": bucket,
            }, None
        return {
            "X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}", "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": hashlib.md5(route.encode()).hexdigest(),
        }, None

    async def _cdn_handler(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        record = RequestRecord("GET", "/cdn/" + tail, "GET /cdn/attachments", dict(request.query), None, [],
                               at=asyncio.get_running_loop().time())
        m = re.match(r"^(?:media/)?attachments/(\d+)/(\d+)/(.+)$", tail)
        att = self.attachments.get(int(m.group(2))) if m else None
        if att is None or att.filename != m.group(3) or att.channel_id != int(m.group(1)):  # type: ignore[union-attr]
            record.status = 404
            self.requests.append(record)
            self._notify()
            return web.Response(status=404, text="Not Found")
        record.status = 200
        self.requests.append(record)
        self._notify()
        return web.Response(status=200, body=att.data,
                            headers={"Content-Type": att.content_type or "application/octet-stream"})

    # ------------------------------------------------------------------ REST: validation helpers

    def _check_body(self, body: Any, files: list[dict], *, creating: bool, prefix: tuple = ()) -> dict:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            raise _form_error((*prefix, "content"), "BASE_TYPE_STRING", "Must be a string.")
        if content is not None and len(content) > MAX_CONTENT:
            raise _form_error((*prefix, "content"), "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error((*prefix, "embeds"), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for i, e in enumerate(embeds):
            for key, lim in (("title", 256), ("description", 4096)):
                if len(e.get(key) or "") > lim:
                    raise _form_error((*prefix, "embeds", i, key), "BASE_TYPE_MAX_LENGTH",
                                      f"Must be {lim} or fewer in length.")
            total += len(e.get("title") or "") + len(e.get("description") or "")
            total += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in e.get("fields") or [])
            total += len((e.get("footer") or {}).get("text", "")) + len((e.get("author") or {}).get("name", ""))
        if total > 6000:
            raise _form_error((*prefix, "embeds"), "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        am = body.get("allowed_mentions")
        if am is not None:
            parse = am.get("parse") or []
            for kind in ("users", "roles"):
                if kind in parse and am.get(kind):
                    raise _form_error((*prefix, "allowed_mentions", "parse"), "SET_TYPE_ALREADY_CONTAINS_VALUE",
                                      f"parse:{kind} and {kind} are mutually exclusive")
        for f in files:
            if len(f["data"]) > MAX_ATTACHMENT_BYTES:
                raise _ApiError(413, 40005, "Request entity too large")
        if creating:
            has_content = bool(content and content.strip())
            if not (has_content or embeds or files or body.get("sticker_ids") or body.get("components")
                    or body.get("poll")):
                raise _ApiError(400, 50006, "Cannot send an empty message")
        return body

    def _mentions(self, content: str, allowed: Optional[dict], reply_author: Optional[int]) -> tuple[list, list, bool]:
        users = [int(u) for u in _USER_MENTION.findall(content)]
        roles = [int(r) for r in _ROLE_MENTION.findall(content)]
        everyone = "@everyone" in content or "@here" in content
        if allowed is None:
            out_users = users + ([reply_author] if reply_author else [])
            return [u for u in dict.fromkeys(out_users) if u in self.users], roles, everyone
        parse = allowed.get("parse") or []
        ok_users = {int(u) for u in allowed.get("users") or []}
        ok_roles = {int(r) for r in allowed.get("roles") or []}
        out_users = [u for u in users if "users" in parse or u in ok_users]
        if reply_author and allowed.get("replied_user"):
            out_users.append(reply_author)
        out_roles = [r for r in roles if "roles" in parse or r in ok_roles]
        return [u for u in dict.fromkeys(out_users) if u in self.users], out_roles, everyone and "everyone" in parse

    def _bot_channel(self, channel_id: int, *, need: int = 0) -> FakeChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise _unknown("Channel")
        if channel.is_dm:
            return channel
        perms = self.permissions_for(channel_id, self.bot_user_id)
        if not perms & Perm.VIEW_CHANNEL:
            raise MISSING_ACCESS()
        if need and (perms & need) != need:
            raise MISSING_PERMS()
        return channel

    def _new_files(self, channel_id: int, body: dict, files: list[dict]) -> list[FakeAttachment]:
        meta = {str(a.get("id")): a for a in body.get("attachments") or []}
        out = []
        for i, f in enumerate(files):
            m = re.match(r"files\[(\d+)\]", f["name"] or "")
            desc = meta.get(m.group(1) if m else str(i), {}).get("description")
            out.append(self._store_attachment(channel_id, {"filename": f["filename"], "data": f["data"],
                                                           "content_type": f.get("content_type"),
                                                           "description": desc}))
        return out

    def _apply_edit(self, msg: FakeMessage, body: dict, files: list[dict], *, prefix: tuple = ()) -> list:
        """Validate an edit as a whole, then apply it (a refused edit leaves the message unchanged)."""
        body = self._check_body(body, files, creating=False, prefix=prefix)
        content = (body["content"] or "") if "content" in body else msg.content
        embeds = (body["embeds"] or []) if "embeds" in body else msg.embeds
        attachments = msg.attachments
        if "attachments" in body:
            keep = {str(a.get("id")) for a in body["attachments"] or []}
            attachments = [a for a in msg.attachments if str(a.id) in keep]
        components = (body["components"] or []) if "components" in body else msg.components
        if not (content.strip() or embeds or attachments or files or components):
            raise _ApiError(400, 50006, "Cannot send an empty message")
        msg.content, msg.embeds, msg.components = content, embeds, components
        msg.attachments = attachments + self._new_files(msg.channel_id, body, files)
        if "flags" in body and body["flags"] is not None:
            msg.flags = (msg.flags & ~4) | (int(body["flags"]) & 4)  # only SUPPRESS_EMBEDS may change
        msg.mentions, msg.mention_roles, msg.mention_everyone = self._mentions(
            msg.content, body.get("allowed_mentions", msg.allowed_mentions), None)
        return self._updated(msg, body.get("allowed_mentions"))

    # ------------------------------------------------------------------ REST: handlers

    async def _r_gateway(self, req: "_Req") -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _r_gateway_bot(self, req: "_Req") -> tuple[int, Any]:
        return 200, {"url": self.gateway_url, "shards": 1,
                     "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86400000,
                                             "max_concurrency": 1}}

    async def _r_me(self, req: "_Req") -> tuple[int, Any]:
        return 200, {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US",
                     "email": None, "bio": ""}

    async def _r_user(self, req: "_Req") -> tuple[int, Any]:
        user = self.users.get(_int(req.params["user_id"]))
        if user is None:
            raise _unknown("User")
        return 200, user.payload()

    async def _r_create_dm(self, req: "_Req") -> tuple[int, Any]:
        uid = _int((req.json or {}).get("recipient_id"))
        if uid not in self.users:
            raise _form_error(("recipient_id",), "NUMBER_TYPE_COERCE", "Value is not snowflake.")
        for channel in self.channels.values():
            if channel.type == 1 and channel.recipient_ids == [uid]:
                return 200, self._channel_payload(channel)
        channel = self.add_channel(None, self.snowflake(), type="dm", recipient_id=uid)
        return 200, self._channel_payload(channel)

    async def _r_application(self, req: "_Req") -> tuple[int, Any]:
        owner = next((self.users[g.owner_id] for g in self.guilds.values()), self.bot_user)
        flags = 0
        for name, bit in (("presences", 1 << 12), ("members", 1 << 14), ("message_content", 1 << 18)):
            if name in self.privileged_intents:
                flags |= bit
        return 200, {
            "id": str(self.application_id), "name": self.bot_user.username, "icon": None, "description": "",
            "bot_public": True, "bot_require_code_grant": False, "owner": owner.payload(), "team": None,
            "verify_key": hashlib.sha256(str(self.application_id).encode()).hexdigest(), "flags": flags,
            "summary": "", "type": None, "hook": True, "redirect_uris": [], "interactions_endpoint_url": None,
            "bot": self.bot_user.payload(), "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
        }

    def _check_app(self, req: "_Req") -> Optional[int]:
        if _int(req.params["application_id"]) != self.application_id:
            raise _ApiError(403, 50001, "Missing Access")
        if "guild_id" not in req.params:
            return None
        gid = _int(req.params["guild_id"])
        if gid not in self.guilds:
            raise _ApiError(403, 50001, "Missing Access")
        return gid

    async def _r_get_commands(self, req: "_Req") -> tuple[int, Any]:
        return 200, self.commands.get(self._check_app(req), [])

    def _validate_command(self, cmd: Any, idx: int) -> None:
        if not isinstance(cmd, dict):
            raise _form_error((idx,), "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        ctype = cmd.get("type", 1)
        name = cmd.get("name") or ""
        if not _NAME_RE.match(name) or (ctype == 1 and name != name.lower()):
            raise _form_error((idx, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        desc = cmd.get("description") or ""
        if ctype == 1 and not 1 <= len(desc) <= 100:
            raise _form_error((idx, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if ctype != 1 and desc:
            raise _form_error((idx, "description"), "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                              "Context menu commands cannot have description")

        def check_options(options: list, path: tuple, depth: int) -> None:
            if len(options) > 25:
                raise _form_error((*path, "options"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            seen_optional = False
            names = set()
            for j, opt in enumerate(options):
                p = (*path, "options", j)
                oname = opt.get("name") or ""
                if not _NAME_RE.match(oname) or oname != oname.lower():
                    raise _form_error((*p, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
                if oname in names:
                    raise _form_error((*p, "name"), "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                                      "Option name is already used in these options")
                names.add(oname)
                if not 1 <= len(opt.get("description") or "") <= 100:
                    raise _form_error((*p, "description"), "BASE_TYPE_BAD_LENGTH",
                                      "Must be between 1 and 100 in length.")
                otype = opt.get("type")
                if otype not in range(1, 12):
                    raise _form_error((*p, "type"), "BASE_TYPE_CHOICES", f"Value must be one of {list(range(1, 12))}.")
                if otype in (OPT_SUB, OPT_GROUP):
                    if depth >= (2 if otype == OPT_GROUP else 3):
                        raise _form_error((*p, "type"), "APPLICATION_COMMAND_OPTION_TYPE_INVALID",
                                          "Subcommand nesting too deep")
                    check_options(opt.get("options") or [], p, depth + 1)
                    continue
                if opt.get("required"):
                    if seen_optional:
                        raise _form_error(p, "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                                          "Required options must be placed before non-required options")
                else:
                    seen_optional = True
                choices = opt.get("choices") or []
                if len(choices) > 25:
                    raise _form_error((*p, "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
                if choices and opt.get("autocomplete"):
                    raise _form_error((*p, "autocomplete"), "APPLICATION_COMMAND_OPTION_CHOICES_AUTOCOMPLETE",
                                      "Autocomplete cannot be set if there are choices.")

        check_options(cmd.get("options") or [], (idx,), 1)

    def _store_command(self, scope: Optional[int], cmd: dict, previous: list[dict]) -> dict:
        old = next((c for c in previous if c["name"] == cmd["name"] and c.get("type", 1) == cmd.get("type", 1)), None)
        stored = {
            "type": 1, "default_member_permissions": None, "nsfw": False, "description_localizations": None,
            "name_localizations": None, "contexts": None, "integration_types": [0],
            **json.loads(json.dumps(cmd)),
            "id": old["id"] if old else str(self.snowflake()),
            "application_id": str(self.application_id),
            "version": str(self.snowflake()),
        }
        if stored["default_member_permissions"] is not None:
            stored["default_member_permissions"] = str(stored["default_member_permissions"])
        if scope is not None:
            stored["guild_id"] = str(scope)
        return stored

    async def _r_put_commands(self, req: "_Req") -> tuple[int, Any]:
        scope = self._check_app(req)
        body = req.json
        if not isinstance(body, list):
            raise _form_error((), "BASE_TYPE_ARRAY", "Must be an array.")
        if len(body) > 100:
            raise _ApiError(400, 30032, "Maximum number of application commands reached (100)")
        seen = set()
        for i, cmd in enumerate(body):
            self._validate_command(cmd, i)
            key = (cmd["name"], cmd.get("type", 1))
            if key in seen:
                raise _form_error((i, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                  f"Application command names must be unique: {cmd['name']}")
            seen.add(key)
        previous = self.commands.get(scope, [])
        self.commands[scope] = [self._store_command(scope, c, previous) for c in body]
        self.sync_calls.append((scope, body))
        return 200, self.commands[scope]

    async def _r_post_command(self, req: "_Req") -> tuple[int, Any]:
        scope = self._check_app(req)
        self._validate_command(req.json, 0)
        previous = self.commands.get(scope, [])
        stored = self._store_command(scope, req.json, previous)
        self.commands[scope] = [c for c in previous if c["id"] != stored["id"]] + [stored]
        return 201, stored

    async def _r_get_channel(self, req: "_Req") -> tuple[int, Any]:
        channel = self._bot_channel(_int(req.params["channel_id"]))
        return 200, self._channel_payload(channel)

    async def _r_history(self, req: "_Req") -> tuple[int, Any]:
        channel = self._bot_channel(_int(req.params["channel_id"]), need=Perm.READ_MESSAGE_HISTORY)
        limit = min(max(int(req.query.get("limit", 50)), 1), 100)
        msgs = [m for m in self.channel_messages(channel.id)]
        if "before" in req.query:
            msgs = [m for m in msgs if m.id < int(req.query["before"])]
        if "after" in req.query:
            msgs = [m for m in msgs if m.id > int(req.query["after"])][:limit]
        msgs = sorted(msgs, key=lambda m: m.id, reverse=True)[:limit]
        return 200, [self._message_payload(m, gateway=False) for m in msgs]

    def _message_in(self, channel_id: int, message_id: Any) -> FakeMessage:
        msg = self.messages.get(_int(message_id))
        if msg is None or msg.channel_id != channel_id or msg.deleted or msg.ephemeral:
            raise _unknown("Message")
        return msg

    async def _r_get_message(self, req: "_Req") -> tuple[int, Any]:
        channel = self._bot_channel(_int(req.params["channel_id"]), need=Perm.READ_MESSAGE_HISTORY)
        return 200, self._message_payload(self._message_in(channel.id, req.params["message_id"]), gateway=False)

    async def _r_create_message(self, req: "_Req") -> tuple[int, Any]:
        channel = self.channels.get(_int(req.params["channel_id"]))
        if channel is None:
            raise _unknown("Channel")
        need = Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES
        if req.files:
            need |= Perm.ATTACH_FILES
        self._bot_channel(channel.id, need=need)
        if channel.is_thread and (channel.archived or channel.locked):
            raise _ApiError(400, 50083, "Thread is archived")
        body = self._check_body(req.json, req.files, creating=True)
        ref = body.get("message_reference")
        reply_author = None
        if ref:
            target = self.messages.get(_int(ref.get("message_id")))
            if target is None or target.deleted or target.channel_id != _int(ref.get("channel_id") or channel.id):
                if ref.get("fail_if_not_exists", True):
                    raise _form_error(("message_reference",), "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
                ref = None
            else:
                ref = {"type": 0, "message_id": str(target.id), "channel_id": str(target.channel_id),
                       **({"guild_id": str(target.guild_id)} if target.guild_id else {})}
                reply_author = target.author_id if target.webhook_id is None else None
        content = body.get("content") or ""
        allowed = body.get("allowed_mentions")
        mentions, roles, everyone = self._mentions(content, allowed, reply_author)
        msg = FakeMessage(
            id=self.snowflake(), channel_id=channel.id, guild_id=channel.guild_id, author_id=self.bot_user_id,
            author=self.bot_user.payload(), content=content, embeds=body.get("embeds") or [],
            attachments=self._new_files(channel.id, body, req.files), allowed_mentions=allowed,
            mentions=mentions, mention_roles=roles, mention_everyone=everyone, message_reference=ref,
            flags=int(body.get("flags") or 0) & (4 | 4096), tts=bool(body.get("tts")), type=19 if ref else 0,
            components=body.get("components") or [], nonce=body.get("nonce"), source="rest")
        await self._flush(self._post(msg))
        return 200, self._message_payload(msg, gateway=False)

    async def _r_edit_message(self, req: "_Req") -> tuple[int, Any]:
        channel = self._bot_channel(_int(req.params["channel_id"]))
        msg = self._message_in(channel.id, req.params["message_id"])
        if msg.author_id != self.bot_user_id or msg.webhook_id is not None:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        await self._flush(self._apply_edit(msg, req.json or {}, req.files))
        return 200, self._message_payload(msg, gateway=False)

    async def _r_delete_message(self, req: "_Req") -> tuple[int, Any]:
        channel = self._bot_channel(_int(req.params["channel_id"]))
        msg = self._message_in(channel.id, req.params["message_id"])
        if msg.author_id != self.bot_user_id and not channel.is_dm:
            if not self.permissions_for(channel.id, self.bot_user_id) & Perm.MANAGE_MESSAGES:
                raise MISSING_PERMS()
        elif msg.author_id != self.bot_user_id:
            raise _ApiError(403, 50003, "Cannot execute action on a DM channel")
        self._deleted(msg)
        return 204, None

    async def _r_typing(self, req: "_Req") -> tuple[int, Any]:
        channel = self.channels.get(_int(req.params["channel_id"]))
        if channel is None:
            raise _unknown("Channel")
        self._bot_channel(channel.id, need=Perm.SEND_MESSAGES_IN_THREADS if channel.is_thread else Perm.SEND_MESSAGES)
        self.typing_calls.append((channel.id, asyncio.get_running_loop().time()))
        return 204, None

    def _webhook_payload(self, hook: FakeWebhook, *, with_token: bool = True) -> dict:
        data: dict[str, Any] = {
            "id": str(hook.id), "type": hook.type, "guild_id": str(hook.guild_id) if hook.guild_id else None,
            "channel_id": str(hook.channel_id), "name": hook.name, "avatar": hook.avatar,
            "application_id": str(hook.application_id) if hook.application_id else None,
        }
        if hook.creator_id in self.users:
            data["user"] = self.users[hook.creator_id].payload()  # type: ignore[index]
        if with_token:
            data["token"] = hook.token
            data["url"] = f"{self.base_url}/api/webhooks/{hook.id}/{hook.token}"
        return data

    def _check_webhook_name(self, name: Any, path: tuple) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= 80:
            raise _form_error(path, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 80 in length.")
        lowered = name.lower()
        for word in ("discord", "clyde"):
            if word in lowered:
                raise _form_error(path, "USERNAME_INVALID_CONTAINS", f'Username cannot contain "{word}"')
        if lowered in ("everyone", "here"):
            raise _form_error(path, "USERNAME_INVALID", "Username is invalid")

    async def _r_channel_webhooks(self, req: "_Req") -> tuple[int, Any]:
        channel = self._bot_channel(_int(req.params["channel_id"]), need=Perm.MANAGE_WEBHOOKS)
        return 200, [self._webhook_payload(h) for h in self.webhooks.values() if h.channel_id == channel.id]

    async def _r_guild_webhooks(self, req: "_Req") -> tuple[int, Any]:
        gid = _int(req.params["guild_id"])
        if gid not in self.guilds:
            raise _unknown("Guild")
        if not self.permissions_for(None, self.bot_user_id, guild_id=gid) & Perm.MANAGE_WEBHOOKS:
            raise MISSING_PERMS()
        return 200, [self._webhook_payload(h) for h in self.webhooks.values() if h.guild_id == gid]

    async def _r_create_webhook(self, req: "_Req") -> tuple[int, Any]:
        channel = self.channels.get(_int(req.params["channel_id"]))
        if channel is None:
            raise _unknown("Channel")
        if channel.is_dm or channel.is_thread or channel.type not in (0, 2, 5, 15):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        self._bot_channel(channel.id, need=Perm.MANAGE_WEBHOOKS)
        body = req.json or {}
        self._check_webhook_name(body.get("name"), ("name",))
        if sum(1 for h in self.webhooks.values() if h.channel_id == channel.id) >= 15:
            raise _ApiError(400, 30007, "Maximum number of webhooks reached (15)")
        avatar = None
        if body.get("avatar"):
            avatar = hashlib.md5(str(body["avatar"]).encode()).hexdigest()
        hook = FakeWebhook(self.snowflake(), secrets.token_urlsafe(51), channel.id, channel.guild_id, body["name"],
                           avatar=avatar, creator_id=self.bot_user_id)
        self.webhooks[hook.id] = hook
        self._dispatch("WEBHOOKS_UPDATE", {"guild_id": str(channel.guild_id), "channel_id": str(channel.id)},
                       intent=1 << 5)
        return 200, self._webhook_payload(hook)

    def _hook(self, req: "_Req") -> FakeWebhook:
        hook = self.webhooks.get(_int(req.params["webhook_id"]))
        if hook is None:
            raise _unknown("Webhook")
        token = req.params.get("webhook_token")
        if token is None:
            if not (req.headers.get("Authorization") == f"Bot {self.token}"):
                raise _ApiError(401, 0, "401: Unauthorized")
            self._bot_channel(hook.channel_id, need=Perm.MANAGE_WEBHOOKS)
        elif token != hook.token:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        return hook

    async def _r_get_webhook(self, req: "_Req") -> tuple[int, Any]:
        hook = self._hook(req)
        return 200, self._webhook_payload(hook)

    async def _r_edit_webhook(self, req: "_Req") -> tuple[int, Any]:
        """Modify Webhook: name and avatar (a data URI, stored as its md5 like on create; null clears it)."""
        hook = self._hook(req)
        body = req.json or {}
        if "name" in body:
            self._check_webhook_name(body["name"], ("name",))
            hook.name = body["name"]
        if "avatar" in body:
            hook.avatar = hashlib.md5(str(body["avatar"]).encode()).hexdigest() if body["avatar"] else None
        return 200, self._webhook_payload(hook)

    async def _r_delete_webhook(self, req: "_Req") -> tuple[int, Any]:
        hook = self._hook(req)
        del self.webhooks[hook.id]
        return 204, None

    def _interaction_by_token(self, req: "_Req") -> Optional[FakeInteraction]:
        if _int(req.params["webhook_id"]) != self.application_id:
            return None
        token = req.params["webhook_token"]
        inter = next((i for i in self.interactions.values() if i.token == token), None)
        if inter is None:
            raise _unknown("Webhook")
        return inter

    def _interaction_message(self, inter: FakeInteraction, body: dict, files: list[dict], flags: int) -> FakeMessage:
        content = body.get("content") or ""
        allowed = body.get("allowed_mentions")
        mentions, roles, everyone = self._mentions(content, allowed, None)
        channel = self.channels[inter.channel_id]
        return FakeMessage(
            id=self.snowflake(), channel_id=inter.channel_id, guild_id=channel.guild_id, author_id=self.bot_user_id,
            author=self.bot_user.payload(), content=content, embeds=body.get("embeds") or [],
            attachments=self._new_files(inter.channel_id, body, files), webhook_id=self.application_id,
            allowed_mentions=allowed, mentions=mentions, mention_roles=roles, mention_everyone=everyone,
            flags=flags, tts=bool(body.get("tts")), type=20, interaction_id=inter.id,
            application_id=self.application_id, components=body.get("components") or [], source="interaction")

    async def _r_execute_webhook(self, req: "_Req") -> tuple[int, Any]:
        wait = req.query.get("wait", "false").lower() in ("1", "true")
        inter = self._interaction_by_token(req)
        if inter is not None:
            return await self._followup(inter, req, wait)
        hook = self._hook(req)
        body = self._check_body(req.json, req.files, creating=True)
        if "username" in body and body["username"] is not None:
            self._check_webhook_name(body["username"], ("username",))
        channel_id = hook.channel_id
        if req.query.get("thread_id"):
            thread = self.channels.get(_int(req.query["thread_id"]))
            if thread is None or not thread.is_thread or thread.parent_id != hook.channel_id:
                raise _unknown("Channel")
            if thread.archived or thread.locked:
                raise _ApiError(400, 50083, "Thread is archived")
            channel_id = thread.id
        content = body.get("content") or ""
        allowed = body.get("allowed_mentions")
        mentions, roles, everyone = self._mentions(content, allowed, None)
        username = body.get("username") or hook.name
        msg = FakeMessage(
            id=self.snowflake(), channel_id=channel_id, guild_id=hook.guild_id, author_id=hook.id,
            author={"id": str(hook.id), "username": username, "discriminator": "0000", "global_name": None,
                    "avatar": (hashlib.md5(body["avatar_url"].encode()).hexdigest() if body.get("avatar_url")
                               else hook.avatar), "bot": True},
            content=content, embeds=body.get("embeds") or [],
            attachments=self._new_files(channel_id, body, req.files), webhook_id=hook.id,
            username=body.get("username"), avatar_url=body.get("avatar_url"), allowed_mentions=allowed,
            mentions=mentions, mention_roles=roles, mention_everyone=everyone,
            flags=int(body.get("flags") or 0) & (4 | 4096), tts=bool(body.get("tts")),
            components=body.get("components") or [], application_id=hook.application_id, source="webhook")
        await self._flush(self._post(msg))
        return (200, self._message_payload(msg, gateway=False)) if wait else (204, None)

    async def _followup(self, inter: FakeInteraction, req: "_Req", wait: bool) -> tuple[int, Any]:
        if not inter.acknowledged:
            raise _unknown("Webhook")
        body = self._check_body(req.json, req.files, creating=True)
        flags = int(body.get("flags") or 0)
        loop = asyncio.get_running_loop()
        entry = {"kind": "followup", "type": None, "data": body, "flags": flags, "ephemeral": bool(flags & 64),
                 "at": loop.time()}
        original = inter.original
        if inter.deferred and not inter._first_followup_done and original is not None and original.loading:
            # Discord: the first followup after a deferred response edits the loading message;
            # the ephemeral flag of the defer is kept.
            original.flags &= ~128
            try:
                futures = self._apply_edit(original, body, req.files)
            except _ApiError:
                original.flags |= 128
                raise
            inter._first_followup_done = True
            entry.update(message_id=original.id, ephemeral=original.ephemeral, edited_original=True)
            inter.responses.append(entry)
            await self._flush(futures)
            return (200, self._message_payload(original, gateway=False)) if wait else (204, None)
        inter._first_followup_done = True
        msg = self._interaction_message(inter, body, req.files, flags & (64 | 4 | 4096))
        inter.followup_ids.append(msg.id)
        entry["message_id"] = msg.id
        inter.responses.append(entry)
        await self._flush(self._post(msg))
        return (200, self._message_payload(msg, gateway=False)) if wait else (204, None)

    def _webhook_message(self, req: "_Req") -> tuple[Optional[FakeInteraction], FakeMessage]:
        inter = self._interaction_by_token(req)
        mid = req.params["message_id"]
        if inter is not None:
            if mid == "@original":
                msg = inter.original
                if inter.type == 3 and not inter.acknowledged:
                    raise _unknown("Message")
            else:
                msg = self.messages.get(_int(mid))
                if msg is not None and msg.interaction_id != inter.id:
                    msg = None
            if msg is None or msg.deleted:
                raise _unknown("Message")
            return inter, msg
        hook = self._hook(req)
        msg = self.messages.get(_int(mid))
        channel_id = _int(req.query["thread_id"]) if req.query.get("thread_id") else hook.channel_id
        if msg is None or msg.deleted or msg.webhook_id != hook.id or msg.channel_id != channel_id:
            raise _unknown("Message")
        return None, msg

    async def _r_get_webhook_message(self, req: "_Req") -> tuple[int, Any]:
        _, msg = self._webhook_message(req)
        return 200, self._message_payload(msg, gateway=False)

    async def _r_edit_webhook_message(self, req: "_Req") -> tuple[int, Any]:
        inter, msg = self._webhook_message(req)
        body = req.json or {}
        if inter is not None:
            if inter.expired and not inter.acknowledged:
                raise _unknown("Webhook")
            was_loading = msg.loading
            msg.flags &= ~128
            try:
                futures = self._apply_edit(msg, body, req.files)
            except _ApiError:
                if was_loading:
                    msg.flags |= 128
                raise
            kind = "edit_original" if msg.id == inter.original_message_id else "edit_followup"
            inter.responses.append({"kind": kind, "type": None, "data": body, "flags": msg.flags,
                                    "ephemeral": msg.ephemeral, "message_id": msg.id,
                                    "at": asyncio.get_running_loop().time()})
        else:
            futures = self._apply_edit(msg, body, req.files)
        await self._flush(futures)
        return 200, self._message_payload(msg, gateway=False)

    async def _r_delete_webhook_message(self, req: "_Req") -> tuple[int, Any]:
        inter, msg = self._webhook_message(req)
        if inter is not None:
            inter.responses.append({"kind": "delete_original" if msg.id == inter.original_message_id
                                    else "delete_followup", "type": None, "data": None, "flags": msg.flags,
                                    "ephemeral": msg.ephemeral, "message_id": msg.id,
                                    "at": asyncio.get_running_loop().time()})
        self._deleted(msg)
        return 204, None

    async def _r_interaction_callback(self, req: "_Req") -> tuple[int, Any]:
        inter = self.interactions.get(_int(req.params["interaction_id"]))
        loop = asyncio.get_running_loop()
        if inter is None or inter.token != req.params["interaction_token"]:
            raise _unknown("interaction")
        try:
            if inter.expired:
                raise _unknown("interaction")
            if inter.acknowledged:
                raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
            body = req.json or {}
            ctype = body.get("type")
            data = body.get("data") or {}
            allowed_types = {4: (8,), 3: (4, 5, 6, 7)}.get(inter.type, (4, 5, 9))
            if ctype not in allowed_types:
                raise _form_error(("type",), "INTERACTION_CALLBACK_TYPE_INVALID", "Interaction callback type invalid")
            flags = int(data.get("flags") or 0)
            entry = {"kind": "callback", "type": ctype, "data": data, "flags": flags, "ephemeral": bool(flags & 64),
                     "at": loop.time()}
            futures: list = []
            resource: Optional[dict] = None
            if ctype == 8:
                choices = data.get("choices")
                if not isinstance(choices, list):
                    raise _form_error(("data", "choices"), "BASE_TYPE_REQUIRED", "This field is required")
                if len(choices) > 25:
                    raise _form_error(("data", "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
                for i, c in enumerate(choices):
                    if not 1 <= len(str(c.get("name", ""))) <= 100:
                        raise _form_error(("data", "choices", i, "name"), "BASE_TYPE_BAD_LENGTH",
                                          "Must be between 1 and 100 in length.")
                    if isinstance(c.get("value"), str) and len(c["value"]) > 100:
                        raise _form_error(("data", "choices", i, "value"), "BASE_TYPE_MAX_LENGTH",
                                          "Must be 100 or fewer in length.")
                inter.choices = choices
            elif ctype == 4:
                data = self._check_body(data, req.files, creating=True, prefix=("data",))
                msg = self._interaction_message(inter, data, req.files, flags & (64 | 4 | 4096))
                inter.original_message_id = msg.id
                entry["message_id"] = msg.id
                futures = self._post(msg)
                resource = {"type": 4, "message": self._message_payload(msg, gateway=False)}
            elif ctype == 6:  # a component's deferred update: the message it is on changes later, or not at all
                entry["message_id"] = inter.original_message_id
            elif ctype == 7:  # a component's update of the message it is on
                msg = self.messages[inter.original_message_id]
                futures = self._apply_edit(msg, self._check_body(data, req.files, creating=False, prefix=("data",)),
                                           req.files)
                entry["message_id"] = msg.id
            elif ctype == 5:
                inter.deferred = True
                msg = self._interaction_message(inter, {}, [], 128 | (flags & 64))
                inter.original_message_id = msg.id
                entry["message_id"] = msg.id
                futures = self._post(msg)
                resource = {"type": 5, "message": self._message_payload(msg, gateway=False)}
            inter.acknowledged = True
            if inter._timer:
                inter._timer.cancel()
            inter.responses.append(entry)
            await self._flush(futures)
        except _ApiError as e:
            inter.errors.append({"kind": "callback", "status": e.status, "code": e.code, "message": e.message,
                                 "errors": e.errors, "at": loop.time()})
            self._notify()
            raise
        if req.query.get("with_response", "").lower() not in ("1", "true"):
            return 204, None
        out: dict[str, Any] = {"interaction": {
            "id": str(inter.id), "type": inter.type,
            "response_message_loading": ctype == 5, "response_message_ephemeral": bool(flags & 64)}}
        if inter.original_message_id is not None:
            out["interaction"]["response_message_id"] = str(inter.original_message_id)
        if resource is not None:
            out["resource"] = resource
        return 200, out

    async def _r_get_guild(self, req: "_Req") -> tuple[int, Any]:
        guild = self.guilds.get(_int(req.params["guild_id"]))
        if guild is None:
            raise _unknown("Guild")
        data = self._guild_payload(guild)
        if req.query.get("with_counts", "").lower() in ("1", "true"):
            data.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return 200, data

    async def _r_guild_channels(self, req: "_Req") -> tuple[int, Any]:
        guild = self.guilds.get(_int(req.params["guild_id"]))
        if guild is None:
            raise _unknown("Guild")
        return 200, [self._channel_payload(self.channels[c]) for c in guild.channel_ids
                     if not self.channels[c].is_thread]

    async def _r_guild_roles(self, req: "_Req") -> tuple[int, Any]:
        guild = self.guilds.get(_int(req.params["guild_id"]))
        if guild is None:
            raise _unknown("Guild")
        return 200, [r.payload() for r in guild.roles.values()]

    async def _r_guild_members(self, req: "_Req") -> tuple[int, Any]:
        guild = self.guilds.get(_int(req.params["guild_id"]))
        if guild is None:
            raise _unknown("Guild")
        after = int(req.query.get("after", 0))
        limit = min(int(req.query.get("limit", 1)), 1000)
        members = sorted((m for m in guild.members.values() if m.user_id > after), key=lambda m: m.user_id)
        return 200, [self._member_payload(m) for m in members[:limit]]

    async def _r_guild_member(self, req: "_Req") -> tuple[int, Any]:
        guild = self.guilds.get(_int(req.params["guild_id"]))
        if guild is None:
            raise _unknown("Guild")
        member = guild.members.get(_int(req.params["user_id"]))
        if member is None:
            raise _unknown("Member")
        return 200, self._member_payload(member)


@dataclass
class _Req:
    method: str
    path: str
    params: dict
    query: dict
    json: Any
    files: list[dict]
    headers: Any


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _form_error((), "NUMBER_TYPE_COERCE", f"Value \"{value}\" is not snowflake.")


def _allowed_in_dm(cmd: dict) -> bool:
    contexts = cmd.get("contexts")
    if contexts is not None:
        return 1 in contexts
    return cmd.get("dm_permission", True) is not False


def _pattern_matches(pattern: str, method: str, path: str, route: Optional[str]) -> bool:
    head, _, rest = pattern.partition(" ")
    if rest and head.isupper():
        if head != method:
            return False
        pattern = rest
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if route is not None:
        template = route.partition(" ")[2]
        return pattern == template
    return False
