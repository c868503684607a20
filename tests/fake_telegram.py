"""A fake Telegram Bot API server for the tests (aiohttp on 127.0.0.1, random free port).

The real python-telegram-bot ``Application`` talks HTTP to it::

    async with FakeTelegram(bot_token="123:ABC", bot_username="rwkvbot") as server:
        app = (ApplicationBuilder().token(server.token)
               .base_url(f"{server.url}/bot").base_file_url(f"{server.url}/file/bot")
               .rate_limiter(AIORateLimiter()).build())
        chat = server.private_chat(42, first_name="Ann")
        server.send_text(chat, 42, "hello")
        await server.wait_for(lambda: server.messages(42))

PTB appends the token to ``base_url`` (``{url}/bot{token}/{method}``) and joins the
``file_path`` returned by getFile to ``base_file_url`` + token
(``{url}/file/bot{token}/{file_path}``).

What it implements (GET and POST; JSON, urlencoded and multipart bodies, method names
case-insensitive like Telegram's): getMe, logOut, close, deleteWebhook, setWebhook,
getWebhookInfo, getUpdates (real long polling with offset confirmation, limit,
timeout and allowed_updates; a second concurrent poll ends the first with 409),
sendMessage, sendMessageDraft, editMessageText, deleteMessage, sendChatAction,
setMyCommands, getMyCommands, deleteMyCommands, getChatMember, getChat, sendDocument,
getFile, the file download route, answerCallbackQuery. Anything else:
404 ``{"ok":false,"error_code":404,"description":"Not Found"}``.

Telegram's limits and errors, with Telegram's wording: 4096 characters after entity
parsing (counted in code points, like TDLib's ``utf8_length``), leading/trailing
whitespace trimmed, empty text, "message is not modified", chat not found, bot kicked
or blocked, message to edit/delete/reply not found, HTML / MarkdownV2 / Markdown parsing
with "can't parse entities" errors, 1024-character captions, BOT_COMMAND_INVALID.

Wording taken from real replies: message is too long / message text is empty / message is
not modified (full sentence) / chat not found / bot was kicked from the group chat (or
supergroup chat) / bot was blocked by the user / message to edit not found / message to
delete not found / message to be replied not found / invalid file_id / BOT_COMMAND_INVALID /
command description must be non-empty / wrong parameter action in request / "can't parse
entities: Unsupported start tag "p" at byte offset N" / "Character '.' is reserved and must
be escaped with the preceding '\\'" / Too Many Requests: retry after N / the getUpdates
409 Conflict texts. Approximate (not checked against Telegram): the sendMessageDraft
errors, "message thread not found", "command description is too long", and the exact
byte offsets of parse errors in unusual markup.

Fault injection: :meth:`FakeTelegram.fail_next` (429 with retry_after, 5xx, any status,
delays, dropped connections, optionally after the call took effect).

Webhooks: after ``setWebhook`` with a ``url`` (and ``secret_token``), the queued updates (the
ones getUpdates would return, from the same helpers) are POSTed as JSON to that URL with the
header ``X-Telegram-Bot-Api-Secret-Token``, one at a time in order; an update whose POST does
not get a 2xx reply is sent again after a growing pause (as Telegram does), and later ones wait
for it. Every attempt is in :attr:`FakeTelegram.webhook_posts`. ``deleteWebhook`` switches
back to getUpdates (which answers 409 while a webhook is set, as Telegram's does).
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import mimetypes
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from aiohttp import web

__all__ = [
    "ApiError",
    "BotMessage",
    "Call",
    "ChatAction",
    "Draft",
    "FakeChat",
    "FakeTelegram",
    "FakeUser",
    "StoredFile",
    "TextVersion",
    "WebhookPost",
    "parse_formatted",
    "utf16_len",
]


MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_DOWNLOAD = 20 * 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024

CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})
# Update types Telegram leaves out when allowed_updates is not specified (or is []).
NOT_DEFAULT_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
MEMBER_STATUSES = frozenset({"creator", "administrator", "member", "restricted", "left", "kicked"})

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Pauses between attempts at an update the webhook did not take (s): short, for tests; Telegram's are longer.
WEBHOOK_RETRY_FIRST, WEBHOOK_RETRY_MAX = 0.05, 1.0
WEBHOOK_TIMEOUT = 10.0  # one POST to the webhook

DESC_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
DESC_CONFLICT_POLL = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)
NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: the unit of Telegram entity offsets and lengths."""
    return len(text.encode("utf-16-le")) // 2


class ApiError(Exception):
    """A Bot API error reply: ``{"ok": false, "error_code": code, "description": ...}``."""

    def __init__(self, code: int, description: str, parameters: dict | None = None):
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.parameters = parameters

    def payload(self) -> dict:
        out: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            out["parameters"] = self.parameters
        return out


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


