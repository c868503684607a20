"""What crosses the broker: subjects, streams, buckets and envelopes (JSON of the boundary's `to_dict` data).

In: one JetStream subject per partition, `rwkv.in.<partition>`, in the work-queue stream RWKV_IN; a message is
acknowledged by its worker only once what it asked for is committed and its answer is published, so a crash
before that redelivers it. Each carries an idempotency key (`dedupe_key`): JetStream drops a second publish of
it, and a worker answers a redelivered one from what it recorded instead of acting twice.
Out: answers and the last event of each reply stream in RWKV_OUT (`rwkv.out.<front>`, kept across a broker
restart); the text so far of a reply in core NATS (`rwkv.live.<front>`): losing one only skips a frame.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass

IN_STREAM, OUT_STREAM = "RWKV_IN", "RWKV_OUT"
IN_SUBJECTS, OUT_SUBJECTS = "rwkv.in.*", "rwkv.out.*"
LEASE_BUCKET, WORKER_BUCKET = "rwkv_leases", "rwkv_workers"
NAMES_SUBJECT = "rwkv.ask.names"  # any worker answers: the character names (Discord autocompletion)
WORKERS_QUEUE = "workers"
OUT_KEEP_SECONDS = 3600.0  # answers a front has not fetched (it was down) are dropped after this
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # worker ids and front names: NATS subject tokens and KV keys

# What an incoming envelope asks for (`Commands.handle`, `.edited`, `.deleted`, `.shown`).
MESSAGE, EDIT, DELETED, SHOWN = "message", "edit", "deleted", "shown"
KINDS = (MESSAGE, EDIT, DELETED, SHOWN)


def in_subject(partition: int) -> str:
    return f"rwkv.in.{partition}"


def out_subject(front: str) -> str:
    return f"rwkv.out.{front}"


def live_subject(front: str) -> str:
    return f"rwkv.live.{front}"


def cancel_subject(request: str) -> str:
    return f"rwkv.cancel.{request}"


def consumer_name(partition: int) -> str:
    return f"partition-{partition}"


def lease_key(partition: int) -> str:
    return f"partition.{partition}"


@dataclass
class Envelope:
    """One incoming event: which front wants the answer, for which request, and the boundary data."""
    kind: str
    front: str
    request: str
    data: dict  # Incoming / MessageGone / ReplyShown .to_dict()
    key: str = ""  # dedupe_key

    def encode(self) -> bytes:
        return json.dumps({"kind": self.kind, "front": self.front, "request": self.request, "data": self.data,
                           "key": self.key}, ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> "Envelope":
        d = json.loads(raw)
        if d.get("kind") not in KINDS or not NAME.fullmatch(str(d.get("front", ""))):
            raise ValueError("not an incoming envelope")
        return cls(d["kind"], d["front"], str(d["request"]), dict(d["data"]), str(d.get("key", "")))


def dedupe_key(kind: str, data: dict, request: str) -> str:
    """The platform message and what happened to it; a request id where the platform gave no message id."""
    message = data.get("message_id", "")
    if kind == SHOWN:
        return f"{kind}:{data['platform']}:{data['channel_id']}:{data['position']}:{','.join(data['message_ids'])}"
    if not message:
        return f"request:{request}"
    base = f"{kind}:{data['platform']}:{data['channel_id']}:{message}"
    if kind == EDIT:  # each edit of one message is its own event
        return f"{base}:{zlib_hex(data.get('text', ''))}"
    if kind == MESSAGE and data.get("button"):
        b = data["button"]
        return f"press:{data['platform']}:{data['channel_id']}:{request}:{b.get('action')}:{b.get('turn_id')}"
    return base


def zlib_hex(text: str) -> str:
    return format(zlib.crc32(text.encode("utf-8")), "08x")


# ----- out ------------------------------------------------------------------------------------------------------
ANSWER, EVENT = "answer", "event"


def answer_message(request: str, attempt: int, answer: dict) -> bytes:
    return json.dumps({"type": ANSWER, "request": request, "attempt": attempt, "answer": answer},
                      ensure_ascii=False).encode("utf-8")


def event_message(request: str, attempt: int, stream: int, event: dict, worker_seconds: float = 0.0) -> bytes:
    """`worker_seconds`: from the worker taking the event to this one (the broker's share is the rest)."""
    return json.dumps({"type": EVENT, "request": request, "attempt": attempt, "stream": stream, "event": event,
                       "worker_seconds": worker_seconds}, ensure_ascii=False).encode("utf-8")


def decode_out(raw: bytes) -> dict:
    d = json.loads(raw)
    if d.get("type") not in (ANSWER, EVENT):
        raise ValueError("not an outgoing message")
    return d
