"""The admin web page (issue 18): sign-in links, scope, the audit log, and the page itself in a real headless
Chromium from Debian's packages, driven by Playwright with the system browser (nothing is downloaded).

Every change the page makes is checked where a platform user would see it: through the command layer (`/params`,
`/char list`) in the same process.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bot.cards import embed_card
from bot.commands import Reply
from bot.commands.signin import LINK_SECONDS, SignInLinks, SignInRefused
from bot.i18n import t
from tests.cards.builders import tiny_png
from tests.chat_helpers import GREEDY, ctx, outputs as outputs_of, send
from tests.conftest import ROOT, write_config

CHROMIUM = "/usr/bin/chromium"
# What works on this kind of machine (no sandbox as root, no network beyond localhost); Playwright adds
# --headless and a fresh --user-data-dir of its own for each launch.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
URL = re.compile(r"http://\S+/signin/\S+")


# ----- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture
async def app(tmp_path, demo7):
    from bot.app import build_app
    from bot.config import load_config

    application = await build_app(load_config(write_config(tmp_path, demo7), env={}))
    yield application
    await application.close()


@pytest.fixture
async def dash(app):
    from bot.dashboard import Dashboard

    dashboard = Dashboard(app.commands, port=0, sample_every=0.2)
    await dashboard.start()
    yield dashboard
    await dashboard.stop()


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (`make test` installs Debian's chromium as root); browser tests skipped")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        await chromium.close()


async def page_of(browser, javascript: bool = True):
    context = await browser.new_context(java_script_enabled=javascript, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(10_000)
    return await context.new_page()


async def link_for(app, **kw) -> str:
    lines = await send(app, "/dashboard", **kw)
    found = URL.search(lines[-1])
    assert found, lines
    return found.group(0)


async def sign_in(page, link: str) -> None:
    await page.goto(link)
    await page.click("#signin")
    await page.wait_for_url(re.compile(r"/$"))


async def params_value(app, name: str, **kw) -> str:
    """What `/params` in the channel reports for `name`, as `* name = value` or `  name = value`."""
    shown = (await send(app, "/params", **kw))[0]
    return next(line.split("  (")[0] for line in shown.splitlines() if f" {name} = " in line)


# ----- the command layer ------------------------------------------------------------------------------------
async def test_dashboard_command_off_for_admins_and_private(app):
    assert await send(app, "/dashboard") == [t("dashboard_off", "en")]  # no [dashboard] port: off
    app.commands.signins = SignInLinks("http://127.0.0.1:9")
    outputs = await outputs_of(app, "/dashboard")
    assert len(outputs) == 1 and isinstance(outputs[0], Reply)
    assert outputs[0].private and outputs[0].ephemeral  # for the caller only: never posted in the group
    assert URL.search(outputs[0].text)
    # A non-admin of a group gets the usual refusal and no link exists for them.
    before = len(app.commands.signins._links)
    assert await send(app, "/dashboard", channel="g1", user="Mallory", admin=False, group=True) == [
        t("not_admin", "en")]
    assert len(app.commands.signins._links) == before


def test_a_link_works_once_and_for_ten_minutes():
    now = [1000.0]
    links = SignInLinks("http://h:1", clock=lambda: now[0])
    admin_ctx = ctx()
    token = links.issue(admin_ctx).rsplit("/", 1)[1]
    assert links.check(token) is admin_ctx and links.check(token) is admin_ctx  # looking does not use it up
    assert links.redeem(token) is admin_ctx
    with pytest.raises(SignInRefused, match="signin_used"):
        links.redeem(token)
    late = links.issue(admin_ctx).rsplit("/", 1)[1]
    now[0] += LINK_SECONDS
    with pytest.raises(SignInRefused, match="signin_expired"):
        links.check(late)
    with pytest.raises(SignInRefused, match="signin_unknown"):
        links.check(token[:-2] + "xx")


async def test_every_admin_change_is_audited_once_whichever_surface(app):
    from bot.commands import admin

    await send(app, "/params set temperature 0.5", platform="telegram", channel="-100")
    await send(app, "/params set temperature 99", platform="telegram", channel="-100")  # refused: not a change
    await send(app, "/params show", platform="telegram", channel="-100")  # a read
    await send(app, "/format user-assistant", platform="discord", channel="55", user="Dana")
    card = json.dumps({"name": "Audit Owl", "first_mes": "Hoo."}).encode()
    await send(app, "/char import", platform="discord", channel="55", user="Dana", attachment=("owl.json", card),
               bot_admin=True)  # the shared library is the bot admins'

    page_ctx = admin.acting_context([ctx(platform="telegram", channel="-100")], "telegram:-100")
    assert (await admin.set_params(app.commands, page_ctx, {"top_k": "7"})).ok
    rows = await admin.audit_log(app.commands)
    assert [(r.surface, r.channel, r.action, r.detail) for r in reversed(rows)] == [
        ("telegram", "telegram:-100", "params set", "temperature 0.5"),
        ("discord", "discord:55", "format", "user-assistant"),
        ("discord", "discord:55", "char import", "owl.json"),
        ("dashboard", "telegram:-100", "params set", "top_k 7"),
    ]
    assert rows[0].user == "Alice (alice)"
    # A scoped reader sees only the audit of their own chats.
    assert {r.channel for r in await admin.audit_log(app.commands, {"discord:55"})} == {"discord:55"}


async def test_scope_covers_the_chats_signed_in_from_and_the_terminal_covers_all(app):
    from bot.commands import admin

    group = ctx(platform="telegram", channel="-100", group=True)
    assert admin.acting_context([group], "telegram:-100").key == group.key
    assert admin.acting_context([group], "telegram:-200") is None
    assert admin.visible_channels([group]) == {"telegram:-100"}
    local = ctx(platform="terminal", channel="terminal")
    acting = admin.acting_context([local], "discord:7")
    assert str(acting.key) == "discord:7" and acting.surface == "dashboard"
    assert admin.visible_channels([group, local]) is None


def test_sign_ins_from_several_chats_add_up_and_another_person_starts_afresh():
    from bot.commands import admin
    from bot.dashboard.sessions import Sessions

    sessions = Sessions()
    first = sessions.sign_in(None, ctx(platform="telegram", channel="-1", user="Alice"))
    both = sessions.sign_in(first, ctx(platform="telegram", channel="-2", user="Alice"))
    assert admin.visible_channels(both.grants) == {"telegram:-1", "telegram:-2"}
    assert sessions.get(first.id) is None and both.id != first.id and both.csrf != first.csrf
    other = sessions.sign_in(both, ctx(platform="telegram", channel="-3", user="Mallory"))
    assert admin.visible_channels(other.grants) == {"telegram:-3"} and sessions.get(both.id) is None


async def test_titles_are_remembered_without_touching_last_activity(app):
    from bot.commands import admin

    await send(app, "/start", platform="telegram", channel="-5")
    before = (await admin.channels(app.commands))[0]
    await outputs_of(app, "/params", platform="telegram", channel="-5", chat_title="Night Owls")
    after = (await admin.channels(app.commands))[0]
    assert after.title == "Night Owls" and after.last_activity == before.last_activity


async def test_reading_a_channel_creates_nothing(app):
    from bot.commands import admin

    assert await admin.channel(app.commands, "telegram:nowhere") is None
    assert await admin.channels(app.commands) == []


# ----- the migration ----------------------------------------------------------------------------------------
async def check_audit_migration(url: str) -> None:
    """0005 adds the audit log and channel titles; downgrading to 0002 removes exactly those and keeps the rest."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    from bot.store import Store, downgrade_database, upgrade_database

    await asyncio.to_thread(upgrade_database, url)
    store = Store(url)
    await store.open()
    await store.get_or_create_channel("t", "1")
    assert await store.set_title("t", "1", "Room")
    await store.add_audit(surface="t", user_id="1", user_name="A", channel="t:1", action="params set", detail="x")
    await store.close()
    await asyncio.to_thread(downgrade_database, url, "0002")
    engine = create_async_engine(url)

    def shape(conn):
        inspector = sa.inspect(conn)
        return set(inspector.get_table_names()), {c["name"] for c in inspector.get_columns("channels")}

    async with engine.connect() as conn:
        tables, columns = await conn.run_sync(shape)
        assert "audit_log" not in tables and "saves" in tables and "title" not in columns
        assert (await conn.execute(sa.text("SELECT external_id FROM channels"))).scalars().all() == ["1"]
    await asyncio.to_thread(upgrade_database, url)
    async with engine.connect() as conn:
        tables, columns = await conn.run_sync(shape)
        assert "audit_log" in tables and "title" in columns
    await engine.dispose()


