"""Cache entries shared between workers (one SQLite file) and between replicas (Redis).

Every worker keeps its entries in its own `LocalStore` (the semantic index is in-process). A
`Replicator` carries what one worker stores to the others: the cache plugin calls `publish(entry)`
after storing an answer locally, and the replicator calls `apply("put", entry)` on every other
worker (and `apply("flush", namespace)` after a flush). Each event carries an origin id (pid and a
random token), so nothing a worker published is applied back to it; expired entries are never
applied. The caller flushes its own `LocalStore` itself: `flush` tells the others.

The two replicators: `llmgw.cache.shared.sqlite` (the workers of one machine) and
`llmgw.cache.shared.redis` (replicas, through Redis).
"""

from llmgw.cache.shared.base import Apply, Replicator, SharingUnavailable
from llmgw.cache.shared.redis import RedisReplicator
from llmgw.cache.shared.sqlite import SqliteReplicator

__all__ = ["Apply", "RedisReplicator", "Replicator", "SharingUnavailable", "SqliteReplicator"]
