"""The boundary between the platforms and the bot: plain, serialisable data in both directions.

An adapter turns a platform event into an `Incoming` and calls `Commands.handle`; what comes back is an `Answer`:
whether the bot answers at all, the language, and the outputs to show (`Reply`, `CharacterLine`, `ReplyStream`,
`Goodbye`). A `ReplyStream` yields plain events: `Partial` (the text so far, newest only) and one `Final` (the
committed text, or why the reply stopped). Every type round-trips through `to_dict()`/`from_dict()` into JSON-safe
data (bytes as base64), so a message broker can sit on exactly this line, with platform front-ends and GPU workers
in different processes.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import AsyncIterable, AsyncIterator, Callable, Union

from bot.commands.parsing import ParsedCommand, parse_command

TERMINAL = "terminal"  # the owner's own terminal: every command is theirs, no flood control, local files


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


# ----- in ------------------------------------------------------------------------------------------------------
@dataclass
class Attachment:
    """A file sent with the message (for `/char import`)."""
    filename: str
    data: bytes

    def to_dict(self) -> dict:
        return {"filename": self.filename, "data": _b64(self.data)}

    @classmethod
    def from_dict(cls, data: dict) -> "Attachment":
        return cls(data["filename"], _unb64(data["data"]))


# Why a wanted attachment did not come with the message; `Commands.handle` words the refusal.
TOO_BIG, DOWNLOAD_FAILED, NOT_FOUND, UNREADABLE = "too_big", "download_failed", "not_found", "unreadable"


@dataclass
class AttachmentProblem:
    kind: str  # TOO_BIG (size, limit) | DOWNLOAD_FAILED | NOT_FOUND (detail: the path) | UNREADABLE (detail)
    size: int = 0
    limit: int = 0
    detail: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "size": self.size, "limit": self.limit, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> "AttachmentProblem":
        return cls(data["kind"], data.get("size", 0), data.get("limit", 0), data.get("detail", ""))


# What a button under a character's reply does (`ButtonPress.action`).
SWIPE_BACK, SWIPE_FORWARD, SWIPE_LABEL, STOP = "back", "forward", "label", "stop"
_ACTION_CODES = {SWIPE_BACK: "b", SWIPE_FORWARD: "f", SWIPE_LABEL: "l", STOP: "s"}
_CODE_ACTIONS = {code: action for action, code in _ACTION_CODES.items()}
BUTTON_PREFIX = "rp"  # callback data / custom ids of this bot's buttons start "rp:"


@dataclass
class ButtonPress:
    """A button of a character's reply, as its callback data (Telegram) or custom id (Discord) says: what it does,
    which turn it belongs to (swipes; 0 for stop) and whose line that reply answers (the user id; "" = anyone's).
    The data is all a press needs: no message ids are kept anywhere."""
    action: str
    turn_id: int = 0
    owner: str = ""

    def encode(self) -> str:
        """At most 64 bytes (Telegram's limit for callback data) for any platform user id."""
        return f"{BUTTON_PREFIX}:{_ACTION_CODES[self.action]}:{self.turn_id}:{self.owner[:40]}"

    @classmethod
    def decode(cls, data: str | None) -> "ButtonPress | None":
        """The press a button's data stands for; None for anything else (another bot's buttons, garbage)."""
        parts = (data or "").split(":", 3)
        if len(parts) != 4 or parts[0] != BUTTON_PREFIX or parts[1] not in _CODE_ACTIONS or not parts[2].isdigit():
            return None
        return cls(_CODE_ACTIONS[parts[1]], int(parts[2]), parts[3])

    def to_dict(self) -> dict:
        return {"action": self.action, "turn_id": self.turn_id, "owner": self.owner}

    @classmethod
    def from_dict(cls, data: dict) -> "ButtonPress":
        return cls(data["action"], data.get("turn_id", 0), data.get("owner", ""))


@dataclass
class Button:
    """One button to show: its text and the data a press sends back (`ButtonPress.encode`)."""
    label: str
    data: str

    def to_dict(self) -> dict:
        return {"label": self.label, "data": self.data}

    @classmethod
    def from_dict(cls, data: dict) -> "Button":
        return cls(data["label"], data["data"])


def swipe_buttons(turn_id: int, place: int, count: int, owner: str) -> list[Button]:
    """◀ n/m ▶ under a finished reply."""
    return [Button("◀", ButtonPress(SWIPE_BACK, turn_id, owner).encode()),
            Button(f"{place}/{count}", ButtonPress(SWIPE_LABEL, turn_id, owner).encode()),
            Button("▶", ButtonPress(SWIPE_FORWARD, turn_id, owner).encode())]


def stop_buttons(owner: str) -> list[Button]:
    """⏹ under a reply being written."""
    return [Button("⏹", ButtonPress(STOP, 0, owner).encode())]


def _buttons_from(data: list | None) -> list[Button]:
    return [Button.from_dict(b) for b in data or []]


@dataclass
class Incoming:
    """One message as the bot needs it, whatever platform it came from.

    `is_admin` is asked of the platform only when `needs_admin(incoming)` says the answer depends on it (None:
    not asked; counts as not an admin), and the attachment is fetched only when `wants_attachment(incoming)`."""
    platform: str  # "telegram", "discord", "terminal", ...
    channel_id: str  # the conversation within the platform (a chat, a forum topic, a channel or thread)
    user_id: str
    user_name: str  # the speaker's display name, as the model reads it in group turns
    text: str  # what was said (the bot's own @mention removed), or the command as written
    message_id: str = ""  # the platform's id of this message ("" where there is none: a slash command)
    is_group: bool = False  # a group chat or a server channel (several people), not a private chat
    addressed: bool = True  # for the bot for sure: a private chat, a mention, a reply to the bot, a command
    is_admin: bool | None = None
    is_bot_admin: bool = False  # one of the ids/roles the owner configured (the shared library); no platform call
    language_code: str | None = None  # the user's (or server's) platform language, e.g. "zh-hans"
    attachment: Attachment | None = None
    attachment_problem: AttachmentProblem | None = None
    reply_to: str = ""  # the id of the message this one answers ("" when none)
    # Who the answered message shows as its speaker when it is a character's line of the bot's (the webhook's name
    # on Discord, the name before the text on Telegram): in a scene, that character answers.
    reply_to_speaker: str = ""
    chat_title: str = ""  # the server/channel or chat title as the platform shows it ("" = unknown)
    surface: str = ""  # where it was said when not on the platform itself ("dashboard"), for the audit log
    button: ButtonPress | None = None  # a press of one of the buttons under a reply (then `text` is "")
    _parsed: tuple[str, ParsedCommand | None] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def command(self) -> ParsedCommand | None:
        """The command in `text` (None for plain chat), parsed once per text."""
        if self._parsed is None or self._parsed[0] != self.text:
            self._parsed = (self.text, parse_command(self.text))
        return self._parsed[1]

    def to_dict(self) -> dict:
        return {"platform": self.platform, "channel_id": self.channel_id, "user_id": self.user_id,
                "user_name": self.user_name, "text": self.text, "message_id": self.message_id,
                "is_group": self.is_group, "addressed": self.addressed, "is_admin": self.is_admin,
                "is_bot_admin": self.is_bot_admin, "language_code": self.language_code,
                "attachment": self.attachment.to_dict() if self.attachment else None,
                "attachment_problem": self.attachment_problem.to_dict() if self.attachment_problem else None,
                "reply_to": self.reply_to, "reply_to_speaker": self.reply_to_speaker, "chat_title": self.chat_title,
                "surface": self.surface, "button": self.button.to_dict() if self.button else None}

    @classmethod
    def from_dict(cls, data: dict) -> "Incoming":
        values = dict(data)
        values["attachment"] = Attachment.from_dict(data["attachment"]) if data.get("attachment") else None
        values["attachment_problem"] = (AttachmentProblem.from_dict(data["attachment_problem"])
                                        if data.get("attachment_problem") else None)
        values["button"] = ButtonPress.from_dict(data["button"]) if data.get("button") else None
        return cls(**values)


# ----- out -----------------------------------------------------------------------------------------------------
@dataclass
class Reply:
    """A command's answer, said by the bot."""
    text: str
    ephemeral: bool = False  # only the caller needs it (Discord)
    file: tuple[str, bytes] | None = None  # (filename, data) to attach
    private: bool = False  # for the caller's eyes only, even in a group: never posted where others read

    def to_dict(self) -> dict:
        return {"type": "reply", "text": self.text, "ephemeral": self.ephemeral,
                "file": {"filename": self.file[0], "data": _b64(self.file[1])} if self.file else None,
                "private": self.private}

    @classmethod
    def from_dict(cls, data: dict) -> "Reply":
        file = data.get("file")
        return cls(data["text"], data.get("ephemeral", False),
                   (file["filename"], _unb64(file["data"])) if file else None, data.get("private", False))


@dataclass
class CharacterLine:
    """Something the character says that is not generated now (its greeting)."""
    speaker: str
    text: str
    avatar: bytes | None = None
    named: bool = False  # several characters share the channel: show the speaker's name with the text

    def to_dict(self) -> dict:
        return {"type": "character_line", "speaker": self.speaker, "text": self.text, "avatar": _b64(self.avatar),
                "named": self.named}

    @classmethod
    def from_dict(cls, data: dict) -> "CharacterLine":
        return cls(data["speaker"], data["text"], _unb64(data.get("avatar")), data.get("named", False))


@dataclass
class Goodbye:
    """The user ended the session (the terminal's /quit): say `text`, then stop reading."""
    text: str

    def to_dict(self) -> dict:
        return {"type": "goodbye", "text": self.text}

    @classmethod
    def from_dict(cls, data: dict) -> "Goodbye":
        return cls(data["text"])


# How a streamed reply ended (`Final.outcome`). STOPPED: /stop before it wrote anything (the turn is dropped);
# KEPT: a swipe that changed nothing after all (the reply is no longer the latest): leave the message as it is.
DONE, EMPTY, CANCELLED, ENGINE_ERROR, STOPPED, KEPT = "done", "empty", "cancelled", "engine_error", "stopped", "kept"
OUTCOMES = (DONE, EMPTY, CANCELLED, ENGINE_ERROR, STOPPED, KEPT)


@dataclass
class Partial:
    """The reply so far (the whole text; intermediate versions may be skipped)."""
    text: str

    def to_dict(self) -> dict:
        return {"type": "partial", "text": self.text}


@dataclass
class Queued:
    """The reply waits for the GPU: `ahead` requests go before it (sent when it changes)."""
    ahead: int

    def to_dict(self) -> dict:
        return {"type": "queued", "ahead": self.ahead}


@dataclass
class Final:
    """The last event of a stream. DONE: `text` is committed to the conversation; EMPTY: committed, but the
    character said nothing; CANCELLED / ENGINE_ERROR / STOPPED: nothing was committed and `text` is what was
    written so far. `buttons`: what to show under the reply's last message (its swipes). `position`: the
    committed turn's place in the channel's history (0 when nothing was committed), for `ReplyShown`."""
    text: str
    outcome: str
    buttons: list[Button] = field(default_factory=list)
    position: int = 0

    def to_dict(self) -> dict:
        return {"type": "final", "text": self.text, "outcome": self.outcome,
                "buttons": [b.to_dict() for b in self.buttons], "position": self.position}


StreamEvent = Union[Partial, Queued, Final]


def event_from_dict(data: dict) -> StreamEvent:
    if data["type"] == "partial":
        return Partial(data["text"])
    if data["type"] == "queued":
        return Queued(int(data["ahead"]))
    if data["type"] == "final" and data["outcome"] in OUTCOMES:
        return Final(data["text"], data["outcome"], _buttons_from(data.get("buttons")), data.get("position", 0))
    raise ValueError(f"not a stream event: {data.get('type')!r}")


class ReplyStream:
    """A reply being generated, spoken by `speaker`: iterate for its events (Partial..., then one Final), once.

    Its header (speaker, avatar) serialises like the other outputs; the events travel one by one after it
    (`from_dict` takes them back as any async iterable, and where cancelling goes)."""

    def __init__(self, speaker: str, avatar: bytes | None, events: AsyncIterable[StreamEvent],
                 cancel: Callable[[], None] | None = None, buttons: list[Button] | None = None,
                 into: list[str] | None = None, named: bool = False):
        self.speaker = speaker
        self.avatar = avatar
        self.buttons = buttons or []  # shown under the reply while it is written (⏹)
        self.into = list(into or [])  # the bot's messages to paint it into (a reply regenerated after an edit)
        self.named = named  # several characters share the channel: show the speaker's name with the text
        self._events = events
        self._cancel = cancel

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events.__aiter__()

    def cancel(self) -> None:
        """Stop generating; the stream still ends with a Final (CANCELLED), and nothing is committed."""
        if self._cancel is not None:
            self._cancel()

    def to_dict(self) -> dict:
        return {"type": "stream", "speaker": self.speaker, "avatar": _b64(self.avatar),
                "buttons": [b.to_dict() for b in self.buttons], "into": self.into, "named": self.named}

    @classmethod
    def from_dict(cls, data: dict, events: AsyncIterable[StreamEvent],
                  cancel: Callable[[], None] | None = None) -> "ReplyStream":
        return cls(data["speaker"], _unb64(data.get("avatar")), events, cancel, _buttons_from(data.get("buttons")),
                   data.get("into"), data.get("named", False))


@dataclass
class Retract:
    """Delete these messages of the bot's (a reply whose exchange was undone by a delete on the platform)."""
    message_ids: list[str]

    def to_dict(self) -> dict:
        return {"type": "retract", "message_ids": list(self.message_ids)}

    @classmethod
    def from_dict(cls, data: dict) -> "Retract":
        return cls(list(data["message_ids"]))


Output = Union[Reply, CharacterLine, ReplyStream, Goodbye, Retract]
_OUTPUTS = {"reply": Reply, "character_line": CharacterLine, "goodbye": Goodbye, "retract": Retract}


# ----- edits and deletes on the platform ------------------------------------------------------------------------
# An edited message comes in as an `Incoming` (its new text, its `message_id`) to `Commands.edited`.
@dataclass
class MessageGone:
    """A message was deleted on the platform (by its author or a moderator: the platform does not say whom)."""
    platform: str
    channel_id: str
    message_id: str

    def to_dict(self) -> dict:
        return {"platform": self.platform, "channel_id": self.channel_id, "message_id": self.message_id}

    @classmethod
    def from_dict(cls, data: dict) -> "MessageGone":
        return cls(data["platform"], data["channel_id"], data["message_id"])


@dataclass
class ReplyShown:
    """The bot's messages that show the reply committed at `position` (`Final.position`), reported by the
    adapter once it has painted them, so that deleting one of them undoes the reply, and an edit of the line
    repaints them."""
    platform: str
    channel_id: str
    position: int
    message_ids: list[str]

    def to_dict(self) -> dict:
        return {"platform": self.platform, "channel_id": self.channel_id, "position": self.position,
                "message_ids": list(self.message_ids)}

    @classmethod
    def from_dict(cls, data: dict) -> "ReplyShown":
        return cls(data["platform"], data["channel_id"], data["position"], list(data["message_ids"]))


def output_from_dict(data: dict, events: AsyncIterable[StreamEvent] | None = None,
                     cancel: Callable[[], None] | None = None) -> Output:
    """Any output from its `to_dict()`; a stream needs its events (and may take a canceller)."""
    if data["type"] == "stream":
        if events is None:
            raise ValueError("a reply stream needs its events")
        return ReplyStream.from_dict(data, events, cancel)
    return _OUTPUTS[data["type"]].from_dict(data)


@dataclass
class Answer:
    """Everything an adapter shows for one Incoming."""
    outputs: list[Output]
    lang: str  # the language every adapter-side text for this message uses
    answered: bool = True  # False: the message was not for the bot (not addressed; the channel's mode says so)

    def to_dict(self) -> dict:
        return {"outputs": [o.to_dict() for o in self.outputs], "lang": self.lang, "answered": self.answered}

    @classmethod
    def from_dict(cls, data: dict, streams: list[AsyncIterable[StreamEvent]] | None = None) -> "Answer":
        """`streams`: the events of each stream output, in order."""
        pending = list(streams or [])
        outputs = [output_from_dict(o, pending.pop(0) if o["type"] == "stream" else None) for o in data["outputs"]]
        return cls(outputs, data["lang"], data.get("answered", True))