async def test_audit_migration_on_sqlite(tmp_path):
    await check_audit_migration(f"sqlite+aiosqlite:///{tmp_path}/a.db")


async def test_audit_migration_on_postgres(postgres_url):
    await check_audit_migration(postgres_url)


# ----- the page, in Chromium --------------------------------------------------------------------------------
async def test_sign_in_see_and_change_params_without_javascript(app, dash, browser):
    """The whole admin path with JavaScript off: the page needs it only for the plots."""
    await send(app, "/char use Mira", platform="telegram", channel="-100", group=True)
    page = await page_of(browser, javascript=False)
    await sign_in(page, await link_for(app, platform="telegram", channel="-100", group=True))

    await page.click("text=Channels")
    await page.click("#channels >> text=telegram:-100")
    assert await page.input_value("#param-temperature") == "2.0"

    await page.fill("#param-temperature", "0.5")
    await page.click("#save-params")
    assert await page.inner_text(".notice") == t("params_set", "en", changes="temperature = 0.5")
    assert await page.input_value("#param-temperature") == "0.5"
    assert await params_value(app, "temperature", platform="telegram", channel="-100") == "* temperature = 0.5"

    # A bad value: the same refusal as /params set, and nothing changes (not even the valid value beside it).
    expected = (await send(app, "/params set top_k 1.5", platform="telegram", channel="-100"))[0]
    await page.fill("#param-top_k", "1.5")
    await page.fill("#param-max_tokens", "50")
    await page.click("#save-params")
    assert await page.inner_text(".notice.refused") == expected
    assert await params_value(app, "max_tokens", platform="telegram", channel="-100") == "  max_tokens = 300"

    await page.click("text=Audit log")
    audit = await page.inner_text("#audit")
    assert "params set temperature 0.5" in audit and "dashboard" in audit and "dashboard sign-in" in audit
    await page.context.close()


