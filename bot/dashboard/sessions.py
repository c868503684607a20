"""Signed-in browsers: a random session id in an HttpOnly, SameSite=Strict cookie, and per session the sign-ins
(the Contexts the platform verified) and one CSRF token that every form must carry.

Sessions live in memory: a restart signs everyone out, and nothing secret is ever written to disk or to a log.
"""
from __future__ import annotations

import collections
import hmac
import secrets
import time
from dataclasses import dataclass, field

from bot.commands import Context

SESSION_COOKIE = "rwkvbot_session"
SIGNIN_COOKIE = "rwkvbot_signin"  # ties the sign-in button to the browser that opened the link (login CSRF)
SESSION_SECONDS = 8 * 3600
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    grants: list[Context]  # one per chat the admin signed in from, the latest last
    csrf: str
    expires: float
    notices: list[tuple[bool, str]] = field(default_factory=list)  # (ok, text) shown once, on the next page

    @property
    def who(self) -> str:
        latest = self.grants[-1]
        return f"{latest.user_name} ({latest.key.platform})"

    def notice(self, ok: bool, text: str) -> None:
        self.notices.append((ok, text))

    def take_notices(self) -> list[tuple[bool, str]]:
        shown, self.notices = self.notices, []
        return shown

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.csrf.encode())


def identity(ctx: Context) -> tuple[str, str]:
    return ctx.key.platform, ctx.user_id


class Sessions:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._by_id: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def sign_in(self, current: Session | None, grant: Context) -> Session:
        """A session holding `grant`: the browser's own one when the same person signs in from another chat
        (their chats add up), else a new one (a new id, so a planted cookie never gains a sign-in)."""
        grants = [grant]
        if current is not None:
            if identity(current.grants[-1]) == identity(grant):
                grants = [g for g in current.grants if g.key != grant.key] + [grant]
            self.drop(current.id)
        session = Session(secrets.token_urlsafe(32), grants, secrets.token_urlsafe(32),
                          self.clock() + SESSION_SECONDS)
        self._by_id[session.id] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        if self.clock() >= session.expires:
            self.drop(session.id)
            return None
        return session

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)
