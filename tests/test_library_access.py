"""Who may change the character library: the shared library is the bot admins'; users import cards of their own
only where the owner allows it, seen only by them; a name never shadows another card; cards can be deleted;
imports are held to per-user and global quotas. Through the command layer, the way every adapter calls it."""
from __future__ import annotations

import asyncio
import json

import pytest

from bot.app import build_app
from bot.config import load_config
from bot.conversations import ChannelKey
from bot.i18n import t
from tests.chat_helpers import send
from tests.conftest import CHARACTERS, write_config

MIRA_GREETING = json.loads((CHARACTERS / "mira.json").read_text(encoding="utf-8"))["data"]["first_mes"].strip()


def card(name: str, greeting: str = "Hello there.", padding: int = 0) -> bytes:
    return json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": name, "description": f"{name} keeps bees." + "b" * padding, "personality": "", "scenario": "",
        "first_mes": greeting, "mes_example": ""}}).encode()


async def open_app(tmp_path, demo7, **settings):
    return await build_app(load_config(write_config(tmp_path, demo7, settings=settings), env={}))


async def importing(app, name: str, greeting: str = "Hello there.", **kw) -> list[str]:
    return await send(app, "/char import", attachment=(f"{name.lower()}.json", card(name, greeting)), **kw)


async def test_a_stranger_cannot_replace_a_shared_character(tmp_path, demo7):
    app = await open_app(tmp_path, demo7)
    try:
        # A private chat makes its user a chat admin, but not one of the bot's admins.
        assert await importing(app, "Mira", "I am the impostor.", channel="dm-mallory", user="Mallory") == [
            t("not_bot_admin")]
        assert await importing(app, "Wren", channel="dm-mallory", user="Mallory") == [t("not_bot_admin")]
        assert app.library.find("Wren") is None
        # Not even a bot admin's import takes a name that is in use: it is refused, never shadowing the card.
        lines = await importing(app, "mira", "I am the impostor.", channel="dm-boss", user="Boss", bot_admin=True)
        assert lines == [t("card_name_taken", name="mira")]
        assert (await send(app, "/char use Mira", channel="elsewhere"))[1] == f"Mira: {MIRA_GREETING}"
    finally:
        await app.close()
    app = await open_app(tmp_path, demo7)  # and after a restart
    try:
        assert (await send(app, "/start", channel="new-after-restart"))[0] == f"Mira: {MIRA_GREETING}"
        assert [c.name for c in app.library.cards()] == ["Mira", "林小满"]
    finally:
        await app.close()


async def test_bot_admins_import_into_the_shared_library_and_delete_from_it(tmp_path, demo7):
    app = await open_app(tmp_path, demo7)
    try:
        assert await importing(app, "Wren", "Wren waves.", user="Boss", bot_admin=True) == [
            t("char_imported", name="Wren", format="v2")]
        assert await importing(app, "Wren", "Wren waves.", user="Boss", bot_admin=True) == [
            t("char_already", name="Wren")]
        assert (await send(app, "/char use Wren", channel="w", user="Ann"))[1] == "Wren: Wren waves."
        # Only a bot admin deletes a shared card; the directory's cards are removed in the directory.
        assert await send(app, "/char delete Wren", channel="dm-ann", user="Ann") == [t("not_bot_admin")]
        assert await send(app, "/char delete Mira", user="Boss", bot_admin=True) == [t("card_in_dir", name="Mira")]
        assert await send(app, "/char delete Nobody", user="Boss", bot_admin=True) == [
            t("unknown_character", name="Nobody")]
        assert await send(app, "/char delete wren", user="Boss", bot_admin=True) == [t("char_deleted", name="Wren")]
        assert "Wren" not in (await send(app, "/char list", channel="w2"))[0]
        assert await send(app, "/char use Wren", channel="w2") == [t("unknown_character", name="Wren")]
        # The channel that uses it keeps its character (and its conversation) until it switches.
        assert (await send(app, "/start", channel="w", user="Ann")) == ["Wren: Wren waves."]
        # The name is free again.
        assert await importing(app, "Wren", "A new Wren.", user="Boss", bot_admin=True) == [
            t("char_imported", name="Wren", format="v2")]
    finally:
        await app.close()
    app = await open_app(tmp_path, demo7)
    try:
        assert (await send(app, "/start", channel="w", user="Ann")) == ["Wren: Wren waves."]
        assert (await send(app, "/char use Wren", channel="w3"))[1] == "Wren: A new Wren."
    finally:
        await app.close()


