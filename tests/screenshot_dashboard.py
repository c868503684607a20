"""The README's picture of the admin page: `python -m tests.screenshot_dashboard docs/dashboard.png`.

A demo model, three channels talking for a few seconds, then the "Now" page in Debian's headless Chromium (the
browser tests' launch settings). Not a test: it only makes the PNG.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tests.chat_helpers import ctx, send
from tests.conftest import make_demo_model, write_config
from tests.test_dashboard import CHROMIUM, CHROMIUM_FLAGS, URL

CHANNELS = (("discord", "42", "Lighthouse · #tea-room"), ("telegram", "-1001", "Night Owls RP"),
            ("discord", "77", "Lighthouse · #mystery"))
TALK_SECONDS = 12


async def make(path: Path) -> None:
    from playwright.async_api import async_playwright

    from bot.app import build_app
    from bot.config import load_config
    from bot.dashboard import Dashboard

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        model = make_demo_model(directory, "demo7", 7, seed=7)
        app = await build_app(load_config(write_config(directory, model), env={}))
        dashboard = Dashboard(app.commands, port=0, sample_every=0.5)
        await dashboard.start()
        try:
            for platform, channel, title in CHANNELS:
                await send(app, "/char use Mira", platform=platform, channel=channel)
                await app.commands.titles.note(replace(ctx(platform=platform, channel=channel), chat_title=title))
                await send(app, "/params set max_tokens 60", platform=platform, channel=channel)

            async def talk(platform: str, channel: str) -> None:
                loop = asyncio.get_running_loop()
                end = loop.time() + TALK_SECONDS
                turn = 0
                while loop.time() < end:
                    await send(app, f"Tell me about the lighthouse, part {turn}.", platform=platform,
                               channel=channel)
                    turn += 1

            app.engine.step_hook = lambda rows: time.sleep(0.02)  # a GPU-like pace
            link = URL.search((await send(app, "/dashboard", platform="terminal", channel="terminal"))[-1]).group(0)
            talking = asyncio.gather(*(talk(p, c) for p, c, _ in CHANNELS))
            await asyncio.sleep(TALK_SECONDS - 4)  # the picture is taken while they still talk
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
                page = await (await browser.new_context(viewport={"width": 1100, "height": 800})).new_page()
                await page.goto(link)
                await page.click("#signin")
                await page.wait_for_function("() => document.getElementById('charts').dataset.drawn > 10 && document.getElementById('now-batch').textContent !== '0'")
                path.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(path))
                await browser.close()
            await talking
        finally:
            await dashboard.stop()
            await app.close()


if __name__ == "__main__":
    asyncio.run(make(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png")))
