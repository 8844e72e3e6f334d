"""
The clustered message store: each device's queue in the cluster's Redis,
so a device gets its messages whichever node it logs in to next.

Per device, a STREAM holds the messages in the order accepted (its entry
ids are the keys), a counter their bytes, and a ZSET their expiry times;
one ZSET lists the devices with messages, scored by their earliest expiry,
for the sweep and for operators (L{hypertcp.cluster.keys.Keys} names them
all).  Every change is one Lua script, so the bounds hold however many
nodes write at once, and a node killed halfway leaves nothing half done.
Each key also expires on its own an hour after its last message would
have, so a queue nobody sweeps cannot outlive its messages for long.

Durability is Redis's: a message is answered STORED once Redis has applied
the script, and survives a restart of Redis as its C{appendonly} and
C{appendfsync} settings promise (docs/operations.rst).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from zope.interface import implementer

from hypertcp.cluster.keys import Keys
from hypertcp.protocol.commands import Status
from hypertcp.store.interfaces import IMessageStore
from hypertcp.store.records import Bounds, Queue, Stored, size

#: Milliseconds a queue's keys outlive its last message's expiry (clock skew between nodes and Redis).
MARGIN_MS = 3600 * 1000
#: Devices (and each one's expired messages) a sweep script takes at once.
SWEEP_CHUNK = 200
#: Sweep scripts per sweep at most; what is left waits for the next sweep.
SWEEP_ROUNDS = 50

# Shared by the scripts.  The per-device scripts' KEYS: the device's stream,
# bytes counter and expiry ZSET, the ZSET of queues, the total bytes.
_HELPERS = """
local function drop(stream, bytes, exp, total, id)
  redis.call('ZREM', exp, id)
  local entry = redis.call('XRANGE', stream, id, id)
  if #entry == 0 then return 0 end
  local fields, n = entry[1][2], 0
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then n = tonumber(fields[i + 1]) end
  end
  redis.call('XDEL', stream, id)
  redis.call('DECRBY', bytes, n)
  redis.call('DECRBY', total, n)
  return 1
end
local function settle(stream, bytes, exp, queues, device)
  local first = redis.call('ZRANGE', exp, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('DEL', stream, bytes, exp)
    redis.call('ZREM', queues, device)
  else
    redis.call('ZADD', queues, first[2], device)
  end
end
"""

# ARGV: device, sender, payload, size, queued_at, expires_at, max count,
# max bytes, max total bytes, now, margin.  Returns {stored (1 or 0),
# messages expired to make room}.
_PUT = _HELPERS + """
local stream, bytes, exp, queues, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local device, n, expires = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[6])
local maxn, maxb, maxt, now = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local function full()
  return redis.call('XLEN', stream) >= maxn or
         tonumber(redis.call('GET', bytes) or '0') + n > maxb or
         tonumber(redis.call('GET', total) or '0') + n > maxt
end
if n > maxb then return {0, 0} end
local expired = 0
if full() then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now)) do
    expired = expired + drop(stream, bytes, exp, total, id)
  end
  settle(stream, bytes, exp, queues, device)
  if full() then return {0, expired} end
end
local id = redis.call('XADD', stream, '*', 's', ARGV[2], 'p', ARGV[3], 'q', ARGV[5],
                      'e', ARGV[6], 'n', ARGV[4])
redis.call('INCRBY', bytes, n)
redis.call('INCRBY', total, n)
redis.call('ZADD', exp, expires, id)
local earliest = redis.call('ZSCORE', queues, device)
if not earliest or tonumber(earliest) > expires then redis.call('ZADD', queues, expires, device) end
local until_ = expires + tonumber(ARGV[11])
for _, key in ipairs({stream, bytes, exp}) do
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or tonumber(now) + ttl < until_ then redis.call('PEXPIREAT', key, until_) end
end
return {1, expired}
"""

# ARGV: device, id.  Returns 1 if the message was there.
_REMOVE = _HELPERS + """
local removed = drop(KEYS[1], KEYS[2], KEYS[3], KEYS[5], ARGV[2])
settle(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
return removed
"""

# ARGV: device.  Returns how many messages went.
_PURGE = """
local count = redis.call('XLEN', KEYS[1])
redis.call('DECRBY', KEYS[5], tonumber(redis.call('GET', KEYS[2]) or '0'))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return count
"""

# KEYS: the ZSET of queues, the total bytes.  ARGV: key prefix, now, chunk.  The per-device
# key names are built here as Keys builds them.  Returns {devices, expired}.
_SWEEP = _HELPERS + """
local prefix, now, chunk = ARGV[1], ARGV[2], tonumber(ARGV[3])
local devices = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, chunk)
local expired = 0
for _, device in ipairs(devices) do
  local stream, bytes = prefix .. 'queue:' .. device, prefix .. 'queue-bytes:' .. device
  local exp = prefix .. 'queue-exp:' .. device
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, chunk)) do
    expired = expired + drop(stream, bytes, exp, KEYS[2], id)
  end
  settle(stream, bytes, exp, KEYS[1], device)
