"""
This node in the cluster: its registration, its view of the others, and
the traffic between them.

Everything a session here sends to a device on another node goes into that
node's outbox; once per reactor turn each outbox is published, as one
batch, on the node's inbox channel.  The number of subscribers PUBLISH
reports tells whether the node was there to take it: a sender gets SUCCESS
when it was, DEVICE_NOT_IN_NETWORK when the node has gone, and
SERVER_EXCEPTION while Redis itself cannot be reached.  Broadcasts,
presence events and telemetry go once on the channel every node hears.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Iterator, Optional, Union

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from hypertcp.cluster import envelopes as env
from hypertcp.cluster.directory import Directory, RemotePeer
from hypertcp.cluster.keys import Keys
from hypertcp.cluster.tokens import ClusterTokens
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.jsoncodec import dumps, loads
from hypertcp.server.hub import Hub, first_delivery
from hypertcp.server.interfaces import IPeer, IRemote

JSON_MESSAGE, BROADCAST = Command.JSON_MESSAGE, Command.BROADCAST
DELIVER = env.DELIVER
SUCCESS, GONE, BUS_DOWN = Status.SUCCESS, Status.DEVICE_NOT_IN_NETWORK, Status.SERVER_EXCEPTION
CONNECTED = 1
#: Renewals between full resyncs of the directory and the tokens.
RESYNC_BEATS = 30

#: Forget a node whose registration ran out -- unless it registered again
#: since it was found missing (restarted under the same id): its new device
#: list must stay.
FORGET = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
"""


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Published:
    """
    The status of every plain delivery in one outbox's batch: SUCCESS once
    its PUBLISH has reached the node, DEVICE_NOT_IN_NETWORK when no node
    listens there any more, SERVER_EXCEPTION while Redis cannot be reached.
    One per batch instead of a Deferred per message (which cost as much as
    the rest of the message's way): callers add C{addCallback(f, *args)} as
    to a Deferred, and each C{f(status, *args)} is called once.
    """

    __slots__ = ("status", "_callbacks")

    log = Logger()

    def __init__(self, status: Optional[int] = None) -> None:
        self.status = status
        self._callbacks: list[tuple[Callable[..., Any], tuple]] = []

    def addCallback(self, f: Callable[..., Any], *args: Any) -> "Published":
        if self.status is None:
            self._callbacks.append((f, args))
        else:
            f(self.status, *args)
        return self

    def fire(self, status: int) -> None:
        self.status = status
        callbacks, self._callbacks = self._callbacks, []
        for f, args in callbacks:
            try:
                f(status, *args)
            except Exception:
                # One sender's fault must not leave the others of the batch unanswered.
                self.log.failure("cluster: answering a published batch")


class _Outbox:
    """What is waiting for one channel's next PUBLISH."""

    __slots__ = ("items", "waiters", "plain")

    def __init__(self) -> None:
        self.items: list[bytes] = []
        # (deferred, ref): ref 0 for a command, else an acked delivery's.
        self.waiters: list[tuple[Deferred, int]] = []
        #: The plain deliveries' shared answer, made with the first of them.
        self.plain: Optional[Published] = None


