"""Wiring: config -> model -> engine -> database -> characters -> conversations -> commands -> adapters.

`rwkv-bot run` starts Discord and/or Telegram when their tokens are set, otherwise the terminal chat;
`rwkv-bot chat` is always the terminal chat. Everything runs in one process and one event loop.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bot.adapters import enabled_platforms, platform_runners
from bot.config import SCHEMA, Config, ConfigError, load_config
from bot.libraries import MissingLibrary, import_optional
from bot.logs import setup_logging

log = logging.getLogger("bot")

DEMO_MODEL = Path("data/demo-rwkv7-L4-D256.pth")
DEMO_WARNING = """\
!!! No model configured (model.path): using a RANDOM-WEIGHT demo model ({path}).
!!! Its replies are noise. For real conversations download an RWKV-7 G1 or RWKV-6 World checkpoint, e.g.
!!!   https://huggingface.co/BlinkDL/rwkv7-g1  (rwkv7-g1a-1.5b-...pth is a good start)
!!! and set it in rwkv-bot.toml:  [model] path = "/path/to/model.pth"   (or env RWKV_BOT_MODEL_PATH)"""


@dataclass
class App:
    config: Config
    engine: object
    store: object
    library: object
    conversations: object
    commands: object
    metrics: object

    async def close(self) -> None:
        await self.engine.close()
        await self.store.close()
        self.metrics.close()


def _model_path(config: Config) -> str:
    if config.model.path:
        return config.model.path
    from bot.tools.demo_model import write_demo_model

    if not DEMO_MODEL.exists():
        write_demo_model(DEMO_MODEL, version=7, layers=4, dim=256)
    print(DEMO_WARNING.format(path=DEMO_MODEL), file=sys.stderr, flush=True)
    return str(DEMO_MODEL)


def load_backend(config: Config):
    """The batched engine where it can serve the checkpoint, else the plain `rwkv` package."""
    from tqdm import tqdm

    from bot.engine.model import default_strategy

    path = _model_path(config)
    strategy = config.model.strategy or default_strategy()
    stages = ["reading checkpoint", "importing rwkv", "loading weights", "ready"]
    # A bar only on a terminal: in a piped log its carriage returns garble the lines; there each stage is a line.
    with tqdm(total=len(stages), desc="loading model", file=sys.stderr, leave=False,
              bar_format="{desc}: {n}/{total} {postfix}", disable=not sys.stderr.isatty()) as bar:
        def progress(stage: str) -> None:
            bar.set_postfix_str(stage)
            bar.update(1)
            if bar.disable:
                log.info("loading model: %s", stage)

        progress(stages[0])
        kind = config.model.backend
        if kind in ("auto", "batched"):
            try:
                from bot.engine.batched import BatchedBackend

                backend = BatchedBackend(path, strategy, state_file=config.model.state or None,
                                         max_batch=config.model.max_batch, progress=progress)
            except (ImportError, NotImplementedError) as exc:
                if kind == "batched":
                    raise
                log.info("batched engine unavailable (%s); using the rwkv package", exc)
                backend = None
        else:
            backend = None
        if backend is None:
            from bot.engine.rwkv_pip import RwkvPipBackend

            backend = RwkvPipBackend(path, strategy, state_file=config.model.state or None, progress=progress)
        bar.set_postfix_str("ready")
    info = backend.info
    log.info("model %s: RWKV-%d %d layers x %d, %s, backend %s", Path(info.path).name, info.version, info.n_layer,
             info.n_embd, info.strategy, info.backend)
    return backend


class StartError(Exception):
    """A setting the bot cannot start with (a missing card directory, a character that is not there): one line."""


def check_characters_dir(config: Config) -> None:
    """A `characters.dir` the owner named must exist; the default one may be missing (the samples serve then)."""
    directory = Path(config.characters.dir).expanduser()
    if directory.is_dir():
        return
    if directory.exists() or config.characters.dir != SCHEMA["characters"]["dir"].default:
        raise StartError(f"characters.dir {directory}: not a directory")


def check_characters(library, config: Config, character: str | None) -> None:
    """`characters.default` and `--character` must name a card."""
    if not Path(config.characters.dir).expanduser().is_dir():  # the default one, or check_characters_dir refused
        log.info("no %s/ directory: put your character cards there (the sample cards are offered meanwhile)",
                 config.characters.dir)
    known = ", ".join(library.names()) or "none"
    if config.characters.default and library.find(config.characters.default) is None:
        raise StartError(f"characters.default {config.characters.default!r} names no card (characters: {known})")
    if character and library.find(character) is None:
        raise StartError(f"no character named {character!r} (characters: {known})")


async def build_app(config: Config, backend=None, *, character: str | None = None, store=None) -> App:
    """The database and the characters first (seconds, and where a bad URL or card setting is reported), then
    the model (minutes for a large one). Whatever was started is closed again when a later part fails.
    `character`: a card that must exist (`chat --character`); `store`: an unopened store to use (a cluster
    worker's fenced one)."""
    from bot.cards import sample_cards_dir
    from bot.commands import Commands
    from bot.conversations import Conversations, Quotas
    from bot.conversations.characters import Library
    from bot.engine.model import file_id
    from bot.engine.engine import Engine
    from bot.engine.tokenizer import world_tokenizer
    from bot.metrics import Metrics
    from bot.store import Store

    async with contextlib.AsyncExitStack() as started:
        store = store or Store(config.database.url, snapshots=config.database.snapshots)
        await store.open()
        started.push_async_callback(store.close)
        library = Library(store, config.characters.dir, config.characters.default,
                          samples_dir=sample_cards_dir() if config.characters.samples else None,
                          user_imports=config.characters.user_imports, max_user_cards=config.limits.max_user_cards,
                          max_bytes=config.limits.max_library_mib << 20)
        await library.load()
        check_characters(library, config, character)
        backend = backend or await asyncio.to_thread(load_backend, config)
        metrics = Metrics(config.metrics.port)
        started.callback(metrics.close)
        engine = Engine(backend, world_tokenizer(), chunk_len=config.model.chunk_len,
                        max_batch=config.model.max_batch, metrics=metrics)
        if config.model.step_seconds:
            engine.step_hook = lambda rows, pause=config.model.step_seconds: time.sleep(pause)
        metrics.track_queue(engine.queue_depth)
        await engine.start()
        started.push_async_callback(engine.close)
        state_id = file_id(Path(config.model.state).expanduser()) if config.model.state else ""
        conversations = Conversations(
            engine, store, library, sampling_defaults=config.sampling_defaults,
            max_context_tokens=config.model.max_context_tokens, hot_states=config.database.hot_states,
            max_message_chars=config.limits.max_message_chars, max_name_chars=config.limits.max_name_chars,
            max_message_tokens=config.limits.max_message_tokens, quotas=Quotas.from_config(config.limits),
            channel_queue=config.limits.channel_queue, global_queue=config.limits.global_queue, state_id=state_id,
            max_swipes=config.limits.max_swipes, max_cast=config.limits.max_cast)
        commands = Commands(conversations, library, metrics=metrics, lang=config.ui.lang,
                            user_per_minute=config.limits.user_messages_per_minute,
                            channel_per_minute=config.limits.channel_messages_per_minute)
        app = App(config, engine, store, library, conversations, commands, metrics)
        commands.status = lambda: status_of(app)
        started.pop_all()  # the app owns them now: App.close
        return app


def status_of(app: App) -> dict:
    """What /status says and the admin page plots."""
    info = app.engine.info
    return {"model": f"{Path(info.path).name} (RWKV-{info.version}, {info.n_layer}x{info.n_embd})",
            "device": info.strategy, "queue": app.engine.queue_depth(), "tps": app.engine.tokens_per_second(),
            "hot": len(app.conversations._hot), "active": app.conversations.active_channels(),
            "batch": app.engine.batch_size(), "gpu_mb": gpu_memory_mb()}


def gpu_memory_mb() -> float | None:
    """Memory in use on the GPU (all processes, as nvidia-smi shows it); None when CUDA was never started."""
    import torch

    if not torch.cuda.is_initialized():
        return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


async def serve(config: Config, *, terminal: bool, character: str | None = None, channel: str = "terminal") -> int:
    app = await build_app(config, character=character)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    tasks = []
    dashboard = None
    try:
        dashboard = await start_dashboard(app)
        platforms = [] if terminal else platform_runners(app)
        if platforms:
            tasks = [asyncio.create_task(runner(stop)) for runner in platforms]
            await stop.wait()
            await asyncio.gather(*tasks, return_exceptions=True)
        else:
            from bot.adapters.terminal import TerminalChat

            chat = TerminalChat(app.commands, channel=channel, user_name=config.ui.user_name, lang=config.ui.lang)
            if dashboard is not None:
                await chat.handle("/dashboard")  # the local user's sign-in link
            await chat.run(character, stop)  # Ctrl-C and SIGTERM set `stop`: the reply in progress is cut off
        await app.conversations.drain(config.limits.shutdown_seconds)
    finally:
        if dashboard is not None:
            await dashboard.stop()
        await app.close()
    return 0


async def start_dashboard(app: App):
    """The admin web page when `[dashboard] port` is set (else None)."""
    section = app.config.dashboard
    if not section.port:
        return None
    from bot.dashboard import Dashboard

    dashboard = Dashboard(app.commands, host=section.host, port=section.port, url=section.url)
    await dashboard.start()
    return dashboard


def check_libraries(config: Config, terminal: bool) -> None:
    """Import what the configuration needs before the model loads (MissingLibrary names what to install)."""
    from bot.store.migrate import import_driver

    import_driver(config.database.url)
    if config.metrics.port:
        import_optional("prometheus_client", "metrics.port")
    if not terminal:
        enabled_platforms(config)
        if config.telegram.token:  # PTB's rate limiter imports it only when built
            import_optional("aiolimiter", "telegram.token (python-telegram-bot[rate-limiter])")
        if config.telegram.token and config.telegram.webhook_url:  # PTB's webhook server, imported when started
            import_optional("tornado", "telegram.webhook_url (python-telegram-bot[webhooks])")


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"rwkv-bot: config: {exc}", file=sys.stderr)
        return None


def _start(args: argparse.Namespace, terminal: bool) -> int:
    config = _load(args)
    if config is None:
        return 2
    setup_logging(secrets=config.secrets)
    from bot.engine.model import ModelError

    from bot.dashboard import DashboardError
    from bot.store.errors import StoreError

    try:
        check_libraries(config, terminal)
        check_characters_dir(config)
        return asyncio.run(serve(config, terminal=terminal, character=getattr(args, "character", None),
                                 channel=getattr(args, "channel", "terminal")))
    except (ModelError, DashboardError, MissingLibrary, StoreError, StartError) as exc:
        print(f"rwkv-bot: {exc}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    return _start(args, terminal=False)


def chat_command(args: argparse.Namespace) -> int:
    return _start(args, terminal=True)