async def test_upload_a_card_see_it_in_char_list_then_delete_it(app, dash, browser, tmp_path):
    page = await page_of(browser)
    await sign_in(page, await link_for(app, platform="terminal", channel="terminal"))
    await page.click("text=Characters")

    card = {"name": "Wren", "description": "A lighthouse keeper.", "first_mes": "The lamp is lit. *She waves.*"}
    path = tmp_path / "wren.png"
    path.write_bytes(embed_card(tiny_png((10, 120, 200), size=8), json.dumps(card)))
    await page.set_input_files("#card-file", str(path))
    await page.click("#import-card")
    source_format = app.library.find("Wren").source_format
    assert await page.inner_text(".notice") == t("char_imported", "en", name="Wren", format=source_format)
    assert "- Wren" in (await send(app, "/char list"))[0].splitlines()
    wren = page.locator("article.card", has_text="Wren")
    assert "The lamp is lit." in await wren.inner_text()  # the first message's preview
    avatar = await wren.locator("img.avatar").evaluate("img => img.naturalWidth")
    assert avatar == 8  # the card's own image, served and decoded

    # Every refusal of /char import, word for word: a broken card, and a file over the limit.
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"name": ')
    expected = (await send(app, "/char import", attachment=("broken.json", broken.read_bytes()), bot_admin=True))[0]
    await page.set_input_files("#card-file", str(broken))
    await page.click("#import-card")
    assert await page.inner_text(".notice.refused") == expected
    from bot.commands.admin import MAX_CARD_BYTES

    for size in (MAX_CARD_BYTES + 1, MAX_CARD_BYTES + (1 << 20)):  # read and refused; refused unread
        huge = tmp_path / "huge.json"
        huge.write_bytes(b" " * size)
        expected = (await send(app, "/char import", attachment=("huge.json", huge.read_bytes()), bot_admin=True))[0]
        await page.set_input_files("#card-file", str(huge))
        await page.click("#import-card")
        assert await page.inner_text(".notice.refused") == expected

    await wren.locator("button.danger").click()
    assert await page.inner_text(".notice") == t("char_deleted", "en", name="Wren")
    assert "- Wren" not in (await send(app, "/char list"))[0].splitlines()
    await page.context.close()


