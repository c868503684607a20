"""Sampled tokens -> the reply's bytes and shown text, and where a reply ends.

A reply ends at the turn end (`\\n\\n`) or at its token cap. Either way the state must read exactly
"...reply\\n\\n": the sampled token is fed back when the turn end finishes right at its end; otherwise the bytes up
to the turn end are fed re-encoded (a token like "\\n\\nUser" must not leak its tail into the state), and at the cap
the closing bytes are fed after the token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bot.engine.tokenizer import TURN_END_BYTES, complete_utf8_prefix


@dataclass
class ReplyText:
    reply_bytes: bytes = b""
    text: str = ""  # shown so far: the complete UTF-8 prefix, leading blanks dropped
    _decoded: int = 0  # bytes of reply_bytes already in `_raw`
    _raw: str = field(default="", repr=False)  # decoded complete prefix before the lstrip

    def accept(self, token: int, piece: bytes, generated: int, max_tokens: int, tokenizer) -> tuple[list[int], str]:
        """Take the `generated`-th sampled token (with bytes `piece`). Returns what to feed next and why:
        ([token], "") to go on, or the closing chunk and "turn_end" / "max_tokens" when the reply is over."""
        before = self.reply_bytes
        combined = before + piece
        end = combined.find(TURN_END_BYTES, max(0, len(before) - 1))
        if end >= 0:
            tail = combined[len(before) : end + len(TURN_END_BYTES)]
            self._grow(combined[:end])
            return ([token] if tail == piece else tokenizer.encode_bytes(tail)), "turn_end"
        self._grow(combined)
        if generated >= max_tokens:
            closing = b"\n" if combined.endswith(b"\n") else TURN_END_BYTES
            return [token] + tokenizer.encode_bytes(closing), "max_tokens"
        return [token], ""

    def _grow(self, reply_bytes: bytes) -> None:
        """Extend the shown text incrementally: only the newly completed bytes are decoded."""
        self.reply_bytes = reply_bytes
        complete = complete_utf8_prefix(reply_bytes)
        if complete > self._decoded:
            self._raw += reply_bytes[self._decoded : complete].decode("utf-8", "replace")
            self._decoded = complete
        self.text = self._raw.lstrip()
