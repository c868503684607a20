"""The original web UI's power-user tools: /continue /as /reply /edit /suggest, named saves, /debug, /export."""
from __future__ import annotations

import json
import re

from bot.commands.base import Context, Reply, command, first_arg, parse_number, split_args, with_notice
from bot.conversations import ConversationError
from bot.i18n import t

SAVE_NAME = re.compile(r"^[\w\-]{1,64}$")
DEBUG_TOKENS = 64
DEBUG_MAX_TOKENS = 4096
INLINE_LIMIT = 1500  # longer /debug output goes out as a file


@command("continue")
async def continue_(cmds, ctx: Context, args: str):
    return [await cmds.conversations.continue_(ctx.key)]


@command("as", admin=True, usage="NAME text")  # in groups: speaking as anyone is for admins
async def as_(cmds, ctx: Context, args: str):
    name, text = first_arg(args)
    if not name or not text:
        return [Reply(t("bad_usage", ctx.lang, name="as", usage="NAME text"), ephemeral=True)]
    return with_notice(await cmds.conversations.say(ctx.key, name, text, kind="as"), ctx.lang)


@command("reply", usage="NAME")
async def reply(cmds, ctx: Context, args: str):
    name = cmds.conversations.speaker_name(args.strip().strip("'\""), fallback="")
    if not name:
        return [Reply(t("bad_usage", ctx.lang, name="reply", usage="NAME"), ephemeral=True)]
    name = await cmds.conversations.next_speaker_of(ctx.key, name)  # a cast member by any of its names
    await cmds.conversations.set_setting(ctx.key, "next_speaker", name)
    return [Reply(t("reply_next", ctx.lang, name=name))]


@command("edit", admin=True, usage="text")  # in groups: putting words in the character's mouth too
async def edit(cmds, ctx: Context, args: str):
    if not args.strip():
        raise ConversationError("empty_message")
    await cmds.conversations.edit_last(ctx.key, args)
    return [Reply(t("edit_done", ctx.lang))]


@command("suggest")
async def suggest(cmds, ctx: Context, args: str):
    text = await cmds.conversations.suggest(ctx.key)
    return [Reply(t("suggest_result", ctx.lang, text=text or "…"), ephemeral=True)]


def _save_name(args: str) -> str:
    name = args.strip()
    if not SAVE_NAME.match(name):
        raise ConversationError("bad_save_name")
    return name


@command("save", admin=True, usage="NAME")
async def save(cmds, ctx: Context, args: str):
    name = _save_name(args)
    await cmds.conversations.save(ctx.key, name, ctx.user_key, exempt=ctx.is_bot_admin)
    return [Reply(t("saved", ctx.lang, name=name))]


@command("load", admin=True, usage="NAME")
async def load(cmds, ctx: Context, args: str):
    name = _save_name(args)
    await cmds.conversations.load(ctx.key, name)
    return [Reply(t("loaded", ctx.lang, name=name))]


@command("saves")
async def saves(cmds, ctx: Context, args: str):
    found = await cmds.conversations.saves(ctx.key)
    if not found:
        return [Reply(t("saves_none", ctx.lang), ephemeral=True)]
    lines = [t("saves_list", ctx.lang, count=len(found))]
    lines += [f"- {name}: {turns} turn(s), {created}" for name, turns, created in found]
    return [Reply("\n".join(lines), ephemeral=True)]


@command("delsave", admin=True, usage="NAME")
async def delsave(cmds, ctx: Context, args: str):
    name = _save_name(args)
    await cmds.conversations.delete_save(ctx.key, name)
    return [Reply(t("deleted_save", ctx.lang, name=name))]


@command("debug", admin=True, usage="[N] [ids]")
async def debug(cmds, ctx: Context, args: str):
    words = [w.lower() for w in split_args(args)]
    show_ids = "ids" in words
    numbers = [w for w in words if w != "ids"]
    count = parse_number(numbers[0]) if len(numbers) == 1 else DEBUG_TOKENS if not numbers else None
    if count is None or not 1 <= count <= DEBUG_MAX_TOKENS:
        return [Reply(t("bad_usage", ctx.lang, name="debug", usage=f"[N: 1..{DEBUG_MAX_TOKENS}] [ids]"),
                      ephemeral=True)]
    info = await cmds.conversations.debug(ctx.key, count)
    tok = cmds.conversations.tokenizer
    lines = [t("debug_summary", ctx.lang, tokens=info["tokens"], turns=info["turns"])]
    if info["last_fed"] is not None:
        lines += ["", t("debug_last_fed", ctx.lang), repr(info["last_fed"])]
    lines += ["", t("debug_tail", ctx.lang, count=len(info["tail"]))]
    if show_ids:
        lines.append(" ".join(f"{tok.token_bytes(i).decode('utf-8', 'replace')!r}:{i}" for i in info["tail"]))
    else:
        lines.append(repr(tok.decode(info["tail"])))
    text = "\n".join(lines)
    if len(text) > INLINE_LIMIT:
        return [Reply(lines[0], ephemeral=True, file=("debug.txt", text.encode("utf-8")))]
    return [Reply(text, ephemeral=True)]


@command("export", usage="[json]")
async def export(cmds, ctx: Context, args: str):
    as_json = args.strip().lower() == "json"
    channel, turns = await cmds.conversations.transcript(ctx.key)
    view = await cmds.conversations.view(ctx.key)
    card = view.character
    greeting = (channel.settings or {}).get("greeting")
    if as_json:
        data = {"character": card.name if card else None, "greeting": greeting,
                "params": view.params.to_dict(), "chat_format": channel.chat_format,
                "turns": [{"position": x.position, "kind": x.kind, "speaker": x.in_speaker, "text": x.in_text,
                           "reply_speaker": x.out_speaker, "reply": x.out_text, "time": x.created.isoformat()}
                          for x in turns]}
        body = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
        return [Reply(t("export_done", ctx.lang), file=("transcript.json", body))]
    lines = []
    if card and greeting:
        lines.append(f"{card.display_name}: {greeting}")
    for x in turns:
        if x.in_text is not None:
            lines.append(f"{x.in_speaker}: {x.in_text}")
        lines.append(f"{x.out_speaker}: {x.out_text}")
    body = ("\n\n".join(lines) + "\n").encode("utf-8")
    return [Reply(t("export_done", ctx.lang), file=("transcript.txt", body))]


@command("status", admin=True)
async def status(cmds, ctx: Context, args: str):
    info = cmds.status() if cmds.status else {}
    channels = await cmds.conversations.store.channels_count()
    return [Reply(t("status", ctx.lang, channels=channels, **info), ephemeral=True)]
