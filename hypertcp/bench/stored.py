"""
C{hypertcp bench --qos 1}: what store and forward costs.

Three throughput runs through one server: plain messages to receivers that
are online and acknowledge (the baseline), qos-1 messages to receivers that
are online (delivered, their acknowledgement awaited), and qos-1 messages to
devices that are offline (stored: each answered STORED only once its batch
has committed).  Each counts the answers the senders get per second and the
server's CPU over the measured window, while a probe connection pings the
server every few milliseconds: its round trips show whether writing to the
store ever holds up the reactor.  Then the backlog: N messages stored for
one device, which then logs in and takes them, acknowledging each as it
reads; the drain is the time from its LOGIN to the last message.

One load-generator process drives it all from one epoll loop; its own CPU
is reported, since on a small machine it shares the cores with the server.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from typing import Any, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.peers import Broker
from hypertcp.bench.sockets import open_many, require_epoll
from hypertcp.protocol.bodies import login_body, message_body
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import HEADER, encode, response

_pack, _unpack_from = HEADER.pack, HEADER.unpack_from
RESPONSE, PING, JSON_MESSAGE = Command.RESPONSE, Command.PING, Command.JSON_MESSAGE
SUCCESS, STORED = Status.SUCCESS, Status.STORED
#: Seconds between the probe's pings.
PROBE_EVERY = 0.005
#: The store bounds of a server the bench starts: nothing it sends is over them.
UNBOUNDED = ("--set", "store.max_queued=1000000000",
             "--set", "store.max_queued_bytes=1099511627776",
             "--set", "store.max_total_bytes=1099511627776")


def _hello(token: str, device: str) -> tuple[bytes, bytes]:
    return encode(Command.LOGIN, 1, login_body(token, device)), response(1, SUCCESS, login=True)


def _frames(buf: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """The whole frames at the start of C{buf}, and the bytes they take."""
    off, end, out = 0, len(buf), []
    while end - off >= 5:
        command, msg_id, length = _unpack_from(buf, off)
        stop = off + 5 + length
        if stop > end:
            break
        out.append((command, msg_id, buf[off + 5:stop]))
        off = stop
    return out, off


class _Conn:
    __slots__ = ("sock", "inbuf", "kind", "index", "next_id")

    def __init__(self, sock: socket.socket, rest: bytes, kind: str, index: int) -> None:
        sock.setblocking(False)
        self.sock, self.inbuf, self.kind, self.index = sock, rest, kind, index
        self.next_id = 0

    def ids(self, count: int) -> list[int]:
        first = self.next_id
        self.next_id += count
        return [(first + k) % 0xFFFF + 1 for k in range(count)]


def _payload(size: int) -> dict:
    return {"bench": "qos", "pad": "x" * max(size - len('{"bench":"qos","pad":""}'), 0)}


def throughput(broker: Broker, token: str, tag: str, qos: int, online: bool,
               args: argparse.Namespace) -> dict:
    """
    C{args.pairs} senders keep C{args.window} messages each on their way to
    their own receiver (online) or to a device that is offline; the answers
    per second over the measured window, the server's CPU and the probe's
    round trips.
    """
    address = broker.address
    assert address is not None
    n = args.pairs
    receivers = open_many(address, [_hello(token, f"{tag}-r-{i}") for i in range(n)]) \
        if online else []
    senders = open_many(address, [_hello(token, f"{tag}-s-{i}") for i in range(n)])
    [(probe_sock, probe_rest, _)] = open_many(address, [_hello(token, f"{tag}-probe")])
    conns = [_Conn(s, rest, "sender", i) for i, (s, rest, _) in enumerate(senders)]
    conns += [_Conn(s, rest, "receiver", i) for i, (s, rest, _) in enumerate(receivers)]
    probe = _Conn(probe_sock, probe_rest, "probe", 0)
    conns.append(probe)
    by_fd = {c.sock.fileno(): c for c in conns}
    require_epoll()
    IN = select.EPOLLIN
    ep = select.epoll()
    for fd in by_fd:
        ep.register(fd, IN)
    # Each sender writes to its own receiver; offline, to --devices devices in turn.
    targets = n if online or not args.devices else args.devices
    bodies = [message_body(f"{tag}-r-{i}", _payload(args.payload), qos=qos)
              for i in range(targets)]
    heads = [len(body) for body in bodies]
    turn = [i % targets for i in range(n)]  # each sender's next target

    def top_up(conn: _Conn, count: int) -> None:
        if targets == n:
            body = bodies[conn.index]
            length = len(body)
            conn.sock.sendall(b"".join([_pack(JSON_MESSAGE, i, length) + body
                                        for i in conn.ids(count)]))
            return
        at, frames = turn[conn.index], []
        for i in conn.ids(count):
            frames.append(_pack(JSON_MESSAGE, i, heads[at]) + bodies[at])
            at = (at + n) % targets  # senders start apart and step by their count: all are used
        turn[conn.index] = at
        conn.sock.sendall(b"".join(frames))

    answers: dict[int, int] = {}
    counted = delivered = 0
    rtts: list[float] = []
    ping_sent: Optional[float] = None
    next_ping = 0.0
    go = time.monotonic()
    start, end = go + args.warmup, go + args.warmup + args.duration
    cpu: list[Optional[float]] = []
    own = 0.0  # this process's CPU over the measured window
    for conn in conns:
        if conn.kind == "sender":
            top_up(conn, args.window)
    while True:
        now = time.monotonic()
        if len(cpu) == 0 and now >= start:
            cpu.append(broker.cpu())
            own = time.process_time()
        if now >= end:
            cpu.append(broker.cpu())
            own = time.process_time() - own
            break
        if ping_sent is None and now >= next_ping:
            ping_sent = now
            probe.sock.sendall(_pack(PING, probe.ids(1)[0], 0))
        measuring = now >= start
        for fd, _ in ep.poll(PROBE_EVERY):
            conn = by_fd[fd]
            try:
                data = conn.sock.recv(262144)
            except BlockingIOError:
                continue
            if not data:
                raise BenchError(f"the server closed a {conn.kind} connection")
            buf = conn.inbuf + data
            frames, used = _frames(buf)
            conn.inbuf = buf[used:]
            reply = []
            answered = 0
            for command, msg_id, payload in frames:
                if command == RESPONSE:
                    if conn is probe:
                        done = time.monotonic()
                        if measuring and ping_sent is not None:
                            rtts.append(done - ping_sent)
                        ping_sent, next_ping = None, done + PROBE_EVERY
                        continue
                    answered += 1
                    if measuring:
                        status = payload[0] if payload else SUCCESS
                        answers[status] = answers.get(status, 0) + 1
                        counted += 1
                elif command == JSON_MESSAGE:
                    reply.append(_pack(RESPONSE, msg_id, 0))
                    if measuring:
                        delivered += 1
                elif command == PING:
                    reply.append(_pack(RESPONSE, msg_id, 0))
            if reply:
                conn.sock.sendall(b"".join(reply))
            if answered and conn.kind == "sender":
                top_up(conn, answered)
    ep.close()
    for conn in conns:
        conn.sock.close()
    rtts.sort()
    server_cpu = cpu[1] - cpu[0] if len(cpu) == 2 and cpu[0] is not None else None
    return {
        "msgs_per_s": counted / args.duration,
        "answers": {Status(k).name if k in Status._value2member_map_ else str(k): v
                    for k, v in sorted(answers.items())},
        "delivered": delivered,
        "server_cpu_s": server_cpu,
        "msgs_per_cpu_s": counted / server_cpu if server_cpu else None,
        "load_cpu_s": own,
        "probe_p50_ms": _percentile(rtts, 0.50),
        "probe_p99_ms": _percentile(rtts, 0.99),
        "probe_max_ms": rtts[-1] * 1000 if rtts else None,
        "probes": len(rtts),
    }


def _percentile(ordered: list[float], q: float) -> Optional[float]:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else None


def drain(broker: Broker, token: str, backlog: int, payload: int) -> dict:
    """Store C{backlog} messages for one device, then time its login to the last of them."""
    address = broker.address
    assert address is not None
    device = f"bench-drain-{int(time.time() * 1000)}"
    [(sock, rest, _)] = open_many(address, [_hello(token, f"{device}-sender")])
    sender = _Conn(sock, rest, "sender", 0)
    sender.sock.setblocking(True)
    sender.sock.settimeout(30)
    base = _payload(payload)
    stored = 0
    started = time.monotonic()
    window, sent = 256, 0
    pending = b""
    while stored < backlog:
        if sent < backlog and sent - stored < window:
            count = min(window - (sent - stored), backlog - sent)
            sender.sock.sendall(b"".join(
                encode(JSON_MESSAGE, msg_id, message_body(device, {**base, "seq": sent + k}, qos=1))
                for k, msg_id in enumerate(sender.ids(count))))
            sent += count
        data = sender.sock.recv(262144)
        if not data:
            raise BenchError("the server closed the sender")
        frames, used = _frames(pending + data)
        pending = (pending + data)[used:]
        for command, _, status in frames:
            if command == RESPONSE:
                if (status[0] if status else SUCCESS) != STORED:
                    raise BenchError(f"storing the backlog: answered {status!r}, not STORED; "
                                     "is [store] max_queued at least the backlog?")
                stored += 1
    store_s = time.monotonic() - started
    sender.sock.close()
    # The device: connect, log in, take and acknowledge everything.
    got: list[int] = []
    sock = socket.create_connection(address, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.monotonic()
    sock.sendall(encode(Command.LOGIN, 1, login_body(token, device)))
    pending = b""
    while len(got) < backlog:
        data = sock.recv(262144)
        if not data:
            raise BenchError(f"the server closed the device after {len(got)} messages")
        frames, used = _frames(pending + data)
        pending = (pending + data)[used:]
        acks = []
        for command, msg_id, body in frames:
            if command == JSON_MESSAGE:
                acks.append(_pack(RESPONSE, msg_id, 0))
                got.append(json.loads(body)["payload"]["seq"])
            elif command == PING:
                acks.append(_pack(RESPONSE, msg_id, 0))
        if acks:
            sock.sendall(b"".join(acks))
    elapsed = time.monotonic() - t0
    sock.close()
    return {"backlog": backlog, "store_s": store_s, "drain_s": elapsed,
            "drain_msgs_per_s": backlog / elapsed, "in_order": got == sorted(got),
            "duplicated": len(got) - len(set(got))}


def run(args: argparse.Namespace) -> None:
    """The whole C{--qos 1} run: start (or use) a server, measure, show."""
    from hypertcp.bench.peers import start_hypertcp

    if args.pairs < 1 or args.window < 1 or args.queued < 1 or (
            args.devices is not None and args.devices < 1):
        raise BenchError("--pairs, --window, --queued and --devices must be at least 1")
    if args.port is not None:
        if not args.token:
            raise BenchError("a running server needs --token (a fleet token)")
        broker = Broker("HyperTCP", None, (args.host, args.port), args.server_pid)
        token = args.token
    else:
        broker = start_hypertcp([*UNBOUNDED, *args.server_arg])
        token = broker.proto.token
    figures: dict[str, Any] = {}
    try:
        stamp = int(time.time())
        for name, qos, online in (("plain", 0, True), ("qos_online", 1, True),
                                  ("stored", 1, False)):
            if not args.quiet:
                print(f"hypertcp bench --qos 1: {name} ...", file=sys.stderr, flush=True)
            figures[name] = throughput(broker, token, f"bench-{name}-{stamp}", qos, online, args)
        if not args.quiet:
            print(f"hypertcp bench --qos 1: a backlog of {args.queued:,} ...", file=sys.stderr,
                  flush=True)
        figures["drain"] = drain(broker, token, args.queued, args.payload)
        figures["memory"] = broker.memory()
    finally:
        broker.stop()
    plain = figures["plain"]["msgs_per_s"]
    figures["stored_to_plain"] = figures["stored"]["msgs_per_s"] / plain if plain else None
    figures["stored_to_plain_per_cpu"] = (
        figures["stored"]["msgs_per_cpu_s"] / figures["plain"]["msgs_per_cpu_s"]
        if figures["stored"]["msgs_per_cpu_s"] and figures["plain"]["msgs_per_cpu_s"] else None)
    show(args, figures)


ROWS = [("msgs_per_s", "answers/s", "{:,.0f}"), ("server_cpu_s", "server CPU s", "{:.2f}"),
        ("msgs_per_cpu_s", "msgs per server CPU s", "{:,.0f}"),
        ("load_cpu_s", "load generator CPU s", "{:.2f}"),
        ("probe_p50_ms", "probe ping p50 ms", "{:.2f}"),
        ("probe_p99_ms", "probe ping p99 ms", "{:.2f}"),
        ("probe_max_ms", "probe ping max ms", "{:.2f}")]


def show(args: argparse.Namespace, figures: dict) -> None:
    if args.json:
        print(json.dumps({"scenario": {"pairs": args.pairs, "window": args.window,
                                       "payload": args.payload, "duration": args.duration,
                                       "warmup": args.warmup, "queued": args.queued,
                                       "devices": args.devices or args.pairs},
                          **figures}, indent=2))
        return
    print(f"{args.pairs} senders, window {args.window} each, {args.payload}-byte payload, "
          f"{args.duration:g} s after {args.warmup:g} s warm-up; stored for "
          f"{args.devices or args.pairs} offline devices")
    runs = [("plain", "plain, online"), ("qos_online", "qos 1, online"),
            ("stored", "qos 1, offline: stored")]
    lines = [["", *[label for _, label in runs]]]
    for key, label, fmt in ROWS:
        lines.append([label, *["-" if figures[name].get(key) is None
                               else fmt.format(figures[name][key]) for name, _ in runs]])
    lines.append(["answers", *[" ".join(f"{k}={v:,}" for k, v in figures[name]["answers"].items())
                               for name, _ in runs]])
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    for row in lines:
        print("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                        for i, cell in enumerate(row)).rstrip())
    ratio, per_cpu = figures["stored_to_plain"], figures["stored_to_plain_per_cpu"]
    print(f"stored / plain: {ratio:.2f}x answers/s" + (
        f", {per_cpu:.2f}x per server CPU s" if per_cpu else "") + " (target >= 0.5x)")
    d = figures["drain"]
    print(f"backlog of {d['backlog']:,}: stored in {d['store_s']:.2f} s, drained in "
          f"{d['drain_s']:.2f} s ({d['drain_msgs_per_s']:,.0f} msgs/s; target < 5 s), "
          f"{'in order' if d['in_order'] else 'OUT OF ORDER'}, {d['duplicated']} duplicated")
