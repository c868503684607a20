"""Caps on what a card may hold. A card comes from a stranger's upload, so every size is bounded before work."""
from __future__ import annotations

MIB = 1024 * 1024

# Whole file as uploaded. PNG cards carry artwork and CHARX archives carry assets, so they get the larger cap.
MAX_FILE_BYTES = 20 * MIB
# JSON, YAML and text cards, and the JSON inside a PNG chunk or a CHARX archive. Big lorebooks stay well under.
MAX_TEXT_BYTES = 4 * MIB
# The sum of the sizes a CHARX archive declares for its members: more than this is refused as a zip bomb
# before anything is inflated.
MAX_CHARX_UNPACKED_BYTES = 64 * MIB
MAX_CHARX_MEMBERS = 2000
MAX_AVATAR_BYTES = MAX_FILE_BYTES
# PNG files have a few chunks per megabyte of image; this only stops a file made of millions of empty chunks.
MAX_PNG_CHUNKS = 100_000

MAX_FIELD_CHARS = 100_000
MAX_NAME_CHARS = 256
MAX_JSON_DEPTH = 32
MAX_LIST_ITEMS = 1000
MAX_BOOK_ENTRIES = 5000
# Keys of all lorebook entries together (primary and secondary): every message is scanned for each of them.
MAX_BOOK_KEYS = 20_000
