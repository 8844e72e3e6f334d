"""
The tokens a cluster shares, kept in Redis.

A node logs devices in against its own token file, as a single node does;
in a cluster that file is a copy of the tokens in Redis, refreshed whenever
any node or the command line changes them (a TOKENS item on the channel
every node hears) and at every resync.  So a node starts, and logs devices
in, even while Redis is away, and a token added or revoked anywhere counts
everywhere in about a round trip.  Records are stored as the token file
stores them: digests and stored keys, never a token.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from hypertcp.cluster import envelopes as env
from hypertcp.cluster.keys import Keys
from hypertcp.server.tokens import TokenRecord, TokenStore, make_record

# Add a token unless a live one has its name: names stay unique cluster-wide.
_ADD = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""
# Mark the live token called ARGV[1] revoked (kept, so `token list` shows it).
_REVOKE = """
local digest = redis.call('HGET', KEYS[2], ARGV[1])
if not digest then return 0 end
redis.call('HSET', KEYS[1], digest, ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# Fill an empty cluster with a node's tokens, all at once: two nodes starting
# together must not each see half of the other's.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 1, #ARGV, 3 do
  if ARGV[i] ~= '' then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
end
return #ARGV / 3
"""

Call = Callable[..., Deferred]


def _records(fields: list[bytes]) -> list[TokenRecord]:
    records = [TokenRecord(**json.loads(value)) for value in fields[1::2]]
    return sorted(records, key=lambda r: (r.created, r.hash))


class TokenAdmin:
    """Adding, revoking and listing the cluster's tokens, over any Redis C{call}."""

    def __init__(self, call: Call, keys: Keys) -> None:
        self.call = call
        self.keys = keys

    def _announce(self) -> Deferred:
        return self.call("PUBLISH", self.keys.everyone,
                         env.encode_batch("admin", [env.encode_item(env.TOKENS, 0, "", b"")]))

    @inlineCallbacks
    def add(self, name: str, role: str = "device", prefix: Optional[str] = None,
            reach: Optional[list[str]] = None, grants: Optional[list[str]] = None) -> Any:
        """Create a token; a Deferred of its secret (shown only now). ValueError if the name is taken."""
        secret, record = make_record(name, role, prefix, reach, grants)
        added = yield self.call("EVAL", _ADD, 2, self.keys.tokens, self.keys.token_names,
                                name, record.hash, json.dumps(asdict(record)))
        if not added:
            raise ValueError(f"a live token named {name!r} exists already in the cluster")
        yield self._announce()
        return secret

    @inlineCallbacks
    def revoke(self, name: str) -> Any:
        """Revoke the live token called C{name}; a Deferred of how many (0 or 1)."""
        digest = yield self.call("HGET", self.keys.token_names, name)
        if digest is None:
            return 0
        raw = yield self.call("HGET", self.keys.tokens, digest)
        record = json.loads(raw)
        record["revoked"] = True
        revoked = yield self.call("EVAL", _REVOKE, 2, self.keys.tokens, self.keys.token_names,
                                  name, json.dumps(record))
        if revoked:
            yield self._announce()
        return int(revoked)

    @inlineCallbacks
    def list(self) -> Any:
        fields = yield self.call("HGETALL", self.keys.tokens)
        return _records(fields)

    @inlineCallbacks
    def seed(self, records: list[TokenRecord]) -> Any:
        """
        Put C{records} (the first node's token file) in the cluster if it has
        no tokens yet; a Deferred of how many went in (0: it had some).
        """
        args: list[Any] = []
        for record in records:
            args += ["" if record.revoked else record.name, record.hash,
                     json.dumps(asdict(record))]
        count = yield self.call("EVAL", _SEED, 2, self.keys.tokens, self.keys.token_names, *args)
        if count:
            yield self._announce()
        return count


class ClusterTokens:
    """Keeps a node's token file a copy of the cluster's tokens."""

    log = Logger()

    def __init__(self, store: TokenStore, keys: Keys, changed: Callable[[], None]) -> None:
        self.store = store
        self.keys = keys
        self.changed = changed

    @inlineCallbacks
    def sync(self, call: Call) -> Any:
        admin = TokenAdmin(call, self.keys)
        records = yield admin.list()
        if not records and self.store.list():
            # A new cluster (or a Redis that lost its data): the first node
            # to reach it brings its tokens.
            seeded = yield admin.seed(self.store.list())
            if seeded:
                self.log.info("cluster: the cluster had no tokens; {count} from {path} put there",
                              count=seeded, path=self.store.path)
            records = yield admin.list()
        if self.store.replace(records):
            self.log.info("cluster: tokens updated from the cluster ({count} live)",
                          count=sum(not r.revoked for r in records))
            self.changed()
