"""PNG cards: the card is base64 JSON in a `chara` (V2) or `ccv3` (V3) text chunk; the image is the avatar.

Every chunk's length and CRC is checked and the file must end in IEND, so a truncated or corrupted upload is
refused instead of half-read. Text chunks are found wherever they sit between IHDR and IEND; some tools write them
after the image data.
"""
from __future__ import annotations

import base64
import binascii
import struct
import zlib
from dataclasses import dataclass

from bot.cards.errors import CardError
from bot.cards.limits import MAX_PNG_CHUNKS, MAX_TEXT_BYTES, MIB

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")  # in order of precedence
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


@dataclass(frozen=True)
class Chunk:
    kind: bytes
    start: int  # offset of the length field
    end: int  # offset just past the CRC
    body: memoryview


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


def read_chunks(data: bytes) -> list[Chunk]:
    """All chunks up to and including IEND, each length and CRC verified."""
    if not is_png(data):
        raise CardError("not a PNG image (bad signature)")
    view = memoryview(data)
    chunks: list[Chunk] = []
    position = len(PNG_SIGNATURE)
    while not chunks or chunks[-1].kind != b"IEND":
        if len(chunks) >= MAX_PNG_CHUNKS:
            raise CardError(f"corrupt PNG: more than {MAX_PNG_CHUNKS} chunks")
        chunks.append(_chunk_at(view, position))
        position = chunks[-1].end
    if chunks[0].kind != b"IHDR":
        raise CardError("corrupt PNG: the first chunk is not IHDR")
    return chunks


def _chunk_at(view: memoryview, position: int) -> Chunk:
    if position + 8 > len(view):
        raise CardError("truncated PNG: the file ends before the IEND chunk")
    length, kind = struct.unpack(">I4s", view[position : position + 8])
    if not kind.isalpha():
        raise CardError(f"corrupt PNG: invalid chunk type at offset {position}")
    end = position + 12 + length
    if end > len(view):
        raise CardError(f"truncated PNG: the {kind.decode('ascii')} chunk runs past the end of the file")
    (stored_crc,) = struct.unpack(">I", view[end - 4 : end])
    if zlib.crc32(view[position + 4 : end - 4]) != stored_crc:
        raise CardError(f"corrupt PNG: bad checksum in the {kind.decode('ascii')} chunk at offset {position}")
    return Chunk(kind, position, end, view[position + 8 : end - 4])


def card_json_from_png(data: bytes) -> tuple[str, bytes]:
    """(JSON text of the card, the image without its card chunks)."""
    chunks = read_chunks(data)
    payloads = {}
    for chunk in chunks:
        keyword = _card_keyword(chunk)
        if keyword and keyword not in payloads:
            payloads[keyword] = chunk
    keyword = next((k for k in CARD_KEYWORDS if k in payloads), None)
    if keyword is None:
        raise CardError("the PNG has no character data (no 'chara' or 'ccv3' text chunk)")
    return _decode_payload(payloads[keyword], keyword), _without_card_chunks(data, chunks)


def _card_keyword(chunk: Chunk) -> str | None:
    if chunk.kind not in _TEXT_CHUNKS:
        return None
    keyword = bytes(chunk.body[:80]).split(b"\0", 1)[0].decode("latin-1").lower()
    return keyword if keyword in CARD_KEYWORDS else None


def _decode_payload(chunk: Chunk, keyword: str) -> str:
    text = _chunk_text(chunk, keyword).strip()
    if text.startswith("{"):  # a few tools store the JSON itself instead of base64
        raw = text.encode("utf-8")
    else:
        raw = _base64(text, keyword)
    if len(raw) > MAX_TEXT_BYTES:
        raise CardError(f"the '{keyword}' chunk is too large ({len(raw) / MIB:.1f} MiB)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CardError(f"the '{keyword}' chunk is not valid UTF-8 JSON (offset {error.start})") from None


def _base64(text: str, keyword: str) -> bytes:
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"the '{keyword}' chunk is not valid base64") from None


def _chunk_text(chunk: Chunk, keyword: str) -> str:
    body = bytes(chunk.body)
    rest = body.split(b"\0", 1)[1] if b"\0" in body else b""
    if chunk.kind == b"tEXt":
        return rest.decode("latin-1")
    if chunk.kind == b"zTXt":
        return _inflate(rest[1:], keyword).decode("latin-1")
    # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        raise CardError(f"corrupt PNG: the '{keyword}' iTXt chunk is too short")
    compressed, fields = rest[0], rest[2:].split(b"\0", 2)
    if len(fields) < 3:
        raise CardError(f"corrupt PNG: the '{keyword}' iTXt chunk is malformed")
    payload = _inflate(fields[2], keyword) if compressed else fields[2]
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CardError(f"the '{keyword}' iTXt chunk is not valid UTF-8") from None


def _inflate(data: bytes, keyword: str) -> bytes:
    """Bounded: a compressed chunk must not expand past the text cap."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT_BYTES + 1)
    except zlib.error:
        raise CardError(f"corrupt PNG: the '{keyword}' chunk does not decompress") from None
    if len(out) > MAX_TEXT_BYTES or inflater.unconsumed_tail:
        raise CardError(f"the '{keyword}' chunk is too large when decompressed (limit {MAX_TEXT_BYTES // MIB} MiB)")
    return out


def _without_card_chunks(data: bytes, chunks: list[Chunk]) -> bytes:
    """The image as an avatar: the card text is dropped (it would double the size) and so is anything after IEND."""
    kept = [data[c.start : c.end] for c in chunks if not _card_keyword(c)]
    return PNG_SIGNATURE + b"".join(kept)


def check_png(data: bytes) -> bytes:
    """A plain image used as an avatar: verified like a card, returned without any card chunks."""
    return _without_card_chunks(data, read_chunks(data))


def text_chunk(keyword: str, text: str) -> bytes:
    body = keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
    return struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))


def embed_card(image: bytes, card_json: str, keyword: str = "chara") -> bytes:
    """A PNG card: `image` with its old card chunks replaced by `card_json` (base64) just before IEND."""
    chunks = read_chunks(image)
    kept = [image[c.start : c.end] for c in chunks[:-1] if not _card_keyword(c)]
    payload = text_chunk(keyword, base64.b64encode(card_json.encode("utf-8")).decode("ascii"))
    return PNG_SIGNATURE + b"".join(kept) + payload + image[chunks[-1].start : chunks[-1].end]
