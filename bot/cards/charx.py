"""CHARX cards: a zip archive with `card.json` (V3) at its root and assets at `embeded://path` URIs.

Only card.json and the main icon are ever inflated. The archive's declared sizes are checked first (a zip bomb is
refused without inflating anything) and every read is streamed with a cap, since declared sizes can lie.
"""
from __future__ import annotations

import io
import lzma
import zipfile
import zlib

from bot.cards.errors import CardError
from bot.cards.limits import MAX_AVATAR_BYTES, MAX_CHARX_MEMBERS, MAX_CHARX_UNPACKED_BYTES, MAX_TEXT_BYTES, MIB

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_EMBEDDED_PREFIXES = ("embeded://", "embedded://")  # the spec's spelling is "embeded"; accept the fixed one too
# What a damaged archive raises from zipfile; ValueError too (e.g. "negative seek value" when the central directory
# points before the file's start).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError, OSError,
               ValueError)


def is_zip(data: bytes) -> bool:
    return data.startswith(ZIP_SIGNATURES)


def open_charx(data: bytes) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as error:
        raise CardError(f"not a readable CHARX/zip archive: {error}") from None
    _check_declared_sizes(archive)
    return archive


def _check_declared_sizes(archive: zipfile.ZipFile) -> None:
    members = archive.infolist()
    if len(members) > MAX_CHARX_MEMBERS:
        raise CardError(f"the CHARX archive has too many files ({len(members)}; the limit is {MAX_CHARX_MEMBERS})")
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_CHARX_UNPACKED_BYTES:
        raise CardError(
            f"the CHARX archive would unpack to {unpacked / MIB:.0f} MiB (limit {MAX_CHARX_UNPACKED_BYTES // MIB} MiB):"
            " refused as a possible zip bomb"
        )


def read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """One member, inflated in pieces and abandoned as soon as it passes `limit`."""
    try:
        member = archive.getinfo(name)
    except KeyError:
        raise CardError(f"the CHARX archive has no {name}") from None
    if member.file_size > limit:
        size = member.file_size / MIB
        raise CardError(f"{name} in the CHARX archive is too large ({size:.1f} MiB; limit {limit / MIB:.0f} MiB)")
    pieces, total = [], 0
    try:
        with archive.open(member) as stream:
            while piece := stream.read(64 * 1024):
                total += len(piece)
                if total > limit:
                    raise CardError(
                        f"{name} in the CHARX archive inflates past {limit / MIB:.0f} MiB: refused as a zip bomb"
                    )
                pieces.append(piece)
    except CardError:  # our own cap above (a ValueError too): as raised
        raise
    except _ZIP_ERRORS as error:
        raise CardError(f"{name} in the CHARX archive is corrupt: {error}") from None
    return b"".join(pieces)


def card_json_from_charx(data: bytes) -> tuple[zipfile.ZipFile, bytes]:
    archive = open_charx(data)
    return archive, read_member(archive, "card.json", MAX_TEXT_BYTES)


def main_icon_path(assets: list[dict]) -> str | None:
    """The archive path of the card's main icon, if it is embedded (V3: type "icon", preferably name "main")."""
    icons = [asset for asset in assets if asset.get("type") == "icon" and isinstance(asset.get("uri"), str)]
    icons.sort(key=lambda asset: asset.get("name") != "main")
    for icon in icons:
        for prefix in _EMBEDDED_PREFIXES:
            if icon["uri"].startswith(prefix):
                return icon["uri"][len(prefix) :]
    return None


def read_icon(archive: zipfile.ZipFile, path: str) -> bytes:
    return read_member(archive, path, MAX_AVATAR_BYTES)
