"""The one exception every malformed card turns into."""
from __future__ import annotations


class CardError(ValueError):
    """A card file we refuse. `str(error)` is one line naming the problem, fit to show a user as is."""

    def __init__(self, message: str) -> None:
        # Callers print this on one line (CLI stderr, chat replies), so a newline from an inner message must not
        # split it.
        super().__init__(" ".join(str(message).split()))


def json_type_name(value: object) -> str:
    """How a JSON author would call the type they wrote, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
