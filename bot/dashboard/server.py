"""The admin web page, served by the bot itself: Starlette on uvicorn, in the bot's own event loop.

Pages are rendered on the server (Jinja2) and every one works without JavaScript; only the live plots of the
"Now" page use it (uPlot, vendored under static/). Everything shown comes from `bot.commands.admin`, and every
change is a command run through the command layer in the admin's own Context (see that module).

Security: the page listens on 127.0.0.1 unless configured otherwise; a one-time link from /dashboard signs a
browser in; the session cookie is HttpOnly and SameSite=Strict; every form carries the session's CSRF token;
a signed-in admin sees only the chats they signed in from. URLs (which hold sign-in tokens) are never logged.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import socket
from pathlib import Path
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bot.commands import admin
from bot.commands.signin import LINK_SECONDS, SignInLinks, SignInRefused
from bot.dashboard.history import SAMPLE_SECONDS, History
from bot.dashboard.sessions import SESSION_COOKIE, SESSION_SECONDS, SIGNIN_COOKIE, Session, Sessions
from bot.i18n import t

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
FORM_BYTES = 64 << 10  # any form but a card upload
UPLOAD_BYTES = admin.MAX_CARD_BYTES + FORM_BYTES  # larger uploads are refused before they are read
UPLOAD_CAP = 4 * UPLOAD_BYTES  # past this the server stops reading (HTTP 413) even without a Content-Length
PREVIEW_CHARS = 200  # of a card's first message
CHANNEL_SORTS = ("title", "platform", "character", "turns", "last_activity", "tokens")
CHARTS = (("tps", "Tokens/s", ""), ("active", "Active channels", ""), ("queue", "Queue depth", ""),
          ("batch", "Batch size", ""), ("gpu_mb", "GPU memory used", "MiB"))
IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
               (b"RIFF", "image/webp"))
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                 b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # a sign-in link never travels in a Referer
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class Dashboard:
    """`await start()` listens and sets `commands.signins`, so that /dashboard hands out links; `await stop()`."""

    def __init__(self, commands, *, host: str = "127.0.0.1", port: int = 0, url: str = "",
                 sample_every: float = SAMPLE_SECONDS):
        self.commands = commands
        self.host = host
        self.port = port
        self.public_url = url
        self.history = History(commands, every=sample_every)
        self.sessions = Sessions()
        self.pages = Pages(self)
        self.asgi = self.pages.app()
        self.links: SignInLinks | None = None
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise DashboardError(f"dashboard: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.asgi, log_level="warning", access_log=False, lifespan="off",
                                server_header=False, date_header=False)
        self._server = _Server(config)
        self._tasks = [asyncio.create_task(self._server.serve(sockets=[sock]), name="dashboard"),
                       asyncio.create_task(self.history.run(), name="dashboard-history")]
        while not self._server.started and not self._tasks[0].done():
            await asyncio.sleep(0.01)
        if self._tasks[0].done():
            self._tasks[0].result()
        self.links = self.commands.signins = SignInLinks(self.url)
        log.info("dashboard: listening on %s (sign in with /dashboard)", self.url)

    async def stop(self) -> None:
        self.commands.signins = None
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks[1:]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []


class DashboardError(Exception):
    """One line for the operator (the port is taken, the address is not this machine's)."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield  # the bot owns SIGINT/SIGTERM (bot.app.serve) and stops the page itself


class Pages:
    def __init__(self, dashboard: Dashboard):
        self.dashboard = dashboard
        self.commands = dashboard.commands
        self.sessions = dashboard.sessions
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters["when"] = _when
        self.templates.env.filters["channel_url"] = lambda channel: "channel?c=" + quote(channel, safe="")

    def app(self) -> Starlette:
        routes = [
            Route("/signin/{token}", self.signin_form, methods=["GET"]),
            Route("/signin/{token}", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]),
            Route("/", self.now),
            Route("/api/now", self.api_now),
            Route("/channels", self.channels),
            Route("/channel", self.channel),
            Route("/channel/params", self.set_params, methods=["POST"]),
            Route("/channel/params/reset", self.reset_params, methods=["POST"]),
            Route("/characters", self.characters),
            Route("/characters/import", self.import_card, methods=["POST"], max_body_size=UPLOAD_CAP),
            Route("/characters/delete", self.delete_card, methods=["POST"]),
            Route("/avatar/{content_hash}", self.avatar),
            Route("/audit", self.audit),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        return _with_headers(Starlette(routes=routes, max_body_size=FORM_BYTES))

    # ----- helpers ----------------------------------------------------------------------------------------
    def render(self, request: Request, name: str, session: Session | None, status: int = 200, **context) -> Response:
        context.update(session=session, notices=session.take_notices() if session else [],
                       csrf=session.csrf if session else "")
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def signed_out(self, request: Request) -> Response:
        return self.render(request, "message.html", None, 401, title="Not signed in",
                           text="Ask the bot for a sign-in link with /dashboard (admins only; the link comes to "
                                "you privately).")

    def refused(self, request: Request, session: Session | None, text: str, status: int = 403) -> Response:
        return self.render(request, "message.html", session, status, title="Refused", text=text)

    async def posted(self, request: Request) -> tuple[Session | None, dict | None, Response | None]:
        """A POST's session and form fields once its CSRF token checks out; else the refusal to send."""
        session = self.session(request)
        if session is None:
            return None, None, self.signed_out(request)
        async with request.form(max_files=0, max_fields=64) as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not session.csrf_ok(fields.get("csrf")):
            return session, None, self.refused(request, session, CSRF_REFUSAL)
        return session, fields, None

    # ----- signing in -------------------------------------------------------------------------------------
    async def signin_form(self, request: Request) -> Response:
        """The link opens a page with a button; only the button (a POST) uses the link up, so a chat app that
        fetches the link for a preview does not."""
        try:
            ctx = self.dashboard.links.check(request.path_params["token"])
        except SignInRefused as refusal:
            return self.refused(request, None, t(refusal.reason))
        nonce = secrets.token_urlsafe(16)
        response = self.render(request, "signin.html", None, who=ctx.user_name, where=str(ctx.key), nonce=nonce)
        _cookie(response, self.dashboard, SIGNIN_COOKIE, nonce, LINK_SECONDS)
        return response

    async def signin(self, request: Request) -> Response:
        async with request.form(max_files=0, max_fields=8) as form:
            nonce = form.get("nonce")
        cookie = request.cookies.get(SIGNIN_COOKIE)
        if not isinstance(nonce, str) or not cookie or not secrets.compare_digest(nonce, cookie):
            return self.refused(request, None, CSRF_REFUSAL)
        try:
            ctx = self.dashboard.links.redeem(request.path_params["token"])
        except SignInRefused as refusal:
            return self.refused(request, None, t(refusal.reason))
        session = self.sessions.sign_in(self.session(request), ctx)
        await admin.signed_in(self.commands, ctx)
        response = RedirectResponse("/", status_code=303)
        _cookie(response, self.dashboard, SESSION_COOKIE, session.id, SESSION_SECONDS)
        response.delete_cookie(SIGNIN_COOKIE, path="/signin")
        return response

    async def signout(self, request: Request) -> Response:
        session, _, refusal = await self.posted(request)
        if refusal is not None:
            return refusal
        self.sessions.drop(session.id)
        response = self.render(request, "message.html", None, title="Signed out", text="You are signed out.")
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ----- Now --------------------------------------------------------------------------------------------
    async def now(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.signed_out(request)
        numbers = self.dashboard.history.latest()
        return self.render(request, "now.html", session, page="now", numbers=numbers, charts=CHARTS,
                           every=self.dashboard.history.every)

    async def api_now(self, request: Request) -> Response:
        if self.session(request) is None:
            return JSONResponse({"error": "not signed in"}, status_code=401)
        return JSONResponse(self.dashboard.history.columns())

    # ----- Channels ---------------------------------------------------------------------------------------
    async def channels(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.signed_out(request)
        rows = await admin.channels(self.commands, admin.visible_channels(session.grants))
        sort = request.query_params.get("sort", "last_activity")
        sort = sort if sort in CHANNEL_SORTS else "last_activity"
        descending = request.query_params.get("dir", "desc" if sort == "last_activity" else "asc") == "desc"
        rows.sort(key=lambda r: _sort_key(getattr(r, sort)), reverse=descending)
        return self.render(request, "channels.html", session, page="channels", rows=rows, sort=sort,
                           descending=descending, sorts=CHANNEL_SORTS)

    async def channel(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.signed_out(request)
        name = request.query_params.get("c", "")
        ctx = _acting(session, name)
        detail = await admin.channel(self.commands, name, ctx.lang) if ctx is not None else None
        if detail is None:
            return self.refused(request, session, "No such channel among the chats you signed in from.", 404)
        return self.render(request, "channel.html", session, page="channels", detail=detail)

    async def set_params(self, request: Request) -> Response:
        return await self._channel_change(request, lambda ctx, fields: admin.set_params(self.commands, ctx, fields))

    async def reset_params(self, request: Request) -> Response:
        return await self._channel_change(request, lambda ctx, fields: admin.reset_params(self.commands, ctx))

    async def _channel_change(self, request: Request, change) -> Response:
        session, fields, refusal = await self.posted(request)
        if refusal is not None:
            return refusal
        name = fields.get("channel", "")
        ctx = _acting(session, name)
        if ctx is None:
            return self.refused(request, session, "No such channel among the chats you signed in from.", 404)
        outcome = await change(ctx, fields)
        session.notice(outcome.ok, outcome.message)
        return RedirectResponse("/" + self.templates.env.filters["channel_url"](name), status_code=303)

    # ----- Characters -------------------------------------------------------------------------------------
    async def characters(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.signed_out(request)
        return self.render(request, "characters.html", session, page="characters", cards=admin.cards(self.commands),
                           preview=PREVIEW_CHARS, limit_mib=admin.MAX_CARD_BYTES >> 20)

    async def import_card(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.signed_out(request)
        ctx = admin.library_context(session.grants)
        size = int(request.headers.get("content-length") or 0)
        if size > UPLOAD_BYTES:  # refused unread, in the words of /char import
            session.notice(False, t("card_error", ctx.lang, problem=admin.too_big(size)))
            return RedirectResponse("/characters", status_code=303)
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("card")
            if not session.csrf_ok(form.get("csrf") if isinstance(form.get("csrf"), str) else None):
                return self.refused(request, session, CSRF_REFUSAL)
            if upload is None or isinstance(upload, str) or not upload.filename:
                session.notice(False, t("import_needs_file", ctx.lang))
                return RedirectResponse("/characters", status_code=303)
            filename, data = upload.filename, await upload.read(admin.MAX_CARD_BYTES + 1)
        outcome = await admin.import_card(self.commands, ctx, filename, data)
        session.notice(outcome.ok, outcome.message)
        return RedirectResponse("/characters", status_code=303)

    async def delete_card(self, request: Request) -> Response:
        session, fields, refusal = await self.posted(request)
        if refusal is not None:
            return refusal
        outcome = await admin.delete_card(self.commands, admin.library_context(session.grants),
                                          fields.get("card", ""))
        session.notice(outcome.ok, outcome.message)
        return RedirectResponse("/characters", status_code=303)

    async def avatar(self, request: Request) -> Response:
        if self.session(request) is None:
            return Response(status_code=401)
        data = admin.avatar(self.commands, request.path_params["content_hash"])
        kind = next((kind for magic, kind in IMAGE_TYPES if data and data.startswith(magic)), None)
        if kind is None:  # only images are served, whatever a card carries
            return Response(status_code=404)
        return Response(data, media_type=kind)

    # ----- Audit log --------------------------------------------------------------------------------------
    async def audit(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return self.signed_out(request)
        rows = await admin.audit_log(self.commands, admin.visible_channels(session.grants))
        return self.render(request, "audit.html", session, page="audit", rows=rows)


CSRF_REFUSAL = "This form came without its security token (or with a wrong one); nothing was changed. " \
               "Reload the page and try again."


def _acting(session: Session, channel: str):
    try:
        return admin.acting_context(session.grants, channel)
    except ValueError:
        return None


def _cookie(response: Response, dashboard: Dashboard, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/signin" if name == SIGNIN_COOKIE else "/",
                        httponly=True, samesite="strict", secure=dashboard.url.startswith("https://"))


def _with_headers(app):
    """Every response carries the security headers (a strict CSP: no inline script or style at all)."""
    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + SECURITY_HEADERS)
            await send(message)

        await app(scope, receive, send_with_headers)
    return wrapped


def _sort_key(value):
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return value


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC")
