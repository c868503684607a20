"""Configuration: `rwkv-bot.toml` (cwd or --config PATH), every key overridable by env RWKV_BOT_<SECTION>_<KEY>.

The whole schema is this one table. Unknown keys and bad values stop the start with one line naming the key.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from bot.engine.params import SPECS as SAMPLING_SPECS, ParamError, SamplingParams, parse_param

DEFAULT_FILE = "rwkv-bot.toml"
ENV_PREFIX = "RWKV_BOT_"


MAX_SHARDS = 65536  # far beyond any bot (Discord asks for one shard per ~1000-2500 guilds)
WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what setWebhook accepts as secret_token


class ConfigError(Exception):
    """One line naming the key and what is wrong."""


@dataclass(frozen=True)
class Key:
    kind: str  # str | token | int | float | bool | list[int] | list[str] | choice
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None


SCHEMA: dict[str, dict[str, Key]] = {
    "model": {
        "path": Key("str", "", "checkpoint, with or without .pth; empty = a demo model under data/"),
        "strategy": Key("str", "", "rwkv strategy; default 'cuda fp16' with CUDA, else 'cpu fp32'"),
        "state": Key("str", "", "state-tuning file used as every conversation's initial state"),
        "backend": Key("choice", "auto", "auto = batched engine where it runs, else the plain rwkv package",
                       choices=("auto", "batched", "rwkv-pip")),
        "chunk_len": Key("int", 256, "prefill tokens per step per channel", low=1, high=65536),
        "max_batch": Key("int", 64, "channels generating at once", low=1, high=4096),
        "step_seconds": Key("float", 0.0, "seconds added to every model step: a fast CPU model paced like a big one "
                            "(demos and tests of streaming, stopping and failover); 0 = none", low=0, high=60),
        "max_context_tokens": Key("int", 0, "rebuild a channel's state past this many fed tokens; 0 = 8192",
                                  low=0, high=10_000_000),
    },
    "database": {
        "url": Key("str", "sqlite+aiosqlite:///data/rwkv-bot.db", "SQLAlchemy async URL (sqlite or postgresql)"),
        "snapshots": Key("int", 10, "states kept per channel for /undo (older turns are replayed)", low=1, high=1000),
        "hot_states": Key("int", 256, "channel states kept in memory", low=1, high=1_000_000),
    },
    "characters": {
        "dir": Key("str", "characters", "directory of character cards scanned at start"),
        "samples": Key("bool", True, "also offer the sample characters shipped with rwkv-bot (Mira, 林小满)"),
        "default": Key("str", "", "character for new channels (default: the first card by name)"),
        "user_imports": Key("bool", False, "anyone may /char import cards of their own, seen only by them (the "
                            "shared library is always for bot admins)"),
    },
    "telegram": {
        "token": Key("token", "", "bot token from @BotFather; empty = Telegram off"),
        "base_url": Key("str", "", "Bot API server (self-hosted servers and tests)"),
        "base_file_url": Key("str", "", "Bot API file server"),
        "admin_ids": Key("list[int]", [], "user ids of the bot's admins: the shared character library, and admin "
                         "in every chat"),
        "requests_per_second": Key("float", 30.0, "Bot API requests per second in all (Telegram allows about 30); "
                                   "0 = no limit (self-hosted servers, load tests)", low=0, high=1_000_000),
        "group_requests_per_minute": Key("float", 20.0, "requests per minute into one group (Telegram allows about "
                                         "20); 0 = no limit", low=0, high=1_000_000),
        "connections": Key("int", 16, "HTTP connections to the Bot API (more = less waiting under load)", low=1,
                           high=1024),
        "edit_interval": Key("float", 1.0, "seconds between edits of a streaming reply; longer under load and "
                             "after Telegram asks to slow down", low=0.01, high=60),
        "max_card_bytes": Key("int", 20 << 20, "documents larger than this sent to /char import are refused "
                              "before download", low=1, high=2 << 30),
        # Webhook mode (a platform front behind a load balancer, or a bot that should not poll); fronts that share a
        # bot all register the same URL.
        "webhook_url": Key("str", "", "public HTTPS URL Telegram posts updates to; empty = long polling"),
        "webhook_listen": Key("str", "127.0.0.1", "address the webhook server listens on (behind a reverse proxy); "
                              "0.0.0.0 = every interface"),
        "webhook_port": Key("int", 8443, "port the webhook server listens on", low=1, high=65535),
        "webhook_path": Key("str", "", "path the webhook server answers on; empty = the path of webhook_url"),
        "webhook_secret": Key("token", "", "secret Telegram sends with every update (1-256 of A-Z a-z 0-9 _ -); "
                              "required with webhook_url"),
    },
    "discord": {
        "token": Key("token", "", "bot token; empty = Discord off"),
        "admin_ids": Key("list[int]", [], "user ids of the bot's admins: the shared character library, and admin "
                         "in every server and DM"),
        "admin_role_ids": Key("list[int]", [], "role ids whose members are the bot's admins in that server"),
        "dev_guild_id": Key("int", 0, "sync commands to this guild instantly (testing)", low=0, high=2**64),
        "api_base": Key("str", "", "REST API base incl. version (a proxy or test server); empty = discord.com"),
        "gateway_url": Key("str", "", "gateway websocket URL (a proxy or test server); empty = Discord's"),
        "shard_count": Key("int", 0, "shards the bot has in all (several processes each run some); 0 = not sharded "
                           "here, discord.py decides", low=0, high=MAX_SHARDS),
        "shard_ids": Key("list[int]", [], "shards this process connects (each below shard_count); empty = all"),
    },
    "ui": {
        "lang": Key("choice", "en", "default language of the bot's own messages", choices=("en", "zh")),
        "user_name": Key("str", "User", "the user's name in the terminal chat"),
    },
    "limits": {
        "max_message_chars": Key("int", 4000, "longer user messages are truncated (with a notice)", low=16,
                                 high=1_000_000),
        "max_message_tokens": Key("int", 2048, "longer user messages (in tokens) are cut (with a notice), so one "
                                  "message cannot fill the context", low=16, high=1_000_000),
        # high: the database column of a label, bot.store.models.NAME_CHARS (a test keeps them equal)
        "max_name_chars": Key("int", 32, "longest display name fed to the model", low=1, high=128),
        "user_messages_per_minute": Key("int", 30, "per user, with short bursts allowed; more are refused",
                                        low=1, high=1_000_000),
        "channel_messages_per_minute": Key("int", 60, "per channel (all users together)", low=1, high=1_000_000),
        "channel_queue": Key("int", 3, "turns waiting per channel beyond the one generating", low=0, high=1000),
        "global_queue": Key("int", 1000, "turns waiting in all channels together", low=1, high=1_000_000),
        "shutdown_seconds": Key("float", 15.0, "time to finish replies on SIGTERM", low=0, high=3600),
        "max_saves": Key("int", 20, "named saves per channel", low=1, high=10_000),
        "max_user_saves": Key("int", 50, "named saves one user keeps in all channels together (bot admins: no "
                              "limit)", low=1, high=1_000_000),
        "max_saves_total": Key("int", 10_000, "named saves in the database", low=1, high=100_000_000),
        "max_user_channels": Key("int", 50, "conversations one user may start (each keeps stored states; a forum "
                                 "topic or channel is one; bot admins: no limit)", low=1, high=100_000_000),
        "max_channels": Key("int", 100_000, "conversations in the database", low=1, high=1_000_000_000),
        "max_user_cards": Key("int", 10, "cards of their own one user may import (characters.user_imports)",
                              low=0, high=100_000),
        "max_swipes": Key("int", 20, "alternatives kept per character reply (swipes); the oldest beyond are "
                          "dropped", low=1, high=1000),
        "max_cast": Key("int", 8, "characters in one channel's scene (/cast), its own character included", low=1,
                        high=64),
        "max_library_mib": Key("int", 1024, "imported card files stored in all (each is also held in memory)",
                               low=1, high=1_000_000),
    },
    "metrics": {
        "port": Key("int", 0, "Prometheus metrics port; 0 = off", low=0, high=65535),
    },
    "dashboard": {
        "port": Key("int", 0, "admin web page port; 0 = off (admins get a sign-in link with /dashboard)", low=0,
                    high=65535),
        "host": Key("str", "127.0.0.1", "address the page listens on; 0.0.0.0 exposes it beyond this machine"),
        "url": Key("str", "", "address admins open, e.g. behind a reverse proxy; empty = http://host:port"),
    },
    "cluster": {  # `rwkv-bot front` / `rwkv-bot worker` only; `rwkv-bot run` never reads these
        "nats_url": Key("str", "nats://127.0.0.1:4222", "NATS server with JetStream (fronts and workers)"),
        "name": Key("str", "", "this front's name, unique among fronts (letters, digits, - and _); empty = "
                    "host-pid"),
        "worker_id": Key("str", "", "this worker's id, unique among workers; empty = host-pid"),
        "partitions": Key("int", 16, "channels are hashed into this many partitions, each served by one worker; "
                          "the same on every front and worker", low=1, high=1024),
        "lease_seconds": Key("float", 6.0, "a worker that stops renewing its leases loses its partitions after "
                             "this long (the failover time)", low=1, high=600),
    },
    "sampling": {name: Key("int" if spec.kind is int else "float", getattr(SamplingParams(), name), spec.help,
                           low=spec.low, high=spec.high) for name, spec in SAMPLING_SPECS.items()},
}


class Config:
    """Values by section: `config.model.path`, `config.telegram.admin_ids` ..."""

    def __init__(self, values: dict[str, dict[str, Any]], source: str):
        self._values = values
        self.source = source
        for section, keys in values.items():
            setattr(self, section, _Section(section, keys))

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    @property
    def secrets(self) -> list[str]:
        """The value of every secret key (kind "token"), for the log filter that hides them."""
        return [self._values[section][name] for section, keys in SCHEMA.items()
                for name, key in keys.items() if key.kind == "token"]

    @property
    def sampling_defaults(self) -> SamplingParams:
        return SamplingParams.from_dict(self._values["sampling"])


class _Section:
    def __init__(self, name: str, values: dict[str, Any]):
        self.__dict__.update(values)
        self._name = name

    def __repr__(self) -> str:
        return f"<config [{self._name}]>"


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    values = {section: {k: key.default for k, key in keys.items()} for section, keys in SCHEMA.items()}
    source = "defaults"
    file = Path(path) if path else Path(DEFAULT_FILE)
    if path or file.exists():
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        for section, table in data.items():
            if section not in SCHEMA:
                raise ConfigError(f"{file}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
            if not isinstance(table, dict):
                raise ConfigError(f"{file}: {section} must be a table [{section}]")
            for key, raw in table.items():
                values[section][key] = _check(section, key, raw, f"{file}: {section}.{key}")
        source = str(file)
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, key = _env_key(name)
        values[section][key] = _check(section, key, _from_env(SCHEMA[section][key], raw), f"env {name}")
    _check_together(values)
    return Config(values, source)


def _check_together(values: dict[str, dict[str, Any]]) -> None:
    """Rules that tie keys together, checked once every source is read."""
    telegram = values["telegram"]
    if telegram["webhook_url"]:
        url = urlsplit(telegram["webhook_url"])
        if url.scheme not in ("https", "http") or not url.netloc:
            raise ConfigError("telegram.webhook_url: must be a full URL such as https://bot.example.org/telegram")
        if not WEBHOOK_SECRET.fullmatch(telegram["webhook_secret"]):
            raise ConfigError("telegram.webhook_secret: required with telegram.webhook_url: 1 to 256 of the "
                              "characters A-Z a-z 0-9 _ - (e.g. from `openssl rand -hex 32`)")
    discord = values["discord"]
    ids, count = discord["shard_ids"], discord["shard_count"]
    if ids and not count:
        raise ConfigError("discord.shard_ids: needs discord.shard_count (the shards the bot has in all)")
    wrong = [i for i in ids if not 0 <= i < count]
    if wrong:
        raise ConfigError(f"discord.shard_ids: {wrong[0]} is not a shard of shard_count {count} (0 to {count - 1})")
    if len(set(ids)) != len(ids):
        raise ConfigError("discord.shard_ids: a shard is listed twice")


def _env_key(name: str) -> tuple[str, str]:
    rest = name[len(ENV_PREFIX):].lower()
    for section, keys in SCHEMA.items():
        if rest.startswith(section + "_") and rest[len(section) + 1:] in keys:
            return section, rest[len(section) + 1:]
    raise ConfigError(f"env {name}: unknown setting (expected {ENV_PREFIX}<SECTION>_<KEY>, e.g. RWKV_BOT_MODEL_PATH)")


def _from_env(key: Key, raw: str) -> Any:
    if key.kind.startswith("list"):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if key.kind == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw


def _check(section: str, key: str, raw: Any, where: str) -> Any:
    spec = SCHEMA[section].get(key)
    if spec is None:
        raise ConfigError(f"{where}: unknown key; known in [{section}]: {', '.join(SCHEMA[section])}")
    if section == "sampling":
        try:
            return parse_param(key, raw)
        except ParamError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    convert: Callable[[Any], Any] = _CONVERTERS[spec.kind]
    try:
        value = convert(raw, spec)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return value


def _to_str(raw, spec):
    if not isinstance(raw, str):
        raise ValueError(f"must be a string, got {raw!r}")
    return raw


def _to_token(raw, spec):
    """A platform token: one word of printable characters (a pasted newline or control character would
    otherwise fail deep inside the platform library). The error never repeats the token."""
    value = _to_str(raw, spec)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("contains whitespace or a control character; copy the token again")
    return value


def _to_number(kind):
    def convert(raw, spec):
        if isinstance(raw, bool):
            raise ValueError(f"must be {'an integer' if kind is int else 'a number'}, got {raw!r}")
        value = None
        if kind is int and (isinstance(raw, int) or str(raw).strip().lstrip("-").isdigit()):
            value = int(raw)
        elif kind is float:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                pass
        if value is None:
            raise ValueError(f"must be {'an integer' if kind is int else 'a number'}, got {raw!r}")
        if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
            raise ValueError(f"must be between {spec.low:g} and {spec.high:g}, got {value}")
        return value
    return convert


def _to_bool(raw, spec):
    if not isinstance(raw, bool):
        raise ValueError(f"must be true or false, got {raw!r}")
    return raw


def _to_int_list(raw, spec):
    def is_int(x):
        return (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, str) and x.strip().lstrip("-").isdigit())

    if not isinstance(raw, list) or not all(is_int(x) for x in raw):
        raise ValueError(f"must be a list of integers, got {raw!r}")
    return [int(x) for x in raw]


def _to_choice(raw, spec):
    if raw not in spec.choices:
        raise ValueError(f"must be one of {', '.join(spec.choices)}, got {raw!r}")
    return raw


_CONVERTERS = {"str": _to_str, "token": _to_token, "int": _to_number(int), "float": _to_number(float),
               "bool": _to_bool, "list[int]": _to_int_list, "choice": _to_choice}