async def test_own_cards_where_the_owner_allows_them(tmp_path, demo7):
    app = await open_app(tmp_path, demo7, **{"characters.user_imports": True, "limits.max_user_cards": 2})
    try:
        assert await importing(app, "Nova", "Nova waves.", channel="dm-ann", user="Ann") == [
            t("char_imported_own", name="Nova", format="v2")]
        assert f"- Nova {t('char_yours')}" in (await send(app, "/char list", channel="dm-ann", user="Ann"))[0]
        assert (await send(app, "/char use nova", channel="dm-ann", user="Ann"))[1] == "Nova: Nova waves."
        # Nobody else sees it, or can take its name; bot admins see it, with its owner.
        assert "Nova" not in (await send(app, "/char list", channel="dm-bob", user="Bob"))[0]
        assert await send(app, "/char use Nova", channel="dm-bob", user="Bob") == [
            t("unknown_character", name="Nova")]
        assert await importing(app, "Nova", "Bob's Nova.", channel="dm-bob", user="Bob") == [
            t("card_name_taken", name="Nova")]
        assert await importing(app, "Mira", "Not Mira.", channel="dm-bob", user="Bob") == [
            t("card_name_taken", name="Mira")]
        listing = (await send(app, "/char list", user="Boss", bot_admin=True))[0]
        assert f"- Nova {t('char_owned_by', owner='test:ann')}" in listing
        # Quota: two of their own.
        assert (await importing(app, "Orla", channel="dm-ann", user="Ann"))[0].startswith("Imported Orla")
        assert await importing(app, "Pia", channel="dm-ann", user="Ann") == [t("too_many_cards", limit=2)]
        # They delete their own cards, not the shared ones; then there is room again.
        assert await send(app, "/char delete Mira", channel="dm-ann", user="Ann") == [t("not_bot_admin")]
        assert await send(app, "/char delete Orla", channel="dm-ann", user="Ann") == [t("char_deleted", name="Orla")]
        assert (await importing(app, "Pia", channel="dm-ann", user="Ann"))[0].startswith("Imported Pia")
    finally:
        await app.close()
    app = await open_app(tmp_path, demo7, **{"characters.user_imports": True})
    try:  # after a restart: still theirs only
        assert "Nova" in (await send(app, "/char list", channel="dm-ann", user="Ann"))[0]
        assert "Nova" not in (await send(app, "/char list", channel="dm-bob", user="Bob"))[0]
        assert (await send(app, "/start", channel="dm-ann", user="Ann")) == ["Nova: Nova waves."]
    finally:
        await app.close()


async def test_the_library_has_a_size_quota(tmp_path, demo7):
    app = await open_app(tmp_path, demo7, **{"limits.max_library_mib": 1})
    try:
        big = card("Big", padding=90_000)
        for i in range(11):  # 11 x ~90 KB fit in 1 MiB, the 12th does not
            name = f"Big {i}"
            lines = await send(app, "/char import", user="Boss", bot_admin=True,
                               attachment=("big.json", big.replace(b'"Big"', json.dumps(name).encode())))
            assert lines == [t("char_imported", name=name, format="v2")], lines
        lines = await send(app, "/char import", user="Boss", bot_admin=True,
                           attachment=("big.json", big.replace(b'"Big"', b'"Big 11"')))
        assert lines == [t("library_full", limit=1)]
        assert app.library.find("Big 11") is None
        # Deleting one that no channel uses frees its room.
        assert await send(app, "/char delete Big 0", user="Boss", bot_admin=True) == [t("char_deleted", name="Big 0")]
        lines = await send(app, "/char import", user="Boss", bot_admin=True,
                           attachment=("big.json", big.replace(b'"Big"', b'"Big 11"')))
        assert lines == [t("char_imported", name="Big 11", format="v2")]
    finally:
        await app.close()


async def test_a_card_the_database_refuses_is_not_listed(tmp_path, demo7):
    app = await open_app(tmp_path, demo7)
    try:
        async def refuse(*args, **kwargs):
            raise OSError("disk full")

        app.store.put_character = refuse
        with pytest.raises(OSError):
            await app.library.import_card("ghost.json", card("Ghost"))
        assert app.library.find("Ghost") is None and "Ghost" not in app.library.names()
    finally:
        await app.close()


async def test_the_migration_lists_every_stored_card_once(tmp_path, demo7, database_url):
    """A database from before the library had names: every card becomes shared, the newest of a name keeps it."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from bot.store import downgrade_database, upgrade_database

    url = database_url
    app = await open_app(tmp_path, demo7, **{"database.url": url, "characters.user_imports": True})
    await importing(app, "Wren", "Wren waves.", user="Boss", bot_admin=True)
    await importing(app, "Nova", "Nova waves.", channel="dm-ann", user="Ann")
    await app.close()
    await asyncio.to_thread(downgrade_database, url, "0002")  # the personal card goes: the old schema would list it for everyone
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        names = sorted((await conn.execute(text("SELECT name FROM characters"))).scalars())
        assert names == ["Mira", "Wren", "林小满"]
        # An old database could hold two cards of one name (an edited file): the newest keeps the name.
        await conn.execute(text("INSERT INTO characters SELECT 'old-wren', name, source_format, card, filename, raw, "
                                "avatar, origin, '2000-01-01 00:00:00' FROM characters WHERE name = 'Wren'"))
    await engine.dispose()
    await asyncio.to_thread(upgrade_database, url)
    app = await open_app(tmp_path, demo7, **{"database.url": url})
    try:
        assert app.library.names() == ["Mira", "Wren", "林小满"]
        assert (await send(app, "/char use Wren", channel="x"))[1] == "Wren: Wren waves."
        assert app.library.get("old-wren") is None  # unlisted and unused: purged at start
    finally:
        await app.close()
