"""The character library at start: the sample cards shipped in the package, the owner's `characters.dir`, and
what the database remembers."""
from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import IntegrityError

from bot.cards import CardError, sample_cards_dir
from bot.conversations.characters import Library
from bot.store import Store


async def open_store(tmp_path) -> Store:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await store.open()
    return store


async def test_samples_serve_without_a_directory_and_the_owners_card_of_the_same_name_wins(tmp_path):
    store = await open_store(tmp_path)
    try:
        library = Library(store, tmp_path / "no-such-dir", samples_dir=sample_cards_dir())
        await library.load()
        assert sorted(library.names()) == sorted(["Mira", "林小满"])

        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "mira.json").write_text(json.dumps({"name": "Mira", "description": "the owner's own Mira"}))
        library = Library(store, mine, samples_dir=sample_cards_dir())
        await library.load()
        assert library.find("Mira").description == "the owner's own Mira"
        assert library.find("林小满") is not None
    finally:
        await store.close()


async def test_samples_switched_off_are_not_offered_even_when_an_earlier_start_stored_them(tmp_path):
    store = await open_store(tmp_path)
    try:
        await Library(store, None, samples_dir=sample_cards_dir()).load()
        library = Library(store, None, samples_dir=None)
        await library.load()
        assert library.names() == []
    finally:
        await store.close()


async def test_a_card_the_database_refuses_leaves_no_ghost(tmp_path):
    """The database refusing a card (here a trigger, as PostgreSQL refuses text it cannot store) fails the import,
    and the card is not listed later, not even after the next import succeeds."""
    store = await open_store(tmp_path)
    try:
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON characters WHEN NEW.name = 'Ghost' "
                                       "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        library = Library(store, None)
        await library.load()
        ghost = json.dumps({"name": "Ghost", "description": "never stored"}).encode()
        with pytest.raises(IntegrityError, match="refused"):
            await library.import_card("ghost.json", ghost)
        card, is_new = await library.import_card("real.json", json.dumps({"name": "Real"}).encode())
        assert is_new and library.names() == ["Real"] and library.find("Ghost") is None
    finally:
        await store.close()


async def test_a_file_name_longer_than_the_database_keeps_is_one_card_error(database_url):
    store = Store(database_url)
    await store.open()
    try:
        library = Library(store, None)
        await library.load()
        card = json.dumps({"name": "Longname"}).encode()
        with pytest.raises(CardError, match="file name is 300 characters long"):
            await library.import_card("n" * 295 + ".json", card)
        assert library.names() == []
        assert (await library.import_card("n" * 251 + ".json", card))[1]  # at the limit: stored
    finally:
        await store.close()
