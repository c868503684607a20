"""The one exception the database turns into for the owner: a bad URL, a server that does not answer, a database
the migrations cannot adopt. `str(error)` is one line, printed as is by `run`, `chat` and `db`."""
from __future__ import annotations


class StoreError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: show only its scheme
        return url.split(":", 1)[0] + "://..."
