"""A channel's partition: a stable hash, the same in every process and Python version (not `hash()`)."""
from __future__ import annotations

import zlib


def partition_of(platform: str, channel_id: str, partitions: int) -> int:
    return zlib.crc32(f"{platform}:{channel_id}".encode("utf-8")) % partitions
