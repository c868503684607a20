"""`rwkv-bot card show|import`. Never loads the model: nothing here imports torch or rwkv.

A refused file gives exit code 2 and exactly one line on stderr, so scripts and the platforms' upload handlers can
report it as is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bot.cards.errors import CardError
from bot.cards.files import carries_own_avatar, load_card_file, scan_directory, sibling_avatar
from bot.cards.model import Card

# The bot scans `characters.dir` at start and keeps every card it finds in its database: importing is copying
# the file there. (The platforms' /char import goes straight into the running bot's library instead.)
_EXCERPT_CHARS = 300


def show_command(args: argparse.Namespace) -> int:
    try:
        card = load_card_file(args.file)
    except CardError as error:
        return _refuse(args.file, str(error))
    except Exception as error:  # the contract is one line and exit 2, never a traceback
        return _refuse(args.file, f"unexpected {type(error).__name__}: {error}")
    _print(json.dumps(card.to_json(), ensure_ascii=False, indent=2) if args.json else summary(card))
    return 0


def import_command(args: argparse.Namespace) -> int:
    from bot.config import ConfigError, load_config

    source = Path(args.file)
    try:
        library_dir = Path(load_config(getattr(args, "config", None)).characters.dir)
    except ConfigError as error:
        print(f"rwkv-bot card: config: {error}", file=sys.stderr)
        return 2
    try:
        card = load_card_file(source)
        copied = import_into(source, card, library_dir)
    except CardError as error:
        return _refuse(args.file, str(error))
    except Exception as error:  # same contract as show
        return _refuse(args.file, f"unexpected {type(error).__name__}: {error}")
    _print(f"imported {card.name} ({card.source_format}) into {', '.join(str(path) for path in copied)}")
    return 0


def import_into(source: Path, card: Card, library: Path) -> list[Path]:
    """Copy the card file (and its avatar, for text cards) into `library`; refuses to replace a different card."""
    _check_name_is_free(card, source, library)
    files = [source] + ([avatar] if (avatar := _avatar_file(source, card)) else [])
    planned = [(file, library / file.name) for file in files]
    for file, destination in planned:
        if destination.exists() and destination.read_bytes() != file.read_bytes():
            raise CardError(f"{destination} already exists with different content; rename the file to import it")
    library.mkdir(parents=True, exist_ok=True)
    for file, destination in planned:
        _copy_atomically(file, destination)
    return [destination for _, destination in planned]


def _avatar_file(source: Path, card: Card) -> Path | None:
    return None if carries_own_avatar(card) or card.avatar is None else sibling_avatar(source, card)


def _check_name_is_free(card: Card, source: Path, library: Path) -> None:
    existing, _ = scan_directory(library) if library.is_dir() else ([], [])
    for other, path in existing:
        if other.name.casefold() == card.name.casefold() and path.name != source.name:
            raise CardError(f"the library already has a character named {other.name} ({path})")


def _copy_atomically(source: Path, destination: Path) -> None:
    if destination.exists() and destination.samefile(source):
        return
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".import-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(source.read_bytes())
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def summary(card: Card) -> str:
    book = card.character_book
    details = [f"{card.name} ({card.source_format})"]
    if card.nickname:
        details.append(f"Called: {card.nickname}")
    if card.creator or card.character_version:
        details.append(f"By: {card.creator or 'unknown'}, version {card.character_version or '-'}")
    if card.tags:
        details.append(f"Tags: {', '.join(card.tags)}")
    details.append(f"Greetings: first message + {len(card.alternate_greetings)} alternate")
    details.append(f"Lorebook: {len(book.entries)} entries" if book else "Lorebook: none")
    details.append(f"Avatar: PNG, {len(card.avatar)} bytes" if card.avatar else "Avatar: none")
    details.append(f"Description: {_excerpt(card.description)}")
    return "\n".join(details)


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[: _EXCERPT_CHARS - 1] + "…"


def _refuse(file: str, problem: str) -> int:
    print(f"rwkv-bot card: {' '.join(str(file).split())}: {problem}", file=sys.stderr)
    return 2


def _print(text: str) -> None:
    """UTF-8 even when the terminal's locale cannot encode the card's language."""
    try:
        print(text)
    except UnicodeEncodeError:
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
        sys.stdout.flush()
