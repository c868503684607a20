"""Bytes to text, text to JSON/YAML values, with the caps applied and every failure a CardError."""
from __future__ import annotations

import json
import re

from bot.cards.errors import CardError
from bot.cards.limits import MAX_JSON_DEPTH, MAX_TEXT_BYTES, MIB

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_text(data: bytes, what: str = "the file") -> str:
    """UTF-8 with or without a BOM; CRLF becomes LF. Anything else is refused rather than guessed."""
    if len(data) > MAX_TEXT_BYTES:
        size = len(data) / MIB
        raise CardError(f"{what} is too large ({size:.1f} MiB; the limit for text is {MAX_TEXT_BYTES // MIB} MiB)")
    if data.startswith(_UTF16_BOMS):
        raise CardError(f"{what} is UTF-16; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CardError(f"{what} is not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start})") from None
    if "\x00" in text:
        raise CardError(f"{what} contains NUL bytes: not a text card")
    return normalize_newlines(text)


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n")


def load_json(text: str, what: str = "the file") -> object:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CardError(f"{what} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise CardError(f"{what} is nested too deeply (the limit is {MAX_JSON_DEPTH} levels)") from None
    except ValueError as error:  # e.g. an integer literal with more digits than Python converts
        raise CardError(f"{what} is not valid JSON: {error}") from None
    check_values(value, what)
    return value


def check_values(value: object, what: str) -> None:
    """The nesting depth, and text that is text: a JSON or YAML escape can spell a lone UTF-16 surrogate
    ("\\ud800"), which no UTF-8 encoder (the database, the tokenizer) accepts, or a NUL ("\\u0000"), which
    PostgreSQL refuses in text and a text card may not hold either. Iterative, so checking a hostile document
    cannot itself overflow the stack."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise CardError(f"{what} is nested too deeply (the limit is {MAX_JSON_DEPTH} levels)")
        if isinstance(node, str):
            _check_text(node, what)
        elif isinstance(node, dict):
            for key in node:
                _check_text(key, what)
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")


def _check_text(text: str, what: str) -> None:
    found = _NOT_TEXT.search(text)
    if found is None:
        return
    if found[0] == "\x00":
        raise CardError(f"{what} contains NUL characters (\\u0000): not a text card")
    raise CardError(f"{what} holds a lone UTF-16 surrogate (\\u{ord(found[0]):04x}), which is not text; "
                    "the program that wrote the card is broken")


def load_yaml(text: str, what: str = "the file") -> object:
    """Safe YAML without anchors/aliases: an alias lets a 1 KB file expand into gigabytes when walked."""
    import yaml  # only YAML cards pay for the import

    class _Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # PyYAML calls this for every node, aliases included
            if self.check_event(yaml.AliasEvent):
                raise CardError(f"{what} uses YAML aliases (*name), which are not accepted in cards")
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > MAX_JSON_DEPTH:
                    raise CardError(f"{what} is nested too deeply (the limit is {MAX_JSON_DEPTH} levels)")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    try:
        value = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader: no Python objects
    except yaml.YAMLError as error:
        raise CardError(f"{what} is not valid YAML: {_yaml_problem(error)}") from None
    except RecursionError:
        raise CardError(f"{what} is nested too deeply (the limit is {MAX_JSON_DEPTH} levels)") from None
    return _as_json_values(value, what)


def _yaml_problem(error: Exception) -> str:
    problem = getattr(error, "problem", None) or str(error)
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1} column {mark.column + 1}" if mark else problem


def _as_json_values(value: object, what: str) -> object:
    """YAML dates, sets and odd keys become what JSON would hold, so cards from YAML serialize like any other."""
    try:
        value = json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError) as error:
        raise CardError(f"{what} holds a value cards cannot use: {error}") from None
    check_values(value, what)
    return value
