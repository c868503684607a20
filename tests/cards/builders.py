"""Card files built in code: tiny real PNGs, PNG cards, CHARX archives, broken and hostile variants."""
from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def tiny_png(rgb: tuple[int, int, int] = (200, 80, 40), size: int = 2) -> bytes:
    """A real, decodable size x size RGB image."""
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    rows = b"".join(b"\0" + bytes(rgb) * size for _ in range(size))
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def text_chunk(keyword: str, text: str) -> bytes:
    return chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1"))


def b64_json(value: object) -> str:
    return base64.b64encode(json.dumps(value, ensure_ascii=False).encode("utf-8")).decode("ascii")


def png_card(chunks_before_idat=(), chunks_after_idat=(), image: bytes | None = None) -> bytes:
    """A PNG with extra chunks placed before and/or after the image data."""
    image = image or tiny_png()
    ihdr_end = 8 + 12 + 13
    iend_start = len(image) - 12
    before, after = b"".join(chunks_before_idat), b"".join(chunks_after_idat)
    return image[:ihdr_end] + before + image[ihdr_end:iend_start] + after + image[iend_start:]


def charx(card: object, files: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("card.json", json.dumps(card, ensure_ascii=False))
        for name, data in (files or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


def with_declared_size(archive_bytes: bytes, member: str, size: int) -> bytes:
    """The same archive, lying about `member`'s uncompressed size in its central directory."""
    data = bytearray(archive_bytes)
    name = member.encode()
    position = data.find(b"PK\x01\x02")
    while position != -1:
        name_length = struct.unpack("<H", data[position + 28 : position + 30])[0]
        if bytes(data[position + 46 : position + 46 + name_length]) == name:
            data[position + 24 : position + 28] = struct.pack("<I", size)
        position = data.find(b"PK\x01\x02", position + 4)
    return bytes(data)