end
return {#devices, expired}
"""


def _next_id(key: str) -> str:
    """The stream id right after C{key} ("(" ranges are Redis 6.2's; this works on 6.0)."""
    ms, _, seq = key.partition("-")
    return f"{ms}-{int(seq) + 1}"


def _entry(item: list) -> Stored:
    """A stream entry [id, [field, value, ...]] as a L{Stored}."""
    key, flat = item
    fields = dict(zip(flat[::2], flat[1::2]))
    return Stored(key.decode("ascii"), fields[b"s"].decode("utf-8"), fields[b"p"],
                  int(fields[b"q"]), int(fields[b"e"]))


@implementer(IMessageStore)
class RedisStore:
    """
    The store in the cluster's Redis, through C{call(*args)} (the node's
    L{hypertcp.cluster.redis.RedisLink}, or a command line's one-shot link):
    while Redis is away every operation fails at once.
    """

    log = Logger()

    def __init__(self, call: Callable[..., Deferred], keys: Keys, bounds: Bounds, clock: Any,
                 node_id: str = "", sweep_interval: float = 60.0) -> None:
        self.call = call
        self.keys = keys
        self.bounds = bounds
        self.clock = clock
        self.node_id = node_id or "cli"
        # The sweep lock lapses before the next round, whichever node takes it then.
        self._sweep_lock_ms = max(int(sweep_interval * 900), 100)
        self.expired = 0
        self.restarts = 0  # Redis is not ours to restart
        self._shas = {script: hashlib.sha1(script.encode()).hexdigest()
                      for script in (_PUT, _REMOVE, _PURGE, _SWEEP)}

    def _keys(self, device_id: str) -> list[str]:
        keys = self.keys
        return [keys.queue(device_id), keys.queue_bytes(device_id),
                keys.queue_expiry(device_id), keys.queues, keys.queue_total]

    def _eval(self, script: str, keys: list[str], *args: Any) -> Deferred:
        """Run a script by its digest; the first time on a Redis, by its text."""
        def unknown(failure: Any) -> Any:
            if "NOSCRIPT" not in str(failure.value):
                return failure
            return self.call("EVAL", script, len(keys), *keys, *args)
        return self.call("EVALSHA", self._shas[script], len(keys), *keys, *args).addErrback(
            unknown)

    def _now(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- IMessageStore --

    def put(self, device_id: str, sender: str, payload: bytes, queued_at: int,
            expires_at: int) -> Deferred:
        return self._eval(_PUT, self._keys(device_id), device_id, sender, payload,
                          size(sender, payload), queued_at, expires_at, *self.bounds,
                          self._now(), MARGIN_MS).addCallback(self._put)

    def put_then(self, device_id: str, sender: str, payload: bytes, queued_at: int,
                 expires_at: int, then: Callable[..., None], *args: Any) -> None:
        self.put(device_id, sender, payload, queued_at, expires_at).addBoth(then, *args)

    def _put(self, reply: list) -> int:
        stored, expired = reply
        self.expired += expired
        return Status.STORED if stored else Status.QUOTA_LIMIT

    def fetch(self, device_id: str, after: Optional[str], limit: int) -> Deferred:
        start = "-" if after is None else _next_id(after)
        return self.call("XRANGE", self.keys.queue(device_id), start, "+", "COUNT",
                         limit).addCallback(lambda items: [_entry(item) for item in items or ()])

    def remove(self, device_id: str, key: str) -> Deferred:
        return self._eval(_REMOVE, self._keys(device_id), device_id, key).addCallback(bool)

    def queues(self) -> Deferred:
        def listed(devices: list[bytes]) -> Deferred:
            names = [device.decode("utf-8") for device in devices or ()]
            waits = []
            for name in names:
                waits += [self.call("XLEN", self.keys.queue(name)),
                          self.call("GET", self.keys.queue_bytes(name)),
                          self.call("XRANGE", self.keys.queue(name), "-", "+", "COUNT", 1)]
            return DeferredList(waits, fireOnOneErrback=True, consumeErrors=True).addCallback(
                lambda results: _queues(names, [value for _, value in results]))
        return self.call("ZRANGE", self.keys.queues, 0, -1).addCallback(listed)

    def messages(self, device_id: str, limit: int) -> Deferred:
        return self.fetch(device_id, None, limit)

    def purge(self, device_id: str) -> Deferred:
        return self._eval(_PURGE, self._keys(device_id), device_id)

    def sweep(self, now: int) -> Deferred:
        """One node sweeps at a time: the one that takes the lock for this round."""
        total = 0
        rounds = 0

        def swept(reply: list) -> Any:
            nonlocal total, rounds
            devices, expired = reply
            total += expired
            self.expired += expired
            rounds += 1
            if devices < SWEEP_CHUNK or rounds >= SWEEP_ROUNDS:
                return total
            return once()

        def once() -> Deferred:
            return self._eval(_SWEEP, [self.keys.queues, self.keys.queue_total], self.keys.prefix, now,
                              SWEEP_CHUNK).addCallback(swept)

        def locked(took: Any) -> Any:
            return once() if took else 0

        return self.call("SET", self.keys.queue_sweep, self.node_id, "PX", self._sweep_lock_ms, "NX"
                         ).addCallback(locked)

    def start(self) -> None:
        """Nothing to open: the link connects (and reconnects) by itself."""

    def close(self) -> None:
        """Nothing to finish: every operation was sent to Redis when it was asked for."""


def _queues(names: list[str], values: list) -> list[Queue]:
    found = []
    for i, name in enumerate(names):
        count, counted, first = values[3 * i:3 * i + 3]
        if count:
            oldest = _entry(first[0]).queued_at if first else None
            found.append(Queue(name, int(count), int(counted or 0), oldest))
    return found