@implementer(IRemote)
class ClusterNode:
    """
    The cluster as this node's hub sees it (L{IRemote}), kept over a bus
    with C{call(*args)} and C{publish(channel, data)} (L{RedisLink}), which
    calls L{bus_up}, L{bus_down} and L{received}.
    """

    log = Logger()

    def __init__(self, hub: Hub, node_id: str, address: Callable[[], Optional[tuple[str, int]]],
                 keys: Keys, clock: Any, ttl: float = 5.0, refresh: float = 1.0,
                 tls: bool = False, writes: Any = None) -> None:
        self.hub = hub
        #: The server's write batch: what one batch from the bus makes goes out one write per peer.
        self.writes = writes
        self.id = node_id
        self.address = address
        self.keys = keys
        self.clock = clock
        self.ttl = ttl
        self.refresh = refresh
        self.tls = tls
        self.bus: Any = None
        self.up = False
        self.directory = Directory()
        #: The other nodes alive at the last look at the registry, with their registrations.
        self.nodes: dict[str, dict] = {}
        #: Called after each look at the registry, and when a node leaves: a balancer's hook.
        self.watchers: list[Callable[[], None]] = []
        self.started = time.time()
        self.inbox = keys.inbox(node_id)
        self._outboxes: dict[str, _Outbox] = {}
        self._flush_call: Any = None
        self._acks: dict[int, Deferred] = {}
        #: For each node whose connection list is being read (the number of
        #: reads on their way), the presence changes heard from it meanwhile.
        self._reading: dict[str, tuple[int, list[tuple[bool, str, str, str]]]] = {}
        self._ref = 0
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = clock
        #: Keeps the token file a copy of the cluster's tokens, when they are shared.
        self.tokens: Optional[ClusterTokens] = None
        self._beats = 0
        hub.remote = self

    @property
    def channels(self) -> list[str]:
        return [self.inbox, self.keys.everyone]

    # -- joining and leaving --

    def start(self, bus: Any) -> None:
        self.bus = bus
        self._beat.start(self.refresh, now=False)

    def stop(self) -> Optional[Deferred]:
        """Leave cleanly: others forget this node's devices now, not at the TTL."""
        if self._beat.running:
            self._beat.stop()
        if not self.up:
            return None
        self._queue(self.keys.everyone, env.GONE, 0, "", b"")
        self._flush()
        return DeferredList([self.bus.call("DEL", self.keys.node(self.id), self.keys.devices(self.id)),
                             self.bus.call("SREM", self.keys.nodes, self.id)], consumeErrors=True)

    def bus_up(self) -> None:
        """Redis is reachable (again): say who is here, and learn who is elsewhere."""
        self.up = True
        self._write_mine()
        self._heartbeat(resync=True)
        self._sync_tokens()

    def _write_mine(self) -> None:
        """Write this node's whole list of connections, replacing what Redis held."""
        fields: list[Any] = []
        for peer in list(self.hub.sessions):
            fields += [self._field(peer), peer.token.owner.encode("utf-8")]
        mine, call = self.keys.devices(self.id), self.bus.call
        # One transaction: a node reading the list meanwhile sees the old or the new, whole.
        for command in (("MULTI",), ("DEL", mine), ("HSET", mine, *fields) if fields else None):
            if command is not None:
                call(*command).addErrback(self._failed)
        # Then the others read it again: after Redis came back empty, they
        # would otherwise wait for their next resync to find these devices.
        call("EXEC").addCallbacks(lambda _: self._queue(self.keys.everyone, env.JOINED, 0, "", b""),
                                  self._failed)

    def bus_down(self) -> None:
        self.up = False

    def _field(self, peer: Any) -> bytes:
        return f"{peer.device_id}\0{peer.peer}".encode("utf-8")

    def registration(self) -> dict:
        """This node as the registry shows it to the others."""
        address = self.address()
        return {"id": self.id, "address": f"{address[0]}:{address[1]}" if address else None,
                "tls": self.tls, "sessions": len(self.hub.sessions),
                "devices": len(self.hub.devices), "draining": self.hub.draining is not None,
                "pid": os.getpid(), "started": self.started, "beat": self._beats}

    def _register_now(self) -> None:
        """Renew the registration now, not at the next beat: a drain shows at once."""
        if self.up:
            self._register()

    def _register(self) -> None:
        self.bus.call("SET", self.keys.node(self.id), dumps(self.registration()),
                      "PX", int(self.ttl * 1000)).addErrback(self._failed)

    def _sync_tokens(self) -> None:
        if self.tokens is not None and self.up:
            self.tokens.sync(self.bus.call).addErrback(self._failed)

    def _heartbeat(self, resync: bool = False) -> None:
        """Renew this node's registration, and notice nodes that came or went."""
        if not self.up:
            return
        self._beats += 1
        if self._beats % RESYNC_BEATS == 0:
            # Pub/sub loses what is sent while a subscriber reconnects, and a
            # write can be lost to a Redis failover: now and then, write and
            # take the whole picture again.
            resync = True
            self._write_mine()
            self._sync_tokens()
        bus = self.bus
        self._register()
        bus.call("SADD", self.keys.nodes, self.id).addErrback(self._failed)
        bus.call("SMEMBERS", self.keys.nodes).addCallback(self._members, resync).addErrback(
            self._failed)

    def _members(self, members: list[bytes], resync: bool) -> Optional[Deferred]:
        others = sorted(m.decode("utf-8") for m in members if m.decode("utf-8") != self.id)
        if not others:
            self._seen({}, resync)
            return None
        return self.bus.call("MGET", *[self.keys.node(n) for n in others]).addCallback(
            lambda values: self._seen(
                {n: r for n, r in zip(others, map(self._parse_registration, values))
                 if r is not None}, resync,
                dead=[n for n, v in zip(others, values) if v is None]))

    def _parse_registration(self, raw: Optional[bytes]) -> Optional[dict]:
        if raw is None:
            return None
        try:
            registration = loads(raw)
        except ValueError:
            registration = None
        if not isinstance(registration, dict):
            self.log.error("cluster: a registration that is not ours in Redis: {raw!r}",
                           raw=raw[:100])
            return None
        return registration

    def _seen(self, alive: dict[str, dict], resync: bool, dead: Optional[list[str]] = None) -> None:
        for node in dead or ():
            # Its registration ran out: it died, or lost Redis for longer than the TTL.
            self.bus.call("EVAL", FORGET, 3, self.keys.node(node), self.keys.nodes,
                          self.keys.devices(node), node).addErrback(self._failed)
        for node in set(self.nodes) - set(alive):
            self._node_gone(node, "its registration expired")
        # A node that restarted under the same id (a worker the monitor
        # restarted) is new too: what this node knew of it died with it.
        new = [node for node in alive if node not in self.nodes
               or _incarnation(alive[node]) != _incarnation(self.nodes[node])]
        self.nodes = alive
        for node in (alive if resync else new):
            self._sync(node)
        self._changed()

    def _sync(self, node: str) -> None:
        """Replace what this node knows of C{node}'s connections with what Redis holds."""
        count, heard = self._reading.get(node, (0, []))
        self._reading[node] = (count + 1, heard)

        def got(fields: list[bytes]) -> None:
            if node not in self.nodes:
                return
            peers = []
            for field, owner in zip(fields[::2], fields[1::2]):
                device_id, _, client_id = field.decode("utf-8").partition("\0")
                peers.append((device_id, client_id, owner.decode("utf-8")))
            came, gone = self.directory.replace(node, peers, heard)
            for peer in came:
                self._tell_observers("deviceConnected", peer)
            for peer in gone:
                self._tell_observers("deviceDisconnected", peer)

        def done(result: Any) -> Any:
            left = self._reading[node][0] - 1
            if left:
                self._reading[node] = (left, heard)
            else:
                del self._reading[node]
            return result

        self.bus.call("HGETALL", self.keys.devices(node)).addCallback(got).addBoth(
            done).addErrback(self._failed)

    def _changed(self) -> None:
        for watcher in self.watchers:
            watcher()

    def _node_gone(self, node: str, why: str) -> None:
        if self.nodes.pop(node, None) is not None:
            self._changed()
        peers = self.directory.forget(node)
        if peers:
            self.log.warn("cluster: node {node} has gone ({why}); its {count} connections with it",
                          node=node, why=why, count=len(peers))
        for peer in peers:
            self._tell_observers("deviceDisconnected", peer)

    def _tell_observers(self, event: str, peer: RemotePeer) -> None:
        if self.hub.observers:
            self.hub.to_observers(self.hub._event(event, peer))

    def _failed(self, failure: Any) -> None:
        """A command lost to Redis going away: RedisLink says so once, and the resync mends it."""

    # -- IRemote: what the hub asks of the cluster --

    def holds(self, device_id: str) -> bool:
        return self.directory.holds(device_id)

    def route(self, sender_id: str, target: str, body: bytes,
              ack: bool) -> Union[Deferred, Published, None]:
        nodes = self.directory.nodes_of(target)
        if not nodes:
            return None
        if len(nodes) == 1:
            for node in nodes:
                return self._send(node, target, body, ack)
        return first_delivery([self._send(node, target, body, ack) for node in nodes])

    def _send(self, node: str, target: str, body: bytes, ack: bool) -> Union[Deferred, Published]:
        if not self.up:
            return Published(BUS_DOWN)
        if not ack:
            box = self._box(self.keys.inbox(node))
            box.items.append(env.encode_item(env.DELIVER, 0, target, body))
            plain = box.plain
            if plain is None:
                plain = box.plain = Published()
            return plain
        d: Deferred = Deferred()
        ref = self._ref = self._ref % env.MAX_REF + 1
        self._acks[ref] = d
        # The receiving node answers TIMEOUT after its own ack timeout;
        # this one covers a node that dies meanwhile.
        d.addTimeout(self.hub.ack_timeout + 2 * self.refresh, self.clock,
                     onTimeoutCancel=lambda *_: Status.TIMEOUT)
        d.addBoth(self._forget_ack, ref)
        self._queue(self.keys.inbox(node), env.DELIVER_ACKED, ref, target, body, d)
        return d

    def _forget_ack(self, result: Any, ref: int) -> Any:
        self._acks.pop(ref, None)
        return result

    def broadcast(self, body: bytes) -> None:
        if self.up:
            self._queue(self.keys.everyone, env.BROADCAST, 0, "", body)

    def presence(self, event: str, peer: IPeer, body: bytes) -> None:
        if not self.up:
            return  # the resync when Redis is back writes the whole list
        field, mine = self._field(peer), self.keys.devices(self.id)
        connected = event == "deviceConnected"
        owner = peer.token.owner
        if connected:
            self.bus.call("HSET", mine, field, owner.encode("utf-8")).addErrback(self._failed)
        else:
            self.bus.call("HDEL", mine, field).addErrback(self._failed)
        self._queue(self.keys.everyone, env.PRESENCE, CONNECTED if connected else 0,
                    f"{peer.device_id}\0{peer.peer}\0{owner}", body)

    def telemetry(self, body: bytes) -> None:
        if self.up:
            self._queue(self.keys.everyone, env.TELEMETRY, 0, "", body)

    def peers(self) -> Iterator[RemotePeer]:
        return self.directory.peers()

    def owner(self, device_id: str) -> Optional[str]:
        return self.directory.owner_of(device_id)

    def elsewhere(self) -> int:
        return len(self.directory)

    def command(self, device_id: str, op: dict) -> int:
        nodes = self.directory.nodes_of(device_id)
        if not self.up:
            return 0
        for node in nodes:
            self._queue(self.keys.inbox(node), env.COMMAND, 0, device_id, dumps(op))
        return sum(nodes.values())

    def command_node(self, node_id: str, op: dict) -> Deferred:
        """
        Ask the node C{node_id} itself (not a device's nodes) to run C{op}: a
        Deferred of SUCCESS once it has it, DEVICE_NOT_IN_NETWORK when no
        such node listens, SERVER_EXCEPTION while the bus is down.
        """
        d: Deferred = Deferred()
        if node_id == self.id:
            self._command("", op)
            d.callback(SUCCESS)
        elif not self.up:
            d.callback(BUS_DOWN)
        else:
            self._queue(self.keys.inbox(node_id), env.COMMAND, 0, "", dumps(op), d)
        return d

    def stats(self) -> dict:
        return {"node": self.id, "bus": "up" if self.up else "down",
                "nodes": len(self.nodes) + 1, "elsewhere": {
                    "sessions": len(self.directory), "devices": self.directory.devices()}}

    # -- the outboxes --

    def _box(self, channel: str) -> _Outbox:
        """The outbox of C{channel}, published at the end of this reactor turn."""
        box = self._outboxes.get(channel)
        if box is None:
            box = self._outboxes[channel] = _Outbox()
            if self._flush_call is None:
                self._flush_call = self.clock.callLater(0, self._flush)
        return box

    def _queue(self, channel: str, kind: int, ref: int, target: str, body: bytes,
               waiter: Optional[Deferred] = None) -> None:
        box = self._box(channel)
        box.items.append(env.encode_item(kind, ref, target, body))
        if waiter is not None:
            box.waiters.append((waiter, ref))

    def _flush(self) -> None:
        """One PUBLISH per channel for everything queued this turn."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        boxes, self._outboxes = self._outboxes, {}
        for channel, box in boxes.items():
            batch = env.encode_batch(self.id, box.items)
            self.bus.publish(channel, batch).addCallbacks(
                self._published, self._unpublished, (box,), None, (box,))

    def _published(self, receivers: int, box: _Outbox) -> None:
        with self._batched():
            if box.plain is not None:
                box.plain.fire(SUCCESS if receivers else GONE)  # GONE: no node listens there
            for d, ref in box.waiters:
                if d.called:
                    continue
                if not receivers:
                    d.callback(GONE)
                elif not ref:
                    d.callback(SUCCESS)
                # An acked delivery now waits for the receiving node's ACK.

    def _unpublished(self, failure: Any, box: _Outbox) -> None:
        with self._batched():
            if box.plain is not None:
                box.plain.fire(BUS_DOWN)
            for d, _ in box.waiters:
                if not d.called:
                    d.callback(BUS_DOWN)

    def _batched(self) -> ContextManager[None]:
        """Hold what sessions are sent meanwhile, and write it once per peer at the end."""
        return nullcontext() if self.writes is None else self.writes.holding()

    # -- what arrives --

    def received(self, channel: bytes, data: bytes) -> None:
        try:
            origin, items = env.decode_batch(data)
        except ValueError as e:
            self.log.error("cluster: a malformed batch on {channel}: {error}",
                           channel=channel.decode("utf-8", "replace"), error=str(e))
            return
        if origin == self.id:
            return  # our own, on the channel everyone hears; anything else, even from the CLI, counts
        with self._batched():
            self._received(origin, items)

    def _received(self, origin: str, items: list[env.Item]) -> None:
        hub = self.hub
        for item in items:
            kind = item[0]  # by index: a NamedTuple's attributes cost more, per message
            if kind == DELIVER:
                hub.deliver_here(item[2], JSON_MESSAGE, item[3])
            elif kind == env.DELIVER_ACKED:
                self._deliver_acked(origin, item)
            elif kind == env.ACK:
                d = self._acks.get(item.ref)
                if d is not None and not d.called:
                    d.callback(item.body[0] if item.body else SUCCESS)
            elif kind == env.BROADCAST:
                hub.broadcast_here(item.body)
            elif kind == env.PRESENCE:
                device_id, client_id, owner = item.target.split("\0", 2)
                if item.ref == CONNECTED:
                    self.directory.add(origin, device_id, client_id, owner)
                else:
                    self.directory.remove(origin, client_id)
                reading = self._reading.get(origin)
                if reading is not None:  # a list read may be older than this change
                    reading[1].append((item.ref == CONNECTED, device_id, client_id, owner))
                if hub.observers:
                    hub.to_observers(item.body)
            elif kind == env.TELEMETRY:
                if hub.observers:
                    hub.to_observers(item.body)
            elif kind == env.COMMAND:
                try:
                    op = loads(item.body)
                except ValueError:
                    op = None
                if isinstance(op, dict):
                    self._command(item.target, op)
                else:
                    self.log.error("cluster: a malformed command from {origin}", origin=origin)
            elif kind == env.GONE:
                self._node_gone(origin, "it left")
            elif kind == env.TOKENS:
                self._sync_tokens()
            elif kind == env.JOINED:
                if origin in self.nodes:
                    self._sync(origin)

    def _deliver_acked(self, origin: str, item: env.Item) -> None:
        reply = self.keys.inbox(origin)
        d = self.hub.deliver_here_acked(item.target, item.body)
        if d is None:
            self._queue(reply, env.ACK, item.ref, "", bytes((GONE,)))
            return
        d.addCallback(lambda status: self._queue(reply, env.ACK, item.ref, "", bytes((status,))))

    def _command(self, device_id: str, op: dict) -> None:
        name = op.get("op")
        if name == "kick":
            self.hub.kick_here(device_id, str(op.get("reason") or "kicked by an operator"))
        elif name == "redirect":
            self.hub.redirect_here(device_id, op["server"], op["port"], bool(op.get("tls")))
        elif name == "drain" and not device_id:
            host, port = op.get("server"), op.get("port")
            if not isinstance(host, str) or type(port) is not int:
                self.log.warn("cluster: a drain command without server and port: {op!r}", op=op)
                return
            self.hub.drain(host, port, bool(op.get("tls")))
            self._register_now()
        elif name == "undrain" and not device_id:
            self.hub.draining = None
            self.log.info("cluster: undrained through the registry: taking devices again")
            self._register_now()
        else:
            self.log.warn("cluster: unknown command {op!r} for {device}", op=name, device=device_id)


def _incarnation(registration: Any) -> Any:
    """What tells one run of a node from the next under the same id."""
    if not isinstance(registration, dict):
        return None
    return registration.get("pid"), registration.get("started")