# --------------------------------------------------------------------------------------
# Data the tests observe
# --------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = "en"
    is_bot: bool = False

    def to_json(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            out["last_name"] = self.last_name
        if self.username:
            out["username"] = self.username
        if self.language_code and not self.is_bot:
            out["language_code"] = self.language_code
        return out


@dataclass
class FakeChat:
    id: int
    type: str  # "private" | "group" | "supergroup"
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False
    members: dict[int, str] = field(default_factory=dict)  # user_id -> status
    bot_kicked: bool = False
    topics: dict[int, dict] = field(default_factory=dict)  # thread id -> forum_topic_created msg

    def to_json(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        for key in ("title", "username", "first_name", "last_name"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.is_forum:
            out["is_forum"] = True
        return out


@dataclass
class TextVersion:
    """One version of a bot message: as first sent, then once per successful edit."""

    text: str  # delivered plain text (after parse_mode parsing and trimming)
    entities: list[dict]
    t: float  # time.monotonic() when the server accepted it
    raw: str  # the text as the bot sent it
    parse_mode: str | None
    reply_markup: dict | None = None


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes
    file_name: str | None
    mime_type: str | None

    @property
    def size(self) -> int:
        return len(self.data)

    def document_json(self) -> dict:
        out: dict[str, Any] = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": self.size,
        }
        if self.file_name:
            out["file_name"] = self.file_name
        if self.mime_type:
            out["mime_type"] = self.mime_type
        return out


@dataclass
class BotMessage:
    """A message the bot sent. ``text`` is the current text, ``history`` every version."""

    chat_id: int
    message_id: int
    date: int
    history: list[TextVersion]
    reply_to_message_id: int | None = None
    message_thread_id: int | None = None
    document: StoredFile | None = None
    deleted: bool = False
    deleted_t: float | None = None

    @property
    def text(self) -> str:
        """Current text (the caption for a document)."""
        return self.history[-1].text

    @property
    def entities(self) -> list[dict]:
        return self.history[-1].entities

    @property
    def caption(self) -> str | None:
        return self.history[-1].text if self.document is not None else None

    @property
    def edits(self) -> list[TextVersion]:
        return self.history[1:]

    @property
    def sent_t(self) -> float:
        return self.history[0].t

    @property
    def is_document(self) -> bool:
        return self.document is not None

    @property
    def data(self) -> bytes | None:
        return self.document.data if self.document else None

    @property
    def file_name(self) -> str | None:
        return self.document.file_name if self.document else None


@dataclass
class ChatAction:
    action: str
    t: float
    message_thread_id: int | None = None


@dataclass
class Draft:
    draft_id: int
    text: str
    t: float
    message_thread_id: int | None = None


@dataclass
class Call:
    """One HTTP request to the fake (Bot API methods and file downloads)."""

    method: str  # canonical name ("sendMessage"), the name as requested if unknown, "download"
    params: dict  # parameters as received (uploaded files as {"filename", "size"})
    t: float  # time.monotonic() when the request arrived
    http_method: str
    status: int = 0  # HTTP status of the reply; 0 when the connection was dropped
    response: Any = None  # the JSON reply (None for downloads and drops)
    duration: float = 0.0
    fault: str | None = None  # "status" / "drop" / "delay" when an injected fault applied
    content_type: str = ""  # of the request body ("" when it had none)

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class WebhookPost:
    """One attempt to deliver an update to the webhook."""

    update_id: int
    url: str
    status: int  # HTTP status of the webhook's reply; 0 when it could not be reached
    t: float
    error: str = ""  # why it failed, as getWebhookInfo's last_error_message says

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class _Fault:
    status: int | None
    retry_after: int | None
    description: str | None
    drop: bool
    delay: float
    process: bool
    count: int


@dataclass
class _UploadedPart:
    filename: str
    data: bytes
    content_type: str | None


# --------------------------------------------------------------------------------------
# Formatting: HTML, MarkdownV2, Markdown -> (plain text, entities)
# --------------------------------------------------------------------------------------


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.u16 = 0
        self.entities: list[dict] = []

    def emit(self, text: str) -> None:
        if text:
            self.parts.append(text)
            self.u16 += utf16_len(text)

    def add(self, etype: str, start: int, **extra: Any) -> None:
        length = self.u16 - start
        if length > 0:
            ent = {"type": etype, "offset": start, "length": length}
            ent.update({k: v for k, v in extra.items() if v is not None})
            self.entities.append(ent)

    def result(self) -> tuple[str, list[dict]]:
        ents = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), ents


def _byte_offset(src: str, index: int) -> int:
    return len(src[:index].encode("utf-8"))


_HTML_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler", "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre",
    "blockquote": "blockquote", "tg-emoji": "custom_emoji",
}
_HTML_ATTR = re.compile(r"""([A-Za-z_:-][A-Za-z0-9_:.-]*)\s*(?:=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_HTML_CHARREF = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")


def _parse_html(src: str) -> tuple[str, list[dict]]:
    b = _Builder()
    stack: list[dict] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "&":
            m = _HTML_CHARREF.match(src, i)
            if m:
                b.emit(html.unescape(m.group(0)))
                i = m.end()
            else:
                b.emit("&")
                i += 1
            continue
        if c != "<":
            j = i
            while j < n and src[j] not in "<&":
                j += 1
            b.emit(src[i:j])
            i = j
            continue
        off = _byte_offset(src, i)
        if src.startswith("</", i):
            j = src.find(">", i)
            if j < 0:
                raise _bad(f"can't parse entities: Unclosed end tag at byte offset {off}")
            name = src[i + 2:j].strip().lower()
            if not stack:
                raise _bad(f"can't parse entities: Unexpected end tag at byte offset {off}")
            top = stack.pop()
            if name != top["tag"]:
                raise _bad(
                    f'can\'t parse entities: Unmatched end tag at byte offset {off}, expected '
                    f'"</{top["tag"]}>", found "</{name}>"'
                )
            if top["type"] == "code" and stack and stack[-1]["type"] == "pre" and top.get("language"):
                stack[-1]["language"] = top["language"]
            elif top["type"] is not None:
                b.add(top["type"], top["start"], url=top.get("url"), language=top.get("language"),
                      user=top.get("user"), custom_emoji_id=top.get("custom_emoji_id"))
            i = j + 1
            continue
        j = i + 1
        while j < n and src[j] not in " \t\r\n>":
            j += 1
        name = src[i + 1:j].lower()
        if name not in _HTML_TAGS:
            raise _bad(f'can\'t parse entities: Unsupported start tag "{name}" at byte offset {off}')
        # find the closing '>' outside quotes
        k, quote = j, None
        while k < n:
            ch = src[k]
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == ">":
                break
            k += 1
        if k >= n:
            raise _bad(f"can't parse entities: Unclosed start tag at byte offset {off}")
        attr_src = src[j:k].strip()
        if attr_src.endswith("/"):
            raise _bad(f'can\'t parse entities: Unsupported start tag "{name}/" at byte offset {off}')
        attrs = {}
        for m in _HTML_ATTR.finditer(attr_src):
            value = next((g for g in m.groups()[1:] if g is not None), "")
            attrs[m.group(1).lower()] = html.unescape(value)
        entry: dict[str, Any] = {"tag": name, "type": _HTML_TAGS[name], "start": b.u16}
        if name == "span":
            if attrs.get("class") != "tg-spoiler":
                raise _bad(
                    f'can\'t parse entities: Tag "span" must have class "tg-spoiler" at byte offset {off}'
                )
        elif name == "a":
            href = attrs.get("href")
            if not href:
                entry["type"] = None
            elif href.startswith("tg://user?id="):
                entry["type"] = "text_mention"
                try:
                    entry["user"] = {"id": int(href.split("=", 1)[1]), "is_bot": False, "first_name": ""}
                except ValueError:
                    entry["type"] = None
            else:
                entry["url"] = href
        elif name == "code":
            cls = attrs.get("class", "")
            if cls.startswith("language-"):
                entry["language"] = cls[len("language-"):]
        elif name == "tg-emoji":
            entry["custom_emoji_id"] = attrs.get("emoji-id")
        stack.append(entry)
        i = k + 1
    if stack:
        raise _bad(
            f'can\'t parse entities: Can\'t find end tag corresponding to start tag "{stack[0]["tag"]}"'
        )
    return b.result()


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_NAMES = {
    "bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
    "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "text_link": "TextUrl",
}


def _reserved(ch: str) -> ApiError:
    return _bad(f"can't parse entities: Character '{ch}' is reserved and must be escaped with the "
                "preceding '\\'")


def _parse_markdown_v2(src: str) -> tuple[str, list[dict]]:
    b = _Builder()
    stack: list[dict] = []
    i, n = 0, len(src)
    quote_start: int | None = None
    at_line_start = True

    def open_types() -> set[str]:
        return {e["type"] for e in stack}

    while i < n:
        c = src[i]
        top = stack[-1] if stack else None
        line_start, at_line_start = at_line_start, False
        if c == "\\":
            if i + 1 < n and 0 < ord(src[i + 1]) <= 126:
                b.emit(src[i + 1])
                i += 2
                continue
            raise _reserved("\\")
        if top and top["type"] in ("code", "pre"):
            if top["type"] == "pre" and src.startswith("```", i):
                stack.pop()
                b.add("pre", top["start"], language=top.get("language"))
                i += 3
            elif top["type"] == "code" and c == "`":
                stack.pop()
                b.add("code", top["start"])
                i += 1
            else:
                b.emit(c)
                at_line_start = c == "\n"
                i += 1
            continue
        if line_start and c == ">":
            if quote_start is None:
                quote_start = b.u16
            i += 1
            continue
        if c == "\n":
            if quote_start is not None and not src.startswith(">", i + 1):
                b.add("blockquote", quote_start)
                quote_start = None
            b.emit(c)
            at_line_start = True
            i += 1
            continue
        off = _byte_offset(src, i)
        if src.startswith("```", i):
            entry = {"type": "pre", "start": b.u16, "off": off}
            i += 3
            nl = src.find("\n", i)
            if nl >= 0 and re.fullmatch(r"[A-Za-z0-9_+#.-]+", src[i:nl] or "-"):
                if src[i:nl]:
                    entry["language"] = src[i:nl]
                i = nl + 1
            stack.append(entry)
            continue
        marker = None
        if c == "`":
            marker, etype, width = "`", "code", 1
        elif src.startswith("||", i):
            marker, etype, width = "||", "spoiler", 2
        elif src.startswith("__", i) and (top is None or top["type"] != "italic" or "underline" in open_types()):
            marker, etype, width = "__", "underline", 2
        elif c == "_":
            marker, etype, width = "_", "italic", 1
        elif c == "*":
            marker, etype, width = "*", "bold", 1
        elif c == "~":
            marker, etype, width = "~", "strikethrough", 1
        if marker is not None:
            if etype in open_types():
                if top is None or top["type"] != etype:
                    raise _bad(f"can't parse entities: Can't find end of {_MDV2_NAMES[top['type']]} "
                               f"entity at byte offset {top['off']}")
                stack.pop()
                b.add(etype, top["start"])
            else:
                stack.append({"type": etype, "start": b.u16, "off": off})
            i += width
            continue
        if c == "[":
            stack.append({"type": "text_link", "start": b.u16, "off": off})
            i += 1
            continue
        if c == "]" and "text_link" in open_types():
            if top is None or top["type"] != "text_link":
                raise _bad(f"can't parse entities: Can't find end of {_MDV2_NAMES[top['type']]} "
                           f"entity at byte offset {top['off']}")
            stack.pop()
            i += 1
            if i < n and src[i] == "(":
                url_chars = []
                i += 1
                while i < n and src[i] != ")":
                    if src[i] == "\\" and i + 1 < n:
                        i += 1
                    url_chars.append(src[i])
                    i += 1
                if i >= n:
                    raise _bad(f"can't parse entities: Can't find end of a URL at byte offset {off}")
                i += 1
                b.add("text_link", top["start"], url="".join(url_chars))
            continue
        if c in _MDV2_RESERVED:
            raise _reserved(c)
        b.emit(c)
        i += 1
    if quote_start is not None:
        b.add("blockquote", quote_start)
    if stack:
        e = stack[0]
        raise _bad(f"can't parse entities: Can't find end of {_MDV2_NAMES[e['type']]} entity at "
                   f"byte offset {e['off']}")
    return b.result()


def _parse_markdown(src: str) -> tuple[str, list[dict]]:
    """Legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    b = _Builder()
    i, n = 0, len(src)
    ends = {"*": ("*", "bold"), "_": ("_", "italic"), "`": ("`", "code")}
    while i < n:
        c = src[i]
        if c == "\\" and i + 1 < n and src[i + 1] in "_*`[":
            b.emit(src[i + 1])
            i += 2
            continue
        off = _byte_offset(src, i)
        err = _bad(f"can't parse entities: Can't find end of the entity starting at byte offset {off}")
        if src.startswith("```", i):
            j = src.find("```", i + 3)
            if j < 0:
                raise err
            body, language = src[i + 3:j], None
            nl = body.find("\n")
            if nl > 0 and re.fullmatch(r"[A-Za-z0-9_+#.-]+", body[:nl]):
                language, body = body[:nl], body[nl + 1:]
            start = b.u16
            b.emit(body)
            b.add("pre", start, language=language)
            i = j + 3
            continue
        if c in ends:
            end, etype = ends[c]
            j = src.find(end, i + 1)
            if j < 0:
                raise err
            start = b.u16
            b.emit(src[i + 1:j])
            b.add(etype, start)
            i = j + 1
            continue
        if c == "[":
            j = src.find("]", i + 1)
            if j < 0:
                raise err
            if j + 1 < n and src[j + 1] == "(":
                k = src.find(")", j + 2)
                if k < 0:
                    raise err
                start = b.u16
                b.emit(src[i + 1:j])
                b.add("text_link", start, url=src[j + 2:k])
                i = k + 1
                continue
            b.emit(src[i:j + 1])
            i = j + 1
            continue
        b.emit(c)
        i += 1
    return b.result()


def _trim(text: str, entities: list[dict]) -> tuple[str, list[dict]]:
    """Telegram trims leading and trailing whitespace; entities are clipped to what is left."""
    stripped = text.lstrip(" \t\r\n")
    lead = utf16_len(text) - utf16_len(stripped)
    stripped = stripped.rstrip(" \t\r\n")
    total = utf16_len(stripped)
    out = []
    for ent in entities:
        start = max(0, ent["offset"] - lead)
        end = min(total, ent["offset"] + ent["length"] - lead)
        if end > start:
            out.append({**ent, "offset": start, "length": end - start})
    return stripped, out


def parse_formatted(text: str, parse_mode: str | None, entities: list | None = None) -> tuple[str, list[dict]]:
    """Plain text and entities Telegram would deliver for ``text`` sent with ``parse_mode``.

    Raises :class:`ApiError` (400 "Bad Request: can't parse entities: ...") on invalid markup.
    With no parse_mode the text arrives exactly as sent (apart from trimming).
    """
    mode = (parse_mode or "").strip()
    low = mode.lower()
    if not mode:
        plain, ents = text, [dict(e) for e in (entities or [])]
    elif low == "html":
        plain, ents = _parse_html(text)
    elif low == "markdownv2":
        plain, ents = _parse_markdown_v2(text)
    elif low == "markdown":
        plain, ents = _parse_markdown(text)
    else:
        raise _bad("unsupported parse_mode")
    return _trim(plain, ents)


_MENTION = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{2,31}\b")
_URL = re.compile(r"(?<![\w/])https?://[^\s<>\"']+")


def auto_entities(text: str) -> list[dict]:
    """Entities Telegram's clients/server compute for a user's plain text."""
    ents: list[dict] = []
    if text.startswith("/"):
        m = re.match(r"/[A-Za-z0-9_]{1,64}(@[A-Za-z][A-Za-z0-9_]{2,31})?", text)
        if m and len(m.group(0)) > 1:
            ents.append({"type": "bot_command", "offset": 0, "length": utf16_len(m.group(0))})
    for regex, etype in ((_MENTION, "mention"), (_URL, "url")):
        for m in regex.finditer(text):
            if ents and ents[0]["type"] == "bot_command" and m.start() < len(text.split(None, 1)[0]):
                continue
            ents.append({"type": etype, "offset": utf16_len(text[:m.start()]),
                         "length": utf16_len(m.group(0))})
    ents.sort(key=lambda e: e["offset"])
    return ents


# --------------------------------------------------------------------------------------
# Parameter helpers: PTB sends urlencoded/multipart form fields (non-strings JSON-encoded)
# --------------------------------------------------------------------------------------


def _p_int(params: dict, name: str, *, required: bool = False, empty_error: str | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _bad(empty_error or f"parameter \"{name}\" is required")
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise _bad(f"invalid {name} specified") from None


def _p_json(params: dict, name: str) -> Any:
    value = params.get(name)
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise _bad(f"can't parse {name} JSON object") from None
    return value


def _check_markup(markup: Any) -> Any:
    """An inline keyboard as Telegram checks it: each button's callback data 1-64 bytes."""
    for row in (markup or {}).get("inline_keyboard", []) if isinstance(markup, dict) else []:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode()) <= 64:
                raise _bad("BUTTON_DATA_INVALID")
    return markup


def _p_bool(params: dict, name: str) -> bool:
    value = params.get(name)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _p_str(params: dict, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class FakeTelegram:
    """Fake Bot API server. Use ``async with FakeTelegram(...) as server``."""

    def __init__(self, bot_token: str = "123:ABC", bot_username: str = "rwkvbot", *,
                 bot_first_name: str = "RWKV Bot", host: str = "127.0.0.1") -> None:
        if ":" not in bot_token or not bot_token.split(":", 1)[0].isdigit():
            raise ValueError("bot_token must look like '<digits>:<secret>'")
        self.token = bot_token
        self.bot_id = int(bot_token.split(":", 1)[0])
        self.bot_username = bot_username
        self.bot = FakeUser(self.bot_id, bot_first_name, username=bot_username, is_bot=True,
                            language_code=None)
        self.host = host
        self.url = ""
        self.port = 0

        self.users: dict[int, FakeUser] = {}
        self.chats: dict[int, FakeChat] = {}
        self.calls: list[Call] = []
        self.commands: dict[tuple[str, str], list[dict]] = {}
        self.webhook_url = ""
        self.webhook_secret = ""
        self.webhook_posts: list[WebhookPost] = []
        self._webhook_task: asyncio.Task | None = None
        self.files: dict[str, StoredFile] = {}

        self._updates: list[dict] = []  # unconfirmed, ascending update_id
        self._next_update_id = 100_000
        self._allowed_updates: set[str] | None = None
        self._poll_generation = 0
        self._update_event = asyncio.Event()
        self._changed = asyncio.Event()
        self._closing = False

        self._msg_counter: dict[int, itertools.count] = {}
        self._msg_json: dict[tuple[int, int], dict] = {}  # every message (users' and bot's)
        self._bot_msgs: dict[int, list[BotMessage]] = {}
        self._bot_msg_index: dict[tuple[int, int], BotMessage] = {}
        self._actions: dict[int, list[ChatAction]] = {}
        self._drafts: dict[int, list[Draft]] = {}
        self._file_counter = itertools.count(1)
        self._faults: dict[str, list[_Fault]] = {}
        self._runner: web.AppRunner | None = None
        self._queries: dict[str, dict] = {}  # callback query id -> the query, until answered
        self.answers: list[dict] = []  # answerCallbackQuery calls: {"id", "text", "show_alert", "t"}
        self.in_flight: dict[str, int] = {}  # method -> requests being handled right now

        self._handlers: dict[str, Callable[[dict, dict], Any]] = {}
        for name in (
            "getMe", "logOut", "close", "deleteWebhook", "setWebhook", "getWebhookInfo",
            "getUpdates", "sendMessage", "sendMessageDraft", "editMessageText", "deleteMessage",
            "sendChatAction", "setMyCommands", "getMyCommands", "deleteMyCommands",
            "getChatMember", "getChat", "sendDocument", "getFile", "answerCallbackQuery",
        ):
            self._handlers[name.lower()] = (name, getattr(self, f"_m_{name}"))

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> "FakeTelegram":
        app = web.Application(client_max_size=MAX_UPLOAD + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        self._closing = True
        self._update_event.set()
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            await asyncio.gather(self._webhook_task, return_exceptions=True)
            self._webhook_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeTelegram":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """Value for ``ApplicationBuilder().base_url(...)`` (PTB appends the token)."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``ApplicationBuilder().base_file_url(...)`` (PTB appends the token)."""
        return f"{self.url}/file/bot"

    # ---------------------------------------------------------------- chats and users

    def user(self, user_id: int, first_name: str | None = None, *, username: str | None = None,
             last_name: str | None = None, language_code: str | None = None) -> FakeUser:
        """Get or create a user; given fields update an existing one."""
        u = self.users.get(user_id)
        if u is None:
            u = FakeUser(user_id, first_name or f"User{user_id}", username=username,
                         last_name=last_name, language_code=language_code or "en")
            self.users[user_id] = u
        else:
            if first_name is not None:
                u.first_name = first_name
            if username is not None:
                u.username = username
            if last_name is not None:
                u.last_name = last_name
            if language_code is not None:
                u.language_code = language_code
        return u

    def private_chat(self, user_id: int, first_name: str | None = None, *, language_code: str = "en",
                     username: str | None = None, last_name: str | None = None) -> FakeChat:
        """The private chat with a user (chat id == user id); creates the user too."""
        u = self.user(user_id, first_name, username=username, last_name=last_name,
                      language_code=language_code)
        chat = self.chats.get(user_id)
        if chat is None:
            chat = FakeChat(user_id, "private", first_name=u.first_name, last_name=u.last_name,
                            username=u.username)
            chat.members[user_id] = "member"
            self.chats[user_id] = chat
        return chat

    def group_chat(self, chat_id: int, title: str = "Group", *, is_forum: bool = False,
                   supergroup: bool | None = None, username: str | None = None) -> FakeChat:
        """A group. Forums (and ``supergroup=True``) are supergroups, others basic groups."""
        chat = self.chats.get(chat_id)
        if chat is None:
            if supergroup is None:
                supergroup = is_forum or chat_id <= -1_000_000_000_000
            chat = FakeChat(chat_id, "supergroup" if supergroup else "group", title=title,
                            is_forum=is_forum, username=username)
            self.chats[chat_id] = chat
        return chat

    def set_member_status(self, chat_id: int, user_id: int, status: str) -> None:
        """creator / administrator / member / restricted / left / kicked (user or the bot)."""
        if status not in MEMBER_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self._chat(chat_id).members[user_id] = status
        if user_id != self.bot_id:
            self.user(user_id)

    def kick_bot(self, chat_id: int, kicked: bool = True) -> None:
        """The bot is removed from a group (or blocked by the user of a private chat):
        every later call about that chat gets Telegram's 403."""
        self._chat(chat_id).bot_kicked = kicked

    def create_topic(self, chat_id: int, name: str = "Topic", *, creator: int | None = None) -> int:
        """Create a forum topic; returns its message_thread_id."""
        chat = self._chat(chat_id)
        if not chat.is_forum:
            raise ValueError("not a forum")
        from_user = self.user(creator).to_json() if creator is not None else self.bot.to_json()
        mid = self._next_mid(chat.id)
        msg = {
            "message_id": mid, "from": from_user, "chat": chat.to_json(), "date": int(time.time()),
            "message_thread_id": mid, "is_topic_message": True,
            "forum_topic_created": {"name": name, "icon_color": 7322096},
        }
        self._msg_json[(chat.id, mid)] = msg
        chat.topics[mid] = msg
        return mid

    # ---------------------------------------------------------------- injecting updates

    def send_text(self, chat: FakeChat | int, user: FakeUser | int | None, text: str, *,
                  reply_to: int | dict | BotMessage | None = None,
                  message_thread_id: int | None = None, entities: list[dict] | None = None) -> dict:
        """A user writes ``text``; returns the message (as in the update). Entities for
        /commands, @mentions and URLs are computed unless given."""
        msg = self._user_message(chat, user, reply_to, message_thread_id)
        msg["text"] = text
        ents = auto_entities(text) if entities is None else entities
        if ents:
            msg["entities"] = ents
        return self._publish(msg)

    def send_document(self, chat: FakeChat | int, user: FakeUser | int | None, filename: str,
                      data: bytes, caption: str | None = None, *, mime_type: str | None = None,
                      reply_to: int | dict | BotMessage | None = None,
                      message_thread_id: int | None = None) -> dict:
        """A user sends a file; the bot can fetch it through getFile and the download route."""
        msg = self._user_message(chat, user, reply_to, message_thread_id)
        stored = self._store_file(bytes(data), filename, mime_type)
        msg["document"] = stored.document_json()
        if caption:
            msg["caption"] = caption
            ents = auto_entities(caption)
            if ents:
                msg["caption_entities"] = ents
        return self._publish(msg)

    def edit_user_message(self, chat: FakeChat | int, message_id: int, text: str) -> dict:
        """A user edits an earlier text message: queues an ``edited_message`` update."""
        cid = self._cid(chat)
        old = self._msg_json.get((cid, message_id))
        if old is None or "text" not in old or old.get("from", {}).get("is_bot"):
            raise ValueError(f"no user text message {message_id} in chat {cid}")
        msg = {k: v for k, v in old.items() if k != "entities"}
        msg["text"] = text
        msg["edit_date"] = int(time.time())
        ents = auto_entities(text)
        if ents:
            msg["entities"] = ents
        self._msg_json[(cid, message_id)] = msg
        self.add_update({"edited_message": msg})
        return msg

    def press_button(self, chat: FakeChat | int, user: FakeUser | int, message: int | BotMessage,
                     data: str) -> str:
        """A user presses the inline button with callback data ``data`` under a bot message: queues a
        ``callback_query`` update; returns the query's id. As on Telegram, only a button the message shows now can
        be pressed (ValueError otherwise)."""
        cid = self._cid(chat)
        mid = message.message_id if isinstance(message, BotMessage) else message
        m = self._bot_msg_index.get((cid, mid))
        if m is None or m.deleted:
            raise ValueError(f"no bot message {mid} in chat {cid}")
        if data not in self.button_data(m):
            raise ValueError(f"message {mid} shows no button with data {data!r}")
        sender = user if isinstance(user, FakeUser) else self.users[user]
        query_id = str(next(self._file_counter) * 7919)
        query = {"id": query_id, "from": sender.to_json(), "message": self._msg_json[(cid, mid)],
                 "chat_instance": str(cid), "data": data}
        self._queries[query_id] = query
        self.add_update({"callback_query": query})
        return query_id

    @staticmethod
    def buttons(m: BotMessage) -> list[list[dict]]:
        """The inline keyboard a bot message shows now (rows of {"text", "callback_data"}); [] for none."""
        markup = m.history[-1].reply_markup or {}
        return markup.get("inline_keyboard", [])

    def button_data(self, m: BotMessage) -> list[str]:
        return [b.get("callback_data") for row in self.buttons(m) for b in row]

    def button_labels(self, m: BotMessage) -> list[str]:
        return [b.get("text") for row in self.buttons(m) for b in row]

    def answer_to(self, query_id: str) -> dict | None:
        """How the bot answered a callback query (None: not yet)."""
        return next((a for a in self.answers if a["id"] == query_id), None)

    def add_update(self, update: dict) -> dict:
        """Queue any raw update (``update_id`` is assigned)."""
        update = dict(update)
        update["update_id"] = self._next_update_id
        self._next_update_id += 1
        self._updates.append(update)
        self._update_event.set()
        self._notify()
        return update

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by the bot (via a getUpdates offset)."""
        return len(self._updates)

    # ---------------------------------------------------------------- observing

    def messages(self, chat: FakeChat | int, *, thread_id: int | None = None,
                 include_deleted: bool = False) -> list[BotMessage]:
        """The bot's text messages in a chat, oldest first, with their edit history."""
        out = [m for m in self._bot_msgs.get(self._cid(chat), []) if m.document is None]
        if not include_deleted:
            out = [m for m in out if not m.deleted]
        if thread_id is not None:
            out = [m for m in out if m.message_thread_id == thread_id]
        return out

    def documents(self, chat: FakeChat | int) -> list[BotMessage]:
        """The bot's document messages (``.data``, ``.file_name``, ``.caption``)."""
        return [m for m in self._bot_msgs.get(self._cid(chat), []) if m.document is not None]

    def chat_actions(self, chat: FakeChat | int) -> list[ChatAction]:
        return list(self._actions.get(self._cid(chat), []))

    def drafts(self, chat: FakeChat | int) -> list[Draft]:
        return list(self._drafts.get(self._cid(chat), []))

    def message_json(self, chat: FakeChat | int, message_id: int) -> dict | None:
        """Any stored message (a user's or the bot's) as Telegram would serialise it."""
        return self._msg_json.get((self._cid(chat), message_id))

    def commands_for(self, language_code: str = "", scope: dict | str | None = None) -> list[dict]:
        """Commands stored by setMyCommands for a scope (default scope) and language."""
        key = scope if isinstance(scope, str) else self._scope_key(scope)
        return list(self.commands.get((key, language_code), []))

    def calls_to(self, method: str) -> list[Call]:
        low = method.lower()
        return [c for c in self.calls if c.method.lower() == low]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0,
                       *, recheck: float = 0.05) -> Any:
        """Wait until ``predicate()`` is truthy; it is re-checked whenever a request reaches
        or leaves the fake and every injected update, and also every ``recheck`` seconds
        (for predicates on the test's own state, e.g. a list a handler appends to after
        the server answered). Returns its value; TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = ", ".join(f"{c.method}->{c.status}" for c in self.calls[-15:])
                raise TimeoutError(f"condition not met within {timeout}s; last calls: {recent}")
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), min(remaining, recheck))
            except asyncio.TimeoutError:
                pass

    # ---------------------------------------------------------------- fault injection

    def fail_next(self, method: str, status: int | None = 429, *, retry_after: int | None = None,
                  description: str | None = None, count: int = 1, drop: bool = False,
                  delay: float = 0.0, process: bool = False) -> None:
        """Make the next ``count`` calls of ``method`` fail (each injection used once).

        * ``status=429``: ``Too Many Requests: retry after N`` with ``parameters.retry_after``
          (``retry_after`` defaults to 1).
        * ``status=500/503/...``: JSON error; ``status=502``: nginx's HTML page, like Telegram.
        * any other status: JSON error with ``description`` (a per-status default otherwise).
        * ``drop=True``: close the connection without a reply.
        * ``status=None`` with ``delay``: reply normally after ``delay`` seconds.
        * ``delay``: wait that long before failing or replying (to provoke client timeouts).
        * ``process=True``: the call takes effect first (message stored) and only the reply
          fails - the "sent but the answer was lost" case.

        ``method`` is a Bot API method name (case-insensitive), ``"download"`` for the file
        route, or ``"*"`` for any method except getUpdates.
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        key = method.lower()
        self._faults.setdefault(key, []).append(
            _Fault(status, retry_after, description, drop, delay, process, count))

    def drop_next(self, method: str, count: int = 1, *, process: bool = False) -> None:
        """Close the connection on the next ``count`` calls of ``method`` without replying."""
        self.fail_next(method, None, drop=True, count=count, process=process)

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method.lower(), "*"):
            if key == "*" and method == "getUpdates":
                continue
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                fault.count -= 1
                if fault.count <= 0:
                    queue.pop(0)
                return fault
        return None

    # ---------------------------------------------------------------- HTTP plumbing

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _read_params(self, request: web.Request) -> tuple[dict, dict[str, _UploadedPart]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, _UploadedPart] = {}
        if not request.can_read_body:
            return params, files
        ctype = request.content_type
        if ctype == "application/json":
            raw = await request.read()
            if raw.strip():
                try:
                    data = json.loads(raw)
                except ValueError:
                    raise _bad("can't parse JSON encoded request parameters") from None
                if not isinstance(data, dict):
                    raise _bad("JSON object expected as request parameters")
                params.update(data)
        elif ctype.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part is None:
                    break
                if part.filename is not None:
                    data = bytes(await part.read(decode=False))
                    files[part.name or ""] = _UploadedPart(part.filename, data,
                                                           part.headers.get("Content-Type"))
                else:
                    params[part.name or ""] = await part.text()
        else:
            post = await request.post()
            for key, value in post.items():
                if isinstance(value, web.FileField):
                    files[key] = _UploadedPart(value.filename, value.file.read(), value.content_type)
                else:
                    params[key] = value
        return params, files

    @staticmethod
    def _json(status: int, payload: Any) -> web.Response:
        return web.Response(status=status, body=json.dumps(payload, ensure_ascii=False).encode(),
                            content_type="application/json")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        call = Call(method="?", params={}, t=time.monotonic(), http_method=request.method,
                    content_type=request.content_type if request.can_read_body else "")
        try:
            if path.startswith("/file/bot"):
                return await self._download(request, call, path[len("/file/bot"):])
            if not path.startswith("/bot"):
                return self._finish(call, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            rest = path[len("/bot"):]
            token, _, method = rest.partition("/")
            call.method = method
            if not re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token) or "/" in method or not method:
                return self._finish(call, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            if token != self.token:
                return self._finish(call, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            entry = self._handlers.get(method.lower())
            try:
                params, files = await self._read_params(request)
            except ApiError as err:
                return self._finish(call, err.code, err.payload())
            call.params = {**params, **{k: {"filename": f.filename, "size": len(f.data)}
                                        for k, f in files.items()}}
            if entry is None:
                return self._finish(call, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
            call.method, handler = entry
            self.in_flight[call.method] = self.in_flight.get(call.method, 0) + 1
            self._notify()
            try:
                fault = self._take_fault(call.method)
                if fault is not None:
                    return await self._apply_fault(request, call, fault, handler, params, files)
                return await self._run_handler(call, handler, params, files)
            finally:
                self.in_flight[call.method] -= 1
        finally:
            call.duration = time.monotonic() - call.t
            self._notify()

    async def _run_handler(self, call: Call, handler: Callable, params: dict, files: dict) -> web.Response:
        try:
            result = handler(params, files)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as err:
            return self._finish(call, err.code, err.payload())
        return self._finish(call, 200, {"ok": True, "result": result})

    def _finish(self, call: Call, status: int, payload: Any) -> web.Response:
        call.status = status
        call.response = payload
        self.calls.append(call)
        return self._json(status, payload)

    async def _apply_fault(self, request: web.Request, call: Call, fault: _Fault, handler: Callable,
                           params: dict, files: dict) -> web.StreamResponse:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.process or (fault.status is None and not fault.drop):
            call.fault = "delay" if fault.status is None and not fault.drop else None
            response = await self._run_handler(call, handler, params, files)
            if not fault.drop and fault.status is None:
                return response
            self.calls.pop()  # re-recorded below with the injected outcome
        if fault.drop:
            call.fault, call.status, call.response = "drop", 0, None
            self.calls.append(call)
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError()  # aiohttp drops the request silently
        call.fault = "status"
        status = fault.status or 500
        if status == 502 and fault.description is None:
            call.status, call.response = 502, NGINX_502.decode()
            self.calls.append(call)
            return web.Response(status=502, body=NGINX_502, content_type="text/html")
        if status == 429:
            err = ApiError(429, fault.description or f"Too Many Requests: retry after {fault.retry_after}",
                           {"retry_after": fault.retry_after})
        else:
            err = ApiError(status, fault.description or DEFAULT_DESCRIPTIONS.get(status, "Error"),
                           {"retry_after": fault.retry_after} if fault.retry_after else None)
        return self._finish(call, status, err.payload())

    async def _download(self, request: web.Request, call: Call, rest: str) -> web.StreamResponse:
        call.method = "download"
        token, _, file_path = rest.partition("/")
        call.params = {"file_path": file_path}
        not_found = {"ok": False, "error_code": 404, "description": "Not Found"}
        if token != self.token:
            return self._finish(call, 401 if re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token) else 404,
                                {"ok": False, "error_code": 401, "description": "Unauthorized"}
                                if re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token) else not_found)
        fault = self._take_fault("download")
        if fault is not None:
            return await self._apply_fault(request, call, fault, lambda p, f: None, {}, {})
        stored = next((f for f in self.files.values() if f.file_path == file_path), None)
        if stored is None:
            return self._finish(call, 404, not_found)
        call.status = 200
        self.calls.append(call)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # ---------------------------------------------------------------- internals

    @staticmethod
    def _cid(chat: FakeChat | int | dict) -> int:
        if isinstance(chat, FakeChat):
            return chat.id
        if isinstance(chat, dict):
            return int(chat["id"])
        return int(chat)

    def _chat(self, chat: FakeChat | int) -> FakeChat:
        cid = self._cid(chat)
        found = self.chats.get(cid)
        if found is None:
            raise KeyError(f"unknown chat {cid}: create it with private_chat()/group_chat()")
        return found

    def _next_mid(self, chat_id: int) -> int:
        counter = self._msg_counter.get(chat_id)
        if counter is None:
            counter = self._msg_counter[chat_id] = itertools.count(1)
        return next(counter)

    def _user_message(self, chat: FakeChat | int, user: FakeUser | int | None,
                      reply_to: int | dict | BotMessage | None, thread_id: int | None) -> dict:
        c = self._chat(chat)
        if user is None:
            if c.type != "private":
                raise ValueError("a group message needs a user")
            user = c.id
        u = user if isinstance(user, FakeUser) else self.user(int(user))
        self.users.setdefault(u.id, u)
        c.members.setdefault(u.id, "member")
        mid = self._next_mid(c.id)
        msg: dict[str, Any] = {"message_id": mid, "from": u.to_json(), "chat": c.to_json(),
                               "date": int(time.time())}
        if thread_id is not None:
            if c.is_forum:
                if thread_id not in c.topics and thread_id != 1:
                    raise ValueError(f"unknown topic {thread_id}: use create_topic()")
                msg["message_thread_id"] = thread_id
                msg["is_topic_message"] = True
                if reply_to is None and thread_id in c.topics:
                    msg["reply_to_message"] = c.topics[thread_id]
            else:
                msg["message_thread_id"] = thread_id
        if reply_to is not None:
            rid = reply_to.message_id if isinstance(reply_to, BotMessage) else (
                int(reply_to["message_id"]) if isinstance(reply_to, dict) else int(reply_to))
            target = self._msg_json.get((c.id, rid))
            if target is None:
                raise ValueError(f"no message {rid} in chat {c.id}")
            msg["reply_to_message"] = self._without_reply(target)
        return msg

    @staticmethod
    def _without_reply(msg: dict) -> dict:
        return {k: v for k, v in msg.items() if k != "reply_to_message"}

    def _publish(self, msg: dict) -> dict:
        self._msg_json[(msg["chat"]["id"], msg["message_id"])] = msg
        self.add_update({"message": msg})
        return msg

    def _store_file(self, data: bytes, filename: str | None, mime_type: str | None) -> StoredFile:
        n = next(self._file_counter)
        ext = ""
        if filename and "." in filename:
            ext = "." + filename.rsplit(".", 1)[1][:10]
        if mime_type is None and filename:
            mime_type = mimetypes.guess_type(filename)[0]
        stored = StoredFile(
            file_id=f"BQACAgIAAxkBAAI{n:08d}fake", file_unique_id=f"AgAD{n:06d}",
            file_path=f"documents/file_{n}{ext}", data=data, file_name=filename,
            mime_type=mime_type or "application/octet-stream",
        )
        self.files[stored.file_id] = stored
        return stored

    def _target_chat(self, params: dict) -> FakeChat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        chat = None
        if isinstance(raw, str) and raw.strip().startswith("@"):
            name = raw.strip()[1:].lower()
            chat = next((c for c in self.chats.values() if (c.username or "").lower() == name), None)
        else:
            try:
                chat = self.chats.get(int(raw))
            except (TypeError, ValueError):
                chat = None
        if chat is None:
            raise _bad("chat not found")
        if chat.bot_kicked:
            if chat.type == "private":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            raise ApiError(403, f"Forbidden: bot was kicked from the {chat.type} chat")
        return chat

    def _thread_id(self, chat: FakeChat, params: dict) -> int | None:
        thread_id = _p_int(params, "message_thread_id")
        if thread_id is not None and chat.is_forum and thread_id not in chat.topics and thread_id != 1:
            raise _bad("message thread not found")
        return thread_id

    def _reply_target(self, chat: FakeChat, params: dict) -> int | None:
        rp = _p_json(params, "reply_parameters")
        mid = None
        allow = _p_bool(params, "allow_sending_without_reply")
        if isinstance(rp, dict):
            mid = rp.get("message_id")
            allow = allow or bool(rp.get("allow_sending_without_reply"))
            if rp.get("chat_id") not in (None, chat.id, str(chat.id)):
                raise _bad("replies to other chats are not supported by the fake")
        elif rp is not None:
            raise _bad("can't parse reply parameters JSON object")
        if mid is None:
            mid = _p_int(params, "reply_to_message_id")
        if mid is None:
            return None
        mid = int(mid)
        if (chat.id, mid) not in self._msg_json or self._bot_msg_deleted(chat.id, mid):
            if allow:
                return None
            raise _bad("message to be replied not found")
        return mid

    def _bot_msg_deleted(self, chat_id: int, mid: int) -> bool:
        m = self._bot_msg_index.get((chat_id, mid))
        return bool(m and m.deleted)

    def _check_text(self, text: str, entities: list[dict], limit: int = MAX_TEXT,
                    what: str = "message") -> None:
        if not text:
            raise _bad("message text is empty")
        if len(text) > limit:
            raise _bad(f"{what} is too long")

    def _bot_message_json(self, m: BotMessage) -> dict:
        chat = self.chats[m.chat_id]
        v = m.history[-1]
        out: dict[str, Any] = {"message_id": m.message_id, "from": self.bot.to_json(),
                               "chat": chat.to_json(), "date": m.date}
        if m.message_thread_id is not None:
            out["message_thread_id"] = m.message_thread_id
            if chat.is_forum:
                out["is_topic_message"] = True
        if m.reply_to_message_id is not None:
            target = self._msg_json.get((m.chat_id, m.reply_to_message_id))
            if target is not None:
                out["reply_to_message"] = self._without_reply(target)
        elif chat.is_forum and m.message_thread_id in chat.topics:
            out["reply_to_message"] = chat.topics[m.message_thread_id]
        if m.document is not None:
            out["document"] = m.document.document_json()
            if v.text:
                out["caption"] = v.text
            if v.entities:
                out["caption_entities"] = v.entities
        else:
            out["text"] = v.text
            if v.entities:
                out["entities"] = v.entities
        if len(m.history) > 1:
            out["edit_date"] = int(time.time())
        if v.reply_markup:
            out["reply_markup"] = v.reply_markup
        return out

    def _save_bot_message(self, m: BotMessage) -> dict:
        self._bot_msgs.setdefault(m.chat_id, []).append(m)
        self._bot_msg_index[(m.chat_id, m.message_id)] = m
        out = self._bot_message_json(m)
        self._msg_json[(m.chat_id, m.message_id)] = out
        return out

    @staticmethod
    def _scope_key(scope: dict | None) -> str:
        if not scope:
            return "default"
        stype = scope.get("type", "default")
        if stype in ("chat", "chat_administrators"):
            return f"{stype}:{scope.get('chat_id')}"
        if stype == "chat_member":
            return f"chat_member:{scope.get('chat_id')}:{scope.get('user_id')}"
        return stype

    # ---------------------------------------------------------------- Bot API methods

    def _m_getMe(self, params: dict, files: dict) -> dict:
        out = self.bot.to_json()
        out.update({"can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False, "can_connect_to_business": False,
                    "has_main_web_app": False})
        return out

    def _m_logOut(self, params: dict, files: dict) -> bool:
        return True

    def _m_close(self, params: dict, files: dict) -> bool:
        return True

    def _m_answerCallbackQuery(self, params: dict, files: dict) -> bool:
        query_id = _p_str(params, "callback_query_id")
        if not query_id or query_id not in self._queries:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        del self._queries[query_id]  # a query is answered once
        text = _p_str(params, "text") or ""
        if len(text) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        self.answers.append({"id": query_id, "text": text, "show_alert": _p_bool(params, "show_alert"),
                             "t": time.monotonic()})
        return True

    def _m_deleteWebhook(self, params: dict, files: dict) -> bool:
        self.webhook_url = self.webhook_secret = ""
        if _p_bool(params, "drop_pending_updates"):
            self._updates.clear()
        self._update_event.set()  # the delivery task sees the webhook gone and ends
        return True

    def _m_setWebhook(self, params: dict, files: dict) -> bool:
        url = _p_str(params, "url") or ""
        secret = _p_str(params, "secret_token") or ""
        if secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise _bad("secret token contains unallowed characters")
        allowed = _p_json(params, "allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = set(allowed) if allowed else None
        if _p_bool(params, "drop_pending_updates"):
            self._updates.clear()
        self.webhook_url, self.webhook_secret = url, secret if url else ""
        self._update_event.set()
        if url and (self._webhook_task is None or self._webhook_task.done()):
            self._webhook_task = asyncio.create_task(self._deliver_to_webhook())
        return True

    def _m_getWebhookInfo(self, params: dict, files: dict) -> dict:
        info: dict[str, Any] = {"url": self.webhook_url, "has_custom_certificate": False,
                                "pending_update_count": len(self._updates)}
        failed = next((p for p in reversed(self.webhook_posts) if not p.ok), None)
        if self.webhook_url and failed is not None:
            info["last_error_date"] = int(time.time())
            info["last_error_message"] = failed.error
        return info

    async def _deliver_to_webhook(self) -> None:
        """Telegram's side of a webhook: the oldest queued update is POSTed until the webhook takes it."""
        pause = WEBHOOK_RETRY_FIRST
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)) as session:
            while self.webhook_url and not self._closing:
                batch = self._deliverable(1)
                if not batch:
                    self._update_event.clear()
                    await self._update_event.wait()
                    continue
                update = batch[0]
                post = await self._post_update(session, update)
                self.webhook_posts.append(post)
                self._notify()
                if post.ok:
                    self._updates = [u for u in self._updates if u is not update]
                    pause = WEBHOOK_RETRY_FIRST
                    continue
                self._update_event.clear()
                try:  # a deleteWebhook or setWebhook ends the pause
                    await asyncio.wait_for(self._update_event.wait(), pause)
                except asyncio.TimeoutError:
                    pass
                pause = min(WEBHOOK_RETRY_MAX, pause * 2)

    async def _post_update(self, session: aiohttp.ClientSession, update: dict) -> WebhookPost:
        url = self.webhook_url
        headers = {"Content-Type": "application/json"}
        if self.webhook_secret:
            headers[SECRET_HEADER] = self.webhook_secret
        t = time.monotonic()
        try:
            async with session.post(url, data=json.dumps(update), headers=headers) as response:
                await response.read()
                error = "" if 200 <= response.status < 300 else f"Wrong response from the webhook: " \
                                                                 f"{response.status} {response.reason}"
                return WebhookPost(update["update_id"], url, response.status, t, error)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return WebhookPost(update["update_id"], url, 0, t, f"Connection failed: {type(exc).__name__}")

    async def _m_getUpdates(self, params: dict, files: dict) -> list[dict]:
        if self.webhook_url:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                "use deleteWebhook to delete the webhook first")
        offset = _p_int(params, "offset")
        limit = _p_int(params, "limit") or 100
        limit = max(1, min(100, limit))
        timeout = _p_int(params, "timeout") or 0
        allowed = _p_json(params, "allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = set(allowed) if allowed else None
        if offset is not None:
            if offset < 0:
                del self._updates[:max(0, len(self._updates) + offset)]
            else:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
        self._poll_generation += 1
        generation = self._poll_generation
        self._update_event.set()  # an older poll still waiting ends with 409 Conflict
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, timeout)
        while True:
            batch = self._deliverable(limit)
            if batch or self._closing:
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            self._update_event.clear()
            try:
                await asyncio.wait_for(self._update_event.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            if self._poll_generation != generation:
                raise ApiError(409, DESC_CONFLICT_POLL)

    def _deliverable(self, limit: int) -> list[dict]:
        allowed = self._allowed_updates
        if allowed is None:
            keep = [u for u in self._updates if not (set(u) - {"update_id"}) & NOT_DEFAULT_UPDATES]
        else:
            keep = [u for u in self._updates if (set(u) - {"update_id"}) & allowed]
        if len(keep) != len(self._updates):  # updates of types not asked for are dropped
            self._updates = keep
        return keep[:limit]

    def _m_sendMessage(self, params: dict, files: dict) -> dict:
        chat = self._target_chat(params)
        raw = _p_str(params, "text") or ""
        parse_mode = _p_str(params, "parse_mode")
        entities = _p_json(params, "entities")
        text, ents = parse_formatted(raw, parse_mode, entities)
        self._check_text(text, ents)
        thread_id = self._thread_id(chat, params)
        reply_to = self._reply_target(chat, params)
        markup = _check_markup(_p_json(params, "reply_markup"))
        m = BotMessage(
            chat_id=chat.id, message_id=self._next_mid(chat.id), date=int(time.time()),
            history=[TextVersion(text, ents, time.monotonic(), raw, parse_mode, markup)],
            reply_to_message_id=reply_to, message_thread_id=thread_id,
        )
        return self._save_bot_message(m)

    def _m_sendMessageDraft(self, params: dict, files: dict) -> bool:
        chat = self._target_chat(params)
        if chat.type != "private":
            raise _bad("message drafts can be sent only to private chats")
        draft_id = _p_int(params, "draft_id", required=True)
        if not draft_id:
            raise _bad("draft_id must be non-zero")
        raw = _p_str(params, "text") or ""
        text, _ = parse_formatted(raw, _p_str(params, "parse_mode"), _p_json(params, "entities"))
        if len(text) > MAX_TEXT:
            raise _bad("message is too long")
        self._drafts.setdefault(chat.id, []).append(
            Draft(draft_id, text, time.monotonic(), _p_int(params, "message_thread_id")))
        return True

    def _m_editMessageText(self, params: dict, files: dict) -> dict | bool:
        if params.get("inline_message_id"):
            raise _bad("message to edit not found")
        chat = self._target_chat(params)
        mid = _p_int(params, "message_id", required=True, empty_error="message identifier is not specified")
        raw = _p_str(params, "text") or ""
        parse_mode = _p_str(params, "parse_mode")
        text, ents = parse_formatted(raw, parse_mode, _p_json(params, "entities"))
        self._check_text(text, ents)
        m = self._bot_msg_index.get((chat.id, mid))
        if m is None or m.deleted:
            if (chat.id, mid) in self._msg_json and m is None:
                raise _bad("message can't be edited")
            raise _bad("message to edit not found")
        if m.document is not None:
            raise _bad("there is no text in the message to edit")
        markup = _check_markup(_p_json(params, "reply_markup"))
        cur = m.history[-1]
        if cur.text == text and cur.entities == ents and (cur.reply_markup or None) == (markup or None):
            raise _bad(DESC_NOT_MODIFIED.removeprefix("Bad Request: "))
        m.history.append(TextVersion(text, ents, time.monotonic(), raw, parse_mode, markup))
        out = self._bot_message_json(m)
        self._msg_json[(chat.id, mid)] = out
        return out

    def _m_deleteMessage(self, params: dict, files: dict) -> bool:
        chat = self._target_chat(params)
        mid = _p_int(params, "message_id", required=True, empty_error="message identifier is not specified")
        m = self._bot_msg_index.get((chat.id, mid))
        if (chat.id, mid) not in self._msg_json or (m is not None and m.deleted):
            raise _bad("message to delete not found")
        if m is None:
            if chat.type != "private" and chat.members.get(self.bot_id) not in ("administrator", "creator"):
                raise _bad("message can't be deleted")
            del self._msg_json[(chat.id, mid)]
            return True
        m.deleted = True
        m.deleted_t = time.monotonic()
        return True

    def _m_sendChatAction(self, params: dict, files: dict) -> bool:
        chat = self._target_chat(params)
        action = _p_str(params, "action")
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self._actions.setdefault(chat.id, []).append(
            ChatAction(action, time.monotonic(), _p_int(params, "message_thread_id")))
        return True

    def _m_setMyCommands(self, params: dict, files: dict) -> bool:
        commands = _p_json(params, "commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        clean = []
        for cmd in commands:
            if not isinstance(cmd, dict) or "command" not in cmd:
                raise _bad("can't parse BotCommand: Can't find field \"command\"")
            if "description" not in cmd:
                raise _bad("can't parse BotCommand: Can't find field \"description\"")
            name, desc = str(cmd["command"]), str(cmd["description"])
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise _bad("BOT_COMMAND_INVALID")
            if not desc.strip():
                raise _bad("command description must be non-empty")
            if len(desc) > 256:
                raise _bad("command description is too long")
            clean.append({"command": name, "description": desc})
        key = (self._scope_key(_p_json(params, "scope")), _p_str(params, "language_code") or "")
        self.commands[key] = clean
        return True

    def _m_getMyCommands(self, params: dict, files: dict) -> list[dict]:
        key = (self._scope_key(_p_json(params, "scope")), _p_str(params, "language_code") or "")
        return list(self.commands.get(key, []))

    def _m_deleteMyCommands(self, params: dict, files: dict) -> bool:
        key = (self._scope_key(_p_json(params, "scope")), _p_str(params, "language_code") or "")
        self.commands.pop(key, None)
        return True

    def _member_json(self, status: str, user: dict) -> dict:
        out: dict[str, Any] = {"status": status, "user": user}
        if status == "creator":
            out["is_anonymous"] = False
        elif status == "administrator":
            out.update({
                "can_be_edited": False, "is_anonymous": False, "can_manage_chat": True,
                "can_delete_messages": True, "can_manage_video_chats": True,
                "can_restrict_members": True, "can_promote_members": False,
                "can_change_info": True, "can_invite_users": True, "can_post_stories": True,
                "can_edit_stories": True, "can_delete_stories": True, "can_pin_messages": True,
            })
        elif status == "restricted":
            out.update({k: False for k in (
                "can_change_info", "can_invite_users", "can_pin_messages", "can_send_messages",
                "can_send_polls", "can_send_other_messages", "can_add_web_page_previews",
                "can_manage_topics", "can_send_audios", "can_send_documents", "can_send_photos",
                "can_send_videos", "can_send_video_notes", "can_send_voice_notes", "can_edit_tag")})
            out.update({"is_member": True, "until_date": 0})
        elif status == "kicked":
            out["until_date"] = 0
        return out

    def _m_getChatMember(self, params: dict, files: dict) -> dict:
        chat = self._target_chat(params)
        uid = _p_int(params, "user_id", required=True, empty_error="user not found")
        if uid == self.bot_id:
            return self._member_json(chat.members.get(uid, "member"), self.bot.to_json())
        user = self.users.get(uid)
        if user is None:
            raise _bad("user not found")
        status = chat.members.get(uid, "left")
        return self._member_json(status, user.to_json())

    def _m_getChat(self, params: dict, files: dict) -> dict:
        chat = self._target_chat(params)
        out = chat.to_json()
        out.update({"accent_color_id": 0, "max_reaction_count": 11,
                    "accepted_gift_types": {"unlimited_gifts": False, "limited_gifts": False,
                                            "unique_gifts": False, "premium_subscription": False,
                                            "gifts_from_channels": False}})
        if chat.type == "private":
            u = self.users.get(chat.id)
            if u is not None and u.username:
                out["username"] = u.username
        return out

    def _m_sendDocument(self, params: dict, files: dict) -> dict:
        chat = self._target_chat(params)
        doc = params.get("document")
        upload: _UploadedPart | None = files.get("document")
        if isinstance(doc, str) and doc.startswith("attach://"):
            upload = files.get(doc[len("attach://"):])
            if upload is None:
                raise _bad(f"file {doc} not found")  # approximate wording
        if upload is not None:
            if not upload.data:
                raise _bad("file must be non-empty")
            mime = upload.content_type if upload.content_type not in (None, "application/octet-stream") else None
            stored = self._store_file(upload.data, upload.filename, mime)
        elif isinstance(doc, str) and doc:
            stored = self.files.get(doc)
            if stored is None:
                raise _bad("wrong file identifier/HTTP URL specified")
        else:
            raise _bad("there is no document in the request")
        raw = _p_str(params, "caption") or ""
        parse_mode = _p_str(params, "parse_mode")
        caption, ents = parse_formatted(raw, parse_mode, _p_json(params, "caption_entities"))
        if len(caption) > MAX_CAPTION:
            raise _bad("message caption is too long")
        thread_id = self._thread_id(chat, params)
        reply_to = self._reply_target(chat, params)
        m = BotMessage(
            chat_id=chat.id, message_id=self._next_mid(chat.id), date=int(time.time()),
            history=[TextVersion(caption, ents, time.monotonic(), raw, parse_mode,
                                 _p_json(params, "reply_markup"))],
            reply_to_message_id=reply_to, message_thread_id=thread_id, document=stored,
        )
        return self._save_bot_message(m)

    def _m_getFile(self, params: dict, files: dict) -> dict:
        file_id = _p_str(params, "file_id")
        if not file_id:
            raise _bad("file_id not specified")
        stored = self.files.get(file_id)
        if stored is None:
            raise _bad("invalid file_id")
        if stored.size > MAX_DOWNLOAD:
            raise _bad("file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_size": stored.size, "file_path": stored.file_path}
