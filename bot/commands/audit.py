"""The audit log: every admin change, whichever surface it came from (a Discord slash command, a Telegram command,
the terminal, the admin web page), recorded here in the command layer where all of them pass.

What counts as a change is declared in one table. A change is recorded once it succeeded; refusals are ephemeral
replies and record nothing.
"""
from __future__ import annotations

import logging

from bot.commands.base import Context, Output, Reply, first_arg

log = logging.getLogger(__name__)

ANY = None  # every use of the command with arguments is a change
# command -> the first arguments that make it a change (ANY: any non-empty arguments)
AUDITED: dict[str, frozenset[str] | None] = {
    "params": frozenset({"set", "reset"}),
    "char": frozenset({"import", "delete", "use"}),
    "format": ANY,
    "replymode": ANY,
    "lang": ANY,
    "save": ANY,
    "load": ANY,
    "delsave": ANY,
}
CHAR_READS = frozenset({"", "list", "show"})  # `/char NAME` is `/char use NAME`
MAX_DETAIL = 200


def succeeded(outputs: list[Output]) -> bool:
    """Refusals are ephemeral replies; anything else means the command did its work."""
    return any(not (isinstance(o, Reply) and o.ephemeral) for o in outputs)


def audited_action(name: str, args: str) -> tuple[str, str] | None:
    """(action, detail) when `/name args` changes something, else None."""
    if name not in AUDITED:
        return None
    actions = AUDITED[name]
    if actions is ANY:
        return (name, args.strip()) if args.strip() else None
    first, rest = first_arg(args)
    first = first.lower()
    if name == "char" and first not in actions and first not in CHAR_READS:
        return "char use", args.strip()
    if first in actions:
        return f"{name} {first}", rest
    return None


async def record(store, ctx: Context, action: str, detail: str = "") -> None:
    """One entry: who (platform user), where (channel), through which surface, what."""
    try:
        await store.add_audit(surface=(ctx.surface or ctx.key.platform)[:32], user_id=ctx.user_id[:128],
                              user_name=ctx.user_name[:128], channel=str(ctx.key)[:192], action=action[:64],
                              detail=detail[:MAX_DETAIL])
    except Exception as exc:  # the change is made; a lost audit line must not turn it into an error
        log.warning("channel %s: audit entry %r not stored: %s", ctx.key, action, type(exc).__name__)


async def record_command(store, ctx: Context, name: str, args: str, outputs: list[Output]) -> None:
    found = audited_action(name, args)
    if found is None or not succeeded(outputs):
        return
    action, detail = found
    if action == "char import" and ctx.attachment is not None:
        detail = ctx.attachment[0]
    await record(store, ctx, action, detail)
