"""Several machines: platform fronts and GPU workers over NATS JetStream, state in PostgreSQL.

    front (adapters + RemoteCommands) --rwkv.in.<partition>--> worker (Commands + Conversations + Engine)
          ^                                                              |
          +---------- rwkv.out.<front> (answers, finals) / rwkv.live.<front> (partial text) -----+

- wire.py: subjects, streams and the envelopes that cross the broker (the boundary's own to_dict data).
- partitions.py: which partition a channel belongs to.
- leases.py: which worker serves which partition (JetStream key-value, revision-checked, TTL by heartbeat).
- fences.py: the database refuses a write of a worker whose lease was taken over.
- worker.py: `rwkv-bot worker`: the commands and the engine, serving the partitions it holds.
- front.py: `rwkv-bot front`: only the platform adapters; `RemoteCommands` stands where `Commands` stands.
- status.py: `rwkv-bot cluster status`; bench.py: `rwkv-bot bench-cluster`.
`rwkv-bot run` never imports this package: one process, no broker.
"""
