"""One-time sign-in links to the admin web page: `/dashboard` issues one to an admin; the page redeems it.

A link carries no identity itself: it names an entry here holding the `Context` of the `/dashboard` that asked
for it, which the platform verified as an admin's. The page acts for that admin in that chat with that same
Context, so the command layer decides what they may do exactly as it does on the platform. Only a hash of each
token is kept; a link works once and for LINK_SECONDS.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from bot.commands.base import Context

LINK_SECONDS = 10 * 60
TOKEN_BYTES = 32
MAX_OPEN_LINKS = 10_000  # unredeemed links kept; the oldest go first


class SignInRefused(Exception):
    """`reason` is a message key in bot.i18n."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Link:
    ctx: Context
    expires: float
    used: bool = False


class SignInLinks:
    def __init__(self, base_url: str, clock=time.monotonic):
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self._links: dict[str, _Link] = {}

    def issue(self, ctx: Context) -> str:
        """A new link for the admin in `ctx` (the caller checked that they are one)."""
        self._forget_expired()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._links[_digest(token)] = _Link(ctx, self.clock() + LINK_SECONDS)
        return f"{self.base_url}/signin/{token}"

    def check(self, token: str) -> Context:
        """The link's Context without using it up (the page shows a button first: link previews only GET)."""
        return self._valid(token).ctx

    def redeem(self, token: str) -> Context:
        link = self._valid(token)
        link.used = True
        return link.ctx

    def _valid(self, token: str) -> _Link:
        link = self._links.get(_digest(token))
        if link is None:
            raise SignInRefused("signin_unknown")
        if link.used:
            raise SignInRefused("signin_used")
        if self.clock() >= link.expires:
            raise SignInRefused("signin_expired")
        return link

    def _forget_expired(self) -> None:
        # A used or expired link is kept until well past its time, so that it is refused as such, not as unknown.
        now = self.clock()
        for key in [k for k, link in self._links.items() if link.expires + LINK_SECONDS < now]:
            del self._links[key]
        while len(self._links) >= MAX_OPEN_LINKS:
            del self._links[next(iter(self._links))]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