async def test_refused_links_forms_and_chats(app, dash, browser):
    page = await page_of(browser)
    # Not signed in: nothing to see.
    await page.goto(dash.url + "/channels")
    assert "Not signed in" in await page.inner_text("main")

    # An expired link.
    expired = await link_for(app, platform="telegram", channel="-100", group=True)
    real_clock = dash.links.clock
    dash.links.clock = lambda: real_clock() + LINK_SECONDS + 1
    await page.goto(expired)
    assert t("signin_expired", "en") in await page.inner_text("main")
    dash.links.clock = real_clock

    # A reused link, in a second browser.
    link = await link_for(app, platform="telegram", channel="-100", group=True)
    await sign_in(page, link)
    other = await page_of(browser)
    await other.goto(link)
    assert t("signin_used", "en") in await other.inner_text("main")
    assert "/channels" not in await other.content()  # no way in

    # A non-admin of a group gets no link; with one from their private chat they see only that chat.
    assert not URL.search((await send(app, "/dashboard", platform="telegram", channel="-100", user="Mallory",
                                      admin=False, group=True))[0])
    await sign_in(other, await link_for(app, platform="telegram", channel="77", user="Mallory"))
    await other.goto(dash.url + "/channels")
    assert "telegram:-100" not in await other.inner_text("main")
    response = await other.goto(dash.url + "/channel?c=telegram%3A-100")
    assert response.status == 404
    await other.goto(dash.url + "/audit")
    assert "telegram:-100" not in await other.inner_text("main")

    # A form without its CSRF token changes nothing.
    await send(app, GREEDY, platform="telegram", channel="-100")
    await page.goto(dash.url + "/channel?c=telegram%3A-100")
    await page.fill("#param-temperature", "1.5")
    await page.evaluate("document.querySelector('#params input[name=csrf]').remove()")
    await page.click("#save-params")
    assert "security token" in await page.inner_text("main")
    assert await params_value(app, "temperature", platform="telegram", channel="-100") == "* temperature = 0.0"
    await page.context.close()
    await other.context.close()


async def test_now_page_plots_the_live_numbers(app, dash, browser):
    page = await page_of(browser)
    await send(app, "/char use Mira", platform="discord", channel="42")
    await app.commands.titles.note(replace(ctx(platform="discord", channel="42"), chat_title="Lighthouse #tea-room"))
    await send(app, GREEDY, platform="discord", channel="42")
    await send(app, "Hello! Is the kettle on?", platform="discord", channel="42")
    await sign_in(page, await link_for(app, platform="terminal", channel="terminal"))
    await page.wait_for_function("() => document.getElementById('charts').dataset.drawn > 1")
    assert await page.locator("#charts canvas").count() == 5
    tps = await page.evaluate("fetch('/api/now').then(r => r.json()).then(d => d.tps.length)")
    assert tps >= 2
    await page.context.close()


# ----- the terminal -----------------------------------------------------------------------------------------
def test_terminal_chat_prints_a_sign_in_link_that_works(tmp_path, demo7):
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, demo7, settings={"dashboard.port": port})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    chat = subprocess.Popen([sys.executable, "-m", "bot", "chat", "--config", str(config)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        link = None
        while link is None and time.monotonic() < deadline:
            line = chat.stdout.readline()
            if not line:
                break
            found = URL.search(line)
            link = found.group(0) if found else None
        assert link and link.startswith(f"http://127.0.0.1:{port}/signin/")
        with urllib.request.urlopen(link, timeout=10) as response:
            page = response.read().decode()
        assert "Sign in" in page and "terminal:terminal" in page
    finally:
        chat.stdin.close()
        chat.wait(timeout=60)
    assert chat.returncode == 0
