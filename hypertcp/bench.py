"""
C{hypertcp bench}: how many messages a broker moves, how late, at what cost.

N sender->receiver pairs push messages through a broker: our server, Debian's
Mosquitto over MQTT 3.1.1 QoS 0 for comparison, or a sink that costs nothing
(each sender's socket is connected straight to its receiver's), which is how
the load generator states its own ceiling.  Every message carries its
sequence number and send time, so the receiving end counts what was lost or
duplicated and how late it came.  The load generator is raw non-blocking
sockets and an epoll loop writing many frames per send(); C{--procs} spreads
it over processes, so it is not the bottleneck it measures.

C{--idle N} measures the other cost of a broker for devices: N logged-in
connections that only heartbeat, and the server memory and CPU they take.

docs/performance.rst has the method and the figures.
"""

from __future__ import annotations

import argparse
import array
import errno
import json
import multiprocessing
import os
import re
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Optional

from hypertcp.wire import HEADER, Command, Status, encode, response

MOSQUITTO = "/usr/sbin/mosquitto"
LISTENING = re.compile(r"HyperTCP tcp listening on ([\d.]+):(\d+)")
RECV_SIZE = 256 * 1024
DRAIN = 5.0  # seconds after the run for what is in flight to arrive
CLK_TCK = os.sysconf("SC_CLK_TCK")

IN, OUT = select.EPOLLIN, select.EPOLLOUT
_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


class BenchError(Exception):
    """A run that cannot go on; the message says why."""


# -- the message: its sequence number and send time at fixed offsets --

SEQ_KEY = b'"seq":"'
_SEQ = len(SEQ_KEY)
_TS = _SEQ + 10 + len(b'","ts":"')


def payload_template(size: int) -> bytes:
    """
    The application payload, a JSON object of exactly C{size} bytes with
    C{%d} holes for the sequence number and the send time (monotonic ns).
    Both are fixed-width strings, so a receiver finds them with one
    C{bytes.find} instead of parsing JSON, whatever the broker did to the
    message around them.
    """
    head = b'{"seq":"%010d","ts":"%019d","pad":"'
    fixed = len(head % (0, 0)) + len(b'"}')
    if size < fixed:
        raise BenchError(f"--payload must be at least {fixed} bytes")
    return head + b"x" * (size - fixed) + b'"}'


def _literal(data: bytes) -> bytes:
    """Fixed bytes made safe to put in a %-template."""
    return data.replace(b"%", b"%%")


def _frame_template(command: int, body: bytes) -> bytes:
    """
    A whole HyperTCP frame as one %-template: C{%c%c} for the msg_id, then
    C{body}'s own holes.  Filling it is one operation per message.
    """
    length = len(body % (0, 0))
    return _literal(bytes((command,))) + b"%c%c" + _literal(struct.pack("!H", length)) + body


def _varint(n: int) -> bytes:
    """An MQTT remaining length."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


# -- protocols: how to log in, what a message looks like, how to read one --

class HyperTCP:
    """Our protocol: a fleet token lets every connection name its device id."""

    name = "hypertcp"

    def __init__(self, token: str) -> None:
        self.token = token

    def hello(self, device: str, receiver: bool) -> bytes:
        body = json.dumps({"token": self.token, "device_id": device}).encode()
        return encode(Command.LOGIN, 1, body)

    def welcome(self, receiver: bool) -> bytes:
        return response(1, Status.SUCCESS, login=True)

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        prefix = _literal(b'{"targetId":"%s","payload":' % receiver.encode())
        return _frame_template(Command.JSON_MESSAGE, prefix + inner + b"}")

    @staticmethod
    def batch(template: bytes, seq: int, count: int, ts: int, step: int) -> bytes:
        return b"".join([template % (*divmod(s % 0xFFFF + 1, 256), s, ts + (s - seq) * step)
                         for s in range(seq, seq + count)])

    def heartbeat(self, msg_id: int) -> bytes:
        return _pack(Command.PING, msg_id, 0)

    @staticmethod
    def receive(pair: "Pair", buf: bytes, now: int, lat: Any, out: list, ack: bool) -> int:
        """
        Read delivered frames off a receiver's stream: count them, note their
        latency (C{lat} is None outside the measured window) and queue the
        acknowledgements.  Returns the bytes consumed.
        """
        off, end = 0, len(buf)
        find = buf.find
        expected = pair.expected
        unique = dups = bad = 0
        while end - off >= 5:
            command, msg_id, length = _unpack_from(buf, off)
            start = off + 5
            stop = start + length
            if stop > end:
                break
            if command == 30 or command == 50:
                k = find(SEQ_KEY, start, stop)
                if k < 0:
                    bad += 1
                else:
                    seq = int(buf[k + _SEQ:k + _SEQ + 10])
                    if seq >= expected:
                        expected = seq + 1
                        unique += 1
                        if lat is not None:
                            lat.append(now - int(buf[k + _TS:k + _TS + 19]))
                    else:
                        dups += 1
                if ack:
                    out.append(_pack(0, msg_id, 0))
            elif command == 6:
                out.append(_pack(0, msg_id, 0))
            off = stop
        pair.expected = expected
        pair.unique += unique
        pair.dups += dups
        pair.bad += bad
        return off

    @staticmethod
    def answers(pair: Optional["Pair"], buf: bytes, out: list) -> tuple[int, int]:
        """
        Read the server's answers to a sender (or to a heartbeating device),
        answer its pings; return the bytes consumed and the answers read.
        """
        off, end = 0, len(buf)
        refused = answered = 0
        while end - off >= 5:
            command, msg_id, length = _unpack_from(buf, off)
            stop = off + 5 + length
            if stop > end:
                break
            if command == 0:
                answered += 1
                if length and buf[off + 5] != Status.SUCCESS:
                    refused += 1
            elif command == 6:
                out.append(_pack(0, msg_id, 0))
            off = stop
        if pair is not None:
            pair.refused += refused
        return off, answered


class Sink(HyperTCP):
    """
    No broker at all: a sender's socket is connected to its receiver's, and
    it writes frames already in the delivered form.  The load generator's
    work per message is the same as through a broker, so this run is its
    own ceiling.
    """

    name = "sink"

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        prefix = _literal(b'{"from":"%s","payload":' % sender.encode())
        return _frame_template(Command.JSON_MESSAGE, prefix + inner + b"}")


class MQTT:
    """MQTT 3.1.1 at QoS 0, one topic per receiving device: the few packets needed."""

    name = "mosquitto"
    CONNACK = b"\x20\x02\x00\x00"
    SUBACK = b"\x90\x03\x00\x01\x00"
    PINGREQ = b"\xc0\x00"

    def __init__(self, keepalive: int = 0) -> None:
        self.keepalive = keepalive

    def hello(self, device: str, receiver: bool) -> bytes:
        body = (_mqtt_string("MQTT") + bytes((4, 0x02)) + struct.pack("!H", self.keepalive)
                + _mqtt_string(device))
        connect = b"\x10" + _varint(len(body)) + body
        if not receiver:
            return connect
        body = b"\x00\x01" + _mqtt_string(f"bench/{device}") + b"\x00"
        return connect + b"\x82" + _varint(len(body)) + body

    def welcome(self, receiver: bool) -> bytes:
        return self.CONNACK + self.SUBACK if receiver else self.CONNACK

    def template(self, sender: str, receiver: str, inner: bytes) -> bytes:
        topic = _mqtt_string(f"bench/{receiver}")
        length = len(topic) + len(inner % (0, 0))
        return _literal(b"\x30" + _varint(length) + topic) + inner

    @staticmethod
    def batch(template: bytes, seq: int, count: int, ts: int, step: int) -> bytes:
        return b"".join([template % (s, ts + (s - seq) * step) for s in range(seq, seq + count)])

    def heartbeat(self, msg_id: int) -> bytes:
        return self.PINGREQ

    @staticmethod
    def receive(pair: "Pair", buf: bytes, now: int, lat: Any, out: list, ack: bool) -> int:
        off, end = 0, len(buf)
        find = buf.find
        expected = pair.expected
        unique = dups = bad = 0
        while end - off >= 2:
            first = buf[off]
            length = buf[off + 1]
            i = off + 2
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if i >= end:
                        length = -1
                        break
                    digit = buf[i]
                    i += 1
                    length |= (digit & 0x7F) << shift
                    if not digit & 0x80:
                        break
                    shift += 7
                if length < 0:
                    break
            stop = i + length
            if stop > end:
                break
            if first & 0xF0 == 0x30:
                k = find(SEQ_KEY, i, stop)
                if k < 0:
                    bad += 1
                else:
                    seq = int(buf[k + _SEQ:k + _SEQ + 10])
                    if seq >= expected:
                        expected = seq + 1
                        unique += 1
                        if lat is not None:
                            lat.append(now - int(buf[k + _TS:k + _TS + 19]))
                    else:
                        dups += 1
            off = stop
        pair.expected = expected
        pair.unique += unique
        pair.dups += dups
        pair.bad += bad
        return off

    @staticmethod
    def answers(pair: Optional["Pair"], buf: bytes, out: list) -> tuple[int, int]:
        # QoS 0 publishes are never answered; only PINGRESP (2 bytes) comes.
        return len(buf) - len(buf) % 2, len(buf) // 2


# -- connections --

class Conn:
    """One socket of the load generator and what is half-read or unsent on it."""

    __slots__ = ("sock", "fd", "pair", "receiver", "inbuf", "outbuf", "open")

    def __init__(self, sock: socket.socket, pair: Optional["Pair"], receiver: bool,
                 inbuf: bytes = b"") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.pair = pair
        self.receiver = receiver
        self.inbuf = inbuf
        self.outbuf = b""
        self.open = True


class Pair:
    """A sender and its receiver, and the count of what went between them."""

    __slots__ = ("index", "sender", "receiver", "template", "sent", "expected", "unique",
                 "dups", "bad", "refused")

    def __init__(self, index: int, template: bytes) -> None:
        self.index = index
        self.template = template
        self.sent = self.expected = self.unique = 0
        self.dups = self.bad = self.refused = 0


def raise_nofile(needed: int = 0) -> int:
    """
    Raise the open-file limit to the hard limit (children and the servers we
    start inherit it); fail early if even that is too low for C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise BenchError(f"{needed} file descriptors needed, the hard limit is {hard}; "
                         "raise it (ulimit -Hn, or LimitNOFILE= for a service)")
    return hard


def open_many(address: tuple[str, int], greetings: list[tuple[bytes, bytes]],
              concurrency: int = 200, timeout: float = 300.0) -> list[tuple[socket.socket, bytes]]:
    """
    Connect one socket per (hello, welcome), send C{hello} and wait for
    exactly C{welcome}.  At most C{concurrency} are in progress at once, so a
    10,000-connection fleet does not overflow the server's listen backlog.
    Returns each socket with whatever came after its welcome.
    """
    results: list[Any] = [None] * len(greetings)
    ep = select.epoll()
    pending: dict[int, list] = {}
    started = done = 0
    deadline = time.monotonic() + timeout
    try:
        while done < len(greetings):
            while started < len(greetings) and len(pending) < concurrency:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                err = sock.connect_ex(address)
                if err not in (0, errno.EINPROGRESS):
                    raise BenchError(f"cannot connect to {address[0]}:{address[1]}: "
                                     f"{os.strerror(err)}")
                pending[sock.fileno()] = [started, sock, None]
                ep.register(sock.fileno(), OUT)
                started += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out: {done} of {len(greetings)} connections logged in")
            for fd, event in ep.poll(min(left, 1.0)):
                entry = pending[fd]
                index, sock, got = entry
                hello, welcome = greetings[index]
                if got is None:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise BenchError(f"cannot connect to {address[0]}:{address[1]}: "
                                         f"{os.strerror(err)} (after {done} connections)")
                    sock.send(hello)
                    entry[2] = b""
                    ep.modify(fd, IN)
                    continue
                try:
                    data = sock.recv(4096)
                except ConnectionError as e:
                    raise BenchError(f"login failed: {e}") from None
                if not data:
                    raise BenchError(f"the server closed a connection while logging in "
                                     f"(after {done}); it said {got!r}")
                got += data
                entry[2] = got
                if len(got) >= len(welcome):
                    if not got.startswith(welcome):
                        raise BenchError(f"login refused: expected {welcome!r}, got {got!r}")
                    ep.unregister(fd)
                    del pending[fd]
                    results[index] = (sock, got[len(welcome):])
                    done += 1
    except BaseException:
        for entry in pending.values():
            entry[1].close()
        for result in results:
            if result is not None:
                result[0].close()
        raise
    finally:
        ep.close()
    return results


def _socket_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """C{count} loopback TCP connections, both ends ours: the sink."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    pairs = []
    try:
        for _ in range(count):
            near = socket.create_connection(listener.getsockname())
            far, _ = listener.accept()
            for sock in (near, far):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pairs.append((near, far))
    finally:
        listener.close()
    return pairs


# -- the load: one worker process drives a slice of the pairs --

def _connect_pairs(proto: Any, address: Optional[tuple[str, int]], first: int, count: int,
                   size: int) -> list[Pair]:
    inner = payload_template(size)
    pairs = []
    for i in range(first, first + count):
        pairs.append(Pair(i, proto.template(f"bench-s-{i}", f"bench-r-{i}", inner)))
    if address is None:
        ends = _socket_pairs(count)
        for pair, (near, far) in zip(pairs, ends):
            pair.sender, pair.receiver = Conn(near, pair, False), Conn(far, pair, True)
        return pairs
    # Receivers first, so the first message finds its target logged in.
    receivers = open_many(address, [(proto.hello(f"bench-r-{p.index}", True), proto.welcome(True))
                                    for p in pairs])
    senders = open_many(address, [(proto.hello(f"bench-s-{p.index}", False), proto.welcome(False))
                                  for p in pairs])
    for pair, (rsock, rrest), (ssock, srest) in zip(pairs, receivers, senders):
        pair.receiver = Conn(rsock, pair, True, rrest)
        pair.sender = Conn(ssock, pair, False, srest)
    return pairs


def drive(proto: Any, pairs: list[Pair], *, go: float, warmup: float, duration: float,
          rate: float, window: int, ack: bool, report: Callable[[int], None]) -> dict:
    """
    Run the load on C{pairs} and return the counts.  As fast as possible
    (C{rate} 0), each sender keeps at most C{window} messages on their way
    to its receiver, and sends more as they arrive.  At a fixed rate, message
    C{g} of this worker is due at C{go + g / rate}, round robin over the
    pairs, and carries that due time as its send time: a server that falls
    behind shows as latency, not as a quietly lower rate.
    """
    ep = select.epoll()
    by_fd: dict[int, Conn] = {}
    for pair in pairs:
        for conn in (pair.sender, pair.receiver):
            by_fd[conn.fd] = conn
            ep.register(conn.fd, IN)
    batch, receive, answers = proto.batch, proto.receive, proto.answers
    lat = array.array("q")
    closed = 0
    out: list[bytes] = []

    def send(conn: Conn, data: bytes) -> None:
        nonlocal closed
        if conn.outbuf:
            conn.outbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            if conn.open:
                conn.open = False
                closed += 1
                ep.unregister(conn.fd)
            return
        if sent < len(data):
            conn.outbuf = data[sent:]
            ep.modify(conn.fd, IN | OUT)

    def top_up(pair: Pair, count: int, ts: int, step: int) -> None:
        data = batch(pair.template, pair.sent, count, ts, step)
        pair.sent += count
        send(pair.sender, data)

    count = len(pairs)
    win_start = go + warmup
    win_end = win_start + duration
    win_start_ns, win_end_ns = int(win_start * 1e9), int(win_end * 1e9)
    in_window = 0
    period = 1e9 / rate if rate else 0.0
    due_sent = 0  # messages scheduled so far (fixed rate)
    go_ns = int(go * 1e9)
    while time.monotonic() < go:
        time.sleep(min(go - time.monotonic(), 0.05))
    if not rate:
        now_ns = time.monotonic_ns()
        for pair in pairs:
            top_up(pair, window, now_ns, 0)
    sending = True
    stop_at = 0.0
    next_report = go + 1.0
    touched: list[Pair] = []
    while True:
        now = time.monotonic()
        if sending and now >= win_end:
            sending = False
            stop_at = now + DRAIN
        if not sending and (now >= stop_at or all(p.expected >= p.sent for p in pairs)):
            break
        if now >= next_report:
            report(sum(p.unique for p in pairs))
            next_report += 1.0
        timeout = 0.05
        if rate and sending:
            due = int((now - go) * rate) + 1
            if due > due_sent:
                if due - due_sent < count:
                    for g in range(due_sent, due):
                        top_up(pairs[g % count], 1, go_ns + int(g * period), 0)
                else:
                    for i, pair in enumerate(pairs):
                        owed = (due - i + count - 1) // count - pair.sent
                        if owed > 0:
                            top_up(pair, owed, go_ns + int((pair.sent * count + i) * period),
                                   int(count * period))
                due_sent = due
            # epoll sleeps in whole milliseconds and oversleeping would show
            # as latency, so it sleeps only when the next message is far off;
            # closer, short naps leave the broker its CPU (no busy wait).
            left = go + due_sent / rate - time.monotonic()
            timeout = left - 0.0015 if left > 0.0025 else 0
        events = ep.poll(timeout)
        if not events and not timeout and rate and sending:
            time.sleep(0.0001)
        for fd, event in events:
            conn = by_fd[fd]
            if event & OUT and conn.outbuf:
                data, conn.outbuf = conn.outbuf, b""
                send(conn, data)
                if not conn.outbuf and conn.open:
                    ep.modify(fd, IN)
            if not event & (IN | select.EPOLLERR | select.EPOLLHUP) or not conn.open:
                continue
            try:
                data = conn.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                conn.open = False
                closed += 1
                ep.unregister(fd)
                continue
            buf = conn.inbuf + data if conn.inbuf else data
            pair = conn.pair
            if conn.receiver:
                now_ns = time.monotonic_ns()
                measured = win_start_ns <= now_ns < win_end_ns
                before = pair.unique
                used = receive(pair, buf, now_ns, lat if measured else None, out, ack)
                if measured:
                    in_window += pair.unique - before
                if sending and not rate:
                    touched.append(pair)
            else:
                used = answers(pair, buf, out)[0]
            conn.inbuf = buf[used:] if used < len(buf) else b""
            if out:
                send(conn, b"".join(out))
                out.clear()
        if touched:
            now_ns = time.monotonic_ns()
            for pair in touched:
                room = window - (pair.sent - pair.expected)
                if room > 0 and not pair.sender.outbuf and pair.sender.open:
                    top_up(pair, room, now_ns, 0)
            touched.clear()
    ep.close()
    for conn in by_fd.values():
        conn.sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sent": sum(p.sent for p in pairs),
        "delivered": sum(p.unique for p in pairs),
        "in_window": in_window,
        "lost": sum(p.sent - p.unique for p in pairs),
        "duplicated": sum(p.dups for p in pairs),
        "malformed": sum(p.bad for p in pairs),
        "refused": sum(p.refused for p in pairs),
        "closed": closed,
        "latencies": lat,
        "bench_cpu": usage.ru_utime + usage.ru_stime,
    }


def heartbeat(proto: Any, conns: list[Conn], *, go: float, duration: float, every: float,
              report: Callable[[int], None]) -> dict:
    """
    Keep C{conns} logged in and otherwise idle: each sends one heartbeat per
    C{every} seconds (spread evenly over the fleet) and answers the server's.
    """
    ep = select.epoll()
    by_fd = {}
    for conn in conns:
        by_fd[conn.fd] = conn
        ep.register(conn.fd, IN)
    rate = len(conns) / every
    due_sent = answered = closed = 0
    out: list[bytes] = []
    end = go + duration
    next_report = go + 1.0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_report:
            report(answered)
            next_report += 1.0
        due = int((now - go) * rate) + 1
        for g in range(due_sent, due):
            conn = conns[g % len(conns)]
            if conn.open:
                try:
                    conn.sock.send(proto.heartbeat(g // len(conns) % 0xFFFF + 1))
                except OSError:
                    pass
        due_sent = max(due, due_sent)
        left = go + due_sent / rate - time.monotonic()
        for fd, event in ep.poll(max(0.0, min(left, end - now, 0.5))):
            conn = by_fd[fd]
            try:
                data = conn.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                conn.open = False
                closed += 1
                ep.unregister(fd)
                continue
            buf = conn.inbuf + data if conn.inbuf else data
            used, count = proto.answers(None, buf, out)
            answered += count
            conn.inbuf = buf[used:]
            if out:
                conn.sock.send(b"".join(out))
                out.clear()
    ep.close()
    return {"heartbeats": min(due_sent, int(duration * rate)), "answered": answered,
            "closed": closed}


def _worker(job: str, proto: Any, address: Optional[tuple[str, int]], first: int, count: int,
            opts: dict, pipe: Connection) -> None:
    """A load-generator process: connect, say ready, wait for the start time, run, report."""
    try:
        if job == "pairs":
            pairs = _connect_pairs(proto, address, first, count, opts["payload"])
        else:
            welcome = proto.welcome(False)
            socks = open_many(address, [(proto.hello(f"bench-idle-{i}", False), welcome)
                                        for i in range(first, first + count)])
            conns = [Conn(sock, None, False, rest) for sock, rest in socks]
        pipe.send(("ready", None))
        go = pipe.recv()
        report = lambda n: pipe.send(("progress", n))  # noqa: E731
        if job == "pairs":
            # This process's share of a fixed total rate is its share of the pairs.
            result = drive(proto, pairs, go=go, warmup=opts["warmup"],
                           duration=opts["duration"], rate=opts["rate"] * count / opts["pairs"],
                           window=opts["window"], ack=opts["ack"], report=report)
        else:
            result = heartbeat(proto, conns, go=go, duration=opts["duration"],
                               every=opts["heartbeat"], report=report)
            pipe.send(("idle_done", None))
            pipe.recv()  # keep the fleet connected until the server has been measured
            for conn in conns:
                conn.sock.close()
        pipe.send(("done", result))
    except BenchError as e:
        pipe.send(("error", str(e)))
    except Exception as e:  # a worker must always answer, or the run hangs
        pipe.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        pipe.close()


# -- the brokers --

def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory(pid: int) -> dict[str, int]:
    """A process's current (VmRSS) and peak (VmHWM) resident memory in KiB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line[:5]] = int(line.split()[1])
    return {"rss_kb": found.get("VmRSS", 0), "peak_kb": found.get("VmHWM", 0)}


class Broker:
    """
    A server under test: where it listens, and its pid when we know it (then
    its CPU and memory are measured).  Started by us, it is stopped on exit.
    """

    def __init__(self, name: str, proto: Any, address: Optional[tuple[str, int]],
                 pid: Optional[int] = None, proc: Optional[subprocess.Popen] = None,
                 workdir: Optional[tempfile.TemporaryDirectory] = None) -> None:
        self.name = name
        self.proto = proto
        self.address = address
        self.pid = pid
        self.proc = proc
        self.workdir = workdir
        self.lines: list[str] = []

    def cpu(self) -> Optional[float]:
        return proc_cpu(self.pid) if self.pid else None

    def memory(self) -> dict[str, Optional[int]]:
        return proc_memory(self.pid) if self.pid else {"rss_kb": None, "peak_kb": None}

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.proc.returncode}):\n"
                             + "".join(self.lines[-30:]))

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)
            del self.lines[:-200]

    def start_reading(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            self.workdir.cleanup()


def start_hypertcp(extra: list[str]) -> Broker:
    """C{twistd -n hypertcp} on a loopback port the OS picks, with a fresh fleet token."""
    from hypertcp.tokens import TokenStore

    workdir = tempfile.TemporaryDirectory(prefix="hypertcp-bench-")
    tokens = Path(workdir.name) / "tokens.json"
    secret = TokenStore(tokens).add("bench", role="fleet")
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "hypertcp", "--listen", "tcp:0:interface=127.0.0.1",
            "--tokens", str(tokens), "--rate-limit", "0", *extra]
    proc = subprocess.Popen(argv, cwd=workdir.name, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    broker = Broker("HyperTCP", HyperTCP(secret), None, proc.pid, proc, workdir)
    deadline = time.monotonic() + 30
    assert proc.stdout
    for line in proc.stdout:
        broker.lines.append(line)
        found = LISTENING.search(line)
        if found:
            broker.address = (found.group(1), int(found.group(2)))
            break
        if time.monotonic() > deadline:
            break
    if broker.address is None:
        broker.stop()
        raise BenchError("the HyperTCP server did not start:\n" + "".join(broker.lines[-30:]))
    broker.start_reading()
    return broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(keepalive: int = 0) -> Optional[Broker]:
    """Debian's mosquitto on a loopback port, or None when it is not installed."""
    binary = MOSQUITTO if os.path.exists(MOSQUITTO) else shutil.which("mosquitto")
    if binary is None:
        return None
    workdir = tempfile.TemporaryDirectory(prefix="hypertcp-bench-mosquitto-")
    port = _free_port()
    conf = Path(workdir.name) / "mosquitto.conf"
    # Debian's defaults, plus a loopback listener open to anonymous clients,
    # no persistence (HyperTCP stores nothing either), and quiet logs.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_dest stdout\nlog_type error\nlog_type warning\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], cwd=workdir.name, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    broker = Broker("Mosquitto", MQTT(keepalive), ("127.0.0.1", port), proc.pid, proc, workdir)
    broker.start_reading()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(broker.address, timeout=1).close()
            return broker
        except OSError:
            broker.check()
            if time.monotonic() > deadline:
                broker.stop()
                raise BenchError("mosquitto did not start listening:\n" + "".join(broker.lines))
            time.sleep(0.05)


def sink() -> Broker:
    return Broker("sink", Sink(""), None)


# -- running and reporting --

def _spawn(job: str, broker: Broker, total: int, procs: int, opts: dict) -> list:
    ctx = multiprocessing.get_context("fork")
    workers = []
    for n in range(procs):
        first = total * n // procs
        count = total * (n + 1) // procs - first
        if not count:
            continue
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker, daemon=True,
                           args=(job, broker.proto, broker.address, first, count, opts, theirs))
        proc.start()
        theirs.close()
        workers.append((proc, ours))
    return workers


def _await(workers: list, kind: str, broker: Broker, progress: Callable[[int], None],
           timeout: float, tick: Callable[[], None] = lambda: None) -> list:
    """
    Wait for a message of C{kind} from every worker, passing their progress
    on, and calling C{tick} at least every 50 ms.
    """
    results: dict[int, Any] = {}
    counts = [0] * len(workers)
    deadline = time.monotonic() + timeout
    pipes = {pipe: i for i, (_, pipe) in enumerate(workers)}
    while len(results) < len(workers):
        tick()
        broker.check()
        if time.monotonic() > deadline:
            raise BenchError(f"the load generator timed out waiting for {kind}")
        for pipe in wait(list(pipes), 0.05):
            i = pipes[pipe]
            try:
                what, value = pipe.recv()
            except EOFError:
                raise BenchError("a load-generator process died") from None
            if what == "error":
                raise BenchError(value)
            if what == "progress":
                counts[i] = value
                progress(sum(counts))
            elif what == kind:
                results[i] = value
                del pipes[pipe]  # a worker that is done may exit: its pipe then reads EOF
    return [results[i] for i in range(len(workers))]


def _stop(workers: list) -> None:
    for proc, pipe in workers:
        pipe.close()
        proc.join(2)
        if proc.is_alive():
            proc.kill()


class Progress:
    """One line on stderr, rewritten each second, with the rate since the last."""

    def __init__(self, label: str, unit: str, quiet: bool) -> None:
        self.label, self.unit, self.quiet = label, unit, quiet
        self.started = self.last_time = time.monotonic()
        self.last = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last_time < 0.9:
            return
        rate = (count - self.last) / (now - self.last_time)
        self.last, self.last_time = count, now
        line = (f"{self.label:>10}  {now - self.started:5.1f} s  {count:>12,} {self.unit}"
                f"  {rate:>10,.0f}/s")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and not self.quiet and self.last:
            print(file=sys.stderr)


def _percentile(ordered: list[int], q: float) -> Optional[float]:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def run_pairs(broker: Broker, args: argparse.Namespace) -> dict:
    """One throughput run against C{broker}; the figures as a dict."""
    opts = {"pairs": args.pairs, "payload": args.payload, "warmup": args.warmup,
            "duration": args.duration, "rate": args.rate, "window": args.window,
            "ack": args.ack}
    workers = _spawn("pairs", broker, args.pairs, args.procs, opts)
    try:
        _await(workers, "ready", broker, lambda n: None, 600)
        go = time.monotonic() + 0.2
        for _, pipe in workers:
            pipe.send(go)
        progress = Progress(broker.name, "delivered", args.quiet)
        # The server's CPU and memory, sampled at the edges of the measured window.
        edges = [go + args.warmup, go + args.warmup + args.duration]
        marks: list[Optional[float]] = []
        memory: dict[str, Optional[int]] = {}

        def tick() -> None:
            while len(marks) < 2 and time.monotonic() >= edges[len(marks)]:
                marks.append(broker.cpu())
                if len(marks) == 2:
                    memory.update(broker.memory())

        results = _await(workers, "done", broker, progress,
                         args.warmup + args.duration + DRAIN + 60, tick)
        tick()  # the workers stop sending at the window's end, so it has passed
    finally:
        _stop(workers)
    progress.done()
    lat = array.array("q")
    for r in results:
        lat.extend(r["latencies"])
    ordered = sorted(lat)
    figures: dict[str, Any] = {key: sum(r[key] for r in results) for key in (
        "sent", "delivered", "lost", "duplicated", "malformed", "refused", "closed")}
    in_window = sum(r["in_window"] for r in results)
    cpu = marks[1] - marks[0] if len(marks) == 2 and marks[0] is not None else None
    figures.update({
        "msgs_per_s": in_window / args.duration,
        "p50_ms": _percentile(ordered, 0.50),
        "p99_ms": _percentile(ordered, 0.99),
        "max_ms": ordered[-1] / 1e6 if ordered else None,
        "server_cpu_s": cpu,
        "server_peak_rss_mb": memory["peak_kb"] / 1024 if memory.get("peak_kb") else None,
        "msgs_per_cpu_s": in_window / cpu if cpu else None,
        "bench_cpu_s": sum(r["bench_cpu"] for r in results),
    })
    return figures


def run_idle(broker: Broker, args: argparse.Namespace) -> dict:
    """An idle fleet against C{broker}: memory per connection, CPU per idle second."""
    opts = {"duration": args.idle_time, "heartbeat": args.heartbeat}
    time.sleep(0.5)
    before = broker.memory()
    started = time.monotonic()
    workers = _spawn("idle", broker, args.idle, args.procs, opts)
    try:
        _await(workers, "ready", broker, lambda n: None, 900)
        connect_s = time.monotonic() - started
        time.sleep(1.0)  # let the server finish logging the logins
        go = time.monotonic()
        cpu0 = broker.cpu()
        for _, pipe in workers:
            pipe.send(go)
        progress = Progress(broker.name, "heartbeats", args.quiet)
        _await(workers, "idle_done", broker, progress, args.idle_time + 60)
        cpu1 = broker.cpu()
        after = broker.memory()
        for _, pipe in workers:
            pipe.send(None)
        results = _await(workers, "done", broker, progress, 60)
    finally:
        _stop(workers)
    progress.done()
    figures: dict[str, Any] = {"connections": args.idle, "connect_s": connect_s}
    for key in ("heartbeats", "answered", "closed"):
        figures[key] = sum(r[key] for r in results)
    known = before["rss_kb"] is not None
    figures.update({
        "rss_before_mb": before["rss_kb"] / 1024 if known else None,
        "rss_after_mb": after["rss_kb"] / 1024 if known else None,
        "rss_per_conn_kb": (after["rss_kb"] - before["rss_kb"]) / args.idle if known else None,
        "idle_cpu_s": cpu1 - cpu0 if known else None,
        "idle_cpu_percent": 100 * (cpu1 - cpu0) / args.idle_time if known else None,
    })
    return figures


PAIR_ROWS = [
    ("msgs_per_s", "delivered msgs/s", "{:,.0f}"),
    ("p50_ms", "latency p50 ms", "{:.3f}"),
    ("p99_ms", "latency p99 ms", "{:.3f}"),
    ("max_ms", "latency max ms", "{:.2f}"),
    ("sent", "sent", "{:,}"),
    ("delivered", "delivered", "{:,}"),
    ("lost", "lost", "{:,}"),
    ("duplicated", "duplicated", "{:,}"),
    ("refused", "refused by server", "{:,}"),
    ("closed", "connections closed", "{:,}"),
    ("server_cpu_s", "server CPU s", "{:.2f}"),
    ("server_peak_rss_mb", "server peak RSS MB", "{:.1f}"),
    ("msgs_per_cpu_s", "msgs per server CPU s", "{:,.0f}"),
    ("bench_cpu_s", "load generator CPU s", "{:.2f}"),
]
IDLE_ROWS = [
    ("connections", "connections", "{:,}"),
    ("connect_s", "connect + login s", "{:.1f}"),
    ("rss_before_mb", "server RSS before MB", "{:.1f}"),
    ("rss_after_mb", "server RSS after MB", "{:.1f}"),
    ("rss_per_conn_kb", "server RSS per conn KB", "{:.2f}"),
    ("idle_cpu_s", "server CPU s idle", "{:.2f}"),
    ("idle_cpu_percent", "server CPU % idle", "{:.2f}"),
    ("heartbeats", "heartbeats sent", "{:,}"),
    ("answered", "heartbeats answered", "{:,}"),
    ("closed", "connections closed", "{:,}"),
]
# Figures where a ratio to the baseline says something.
RATIOS = ("msgs_per_s", "p50_ms", "p99_ms", "max_ms", "server_cpu_s", "server_peak_rss_mb",
          "msgs_per_cpu_s", "rss_per_conn_kb", "idle_cpu_s")


def ratios(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Every run's figures as ratios to the baseline's (the first peer run)."""
    names = list(runs)
    base = runs.get("mosquitto") or (runs[names[1]] if len(names) > 1 else None)
    if base is None:
        return {}
    out = {}
    for name, figures in runs.items():
        if figures is base:
            continue
        out[name] = {k: figures[k] / base[k] for k in RATIOS
                     if figures.get(k) is not None and base.get(k)}
    return out


def table(runs: dict[str, dict], rows: list, brokers: dict[str, str]) -> str:
    """The figures of every run side by side, and each against the baseline."""
    names = list(runs)
    rel = ratios(runs)
    header = ["", *[brokers[n] for n in names]]
    rel_names = [n for n in names if n in rel]
    base_name = next((brokers[n] for n in names if n not in rel and rel), "")
    header += [f"{brokers[n]}/{base_name}" for n in rel_names]
    lines = [header]
    for key, label, fmt in rows:
        row = [label]
        for name in names:
            value = runs[name].get(key)
            row.append("-" if value is None else fmt.format(value))
        for name in rel_names:
            value = rel[name].get(key)
            row.append("" if value is None else f"{value:.2f}x")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(r)).rstrip() for r in lines)


def bench(args: argparse.Namespace) -> int:
    idle = args.idle is not None
    per_broker = 2 * args.pairs if not idle else args.idle
    raise_nofile(per_broker + 200)
    if args.pairs < 1 or args.procs < 1 or args.window < 1:
        raise BenchError("--pairs, --procs and --window must be at least 1")
    payload_template(args.payload)  # fail early on a payload too small

    def targets() -> list[Callable[[], Optional[Broker]]]:
        if args.port is not None:
            if not args.token:
                raise BenchError("a running server needs --token (a fleet token)")
            found = [lambda: Broker("HyperTCP", HyperTCP(args.token), (args.host, args.port),
                                    args.server_pid)]
        else:
            found = [lambda: start_hypertcp(args.server_arg)]
        for peer in args.peer:
            if peer == "mosquitto":
                found.append(lambda: start_mosquitto(
                    int(args.heartbeat * 2) if idle else 0))
            elif idle:
                raise BenchError("--peer sink measures the load generator, not an idle fleet")
            else:
                found.append(sink)
        return found

    runs: dict[str, dict] = {}
    names: dict[str, str] = {}
    for start in targets():
        broker = start()
        if broker is None:
            print("hypertcp bench: mosquitto is not installed (apt-get install mosquitto); "
                  "skipping the Mosquitto run", file=sys.stderr)
            continue
        try:
            figures = run_idle(broker, args) if idle else run_pairs(broker, args)
        finally:
            broker.stop()
        runs[broker.proto.name] = figures
        names[broker.proto.name] = broker.name
    scenario = {"pairs": args.pairs, "payload": args.payload, "rate": args.rate,
                "window": args.window, "ack": args.ack, "duration": args.duration,
                "warmup": args.warmup, "procs": args.procs}
    if idle:
        scenario = {"idle": args.idle, "idle_time": args.idle_time,
                    "heartbeat": args.heartbeat, "procs": args.procs}
    if args.json:
        print(json.dumps({"scenario": scenario, "runs": runs, "ratios": ratios(runs)}, indent=2))
        return 0
    if idle:
        print(f"idle fleet: {args.idle:,} logged-in connections, a heartbeat every "
              f"{args.heartbeat:g} s, measured over {args.idle_time:g} s")
    else:
        rate = f"{args.rate:,.0f} msgs/s in total" if args.rate else \
            f"as fast as possible, window {args.window} per sender"
        print(f"{args.pairs:,} pairs, {args.payload}-byte payload, {rate}, receivers "
              f"{'ack' if args.ack else 'do not ack'}, {args.duration:g} s "
              f"after {args.warmup:g} s warm-up, {args.procs} load process(es)")
    print(table(runs, IDLE_ROWS if idle else PAIR_ROWS, names))
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        return bench(args)
    except BenchError as e:
        print(f"hypertcp bench: {e}", file=sys.stderr)
        return 1


def add_parser(subparsers: Any) -> None:
    """The C{hypertcp bench} subcommand."""
    parser = subparsers.add_parser(
        "bench", help="measure throughput, latency and cost, beside Mosquitto",
        description="Push messages through a HyperTCP server over N sender->receiver pairs "
                    "and report delivered msgs/s, latency, loss and the server's CPU and "
                    "memory. Starts its own server (twistd -n hypertcp) unless --port is "
                    "given. --peer mosquitto runs the same load over MQTT 3.1.1 QoS 0 "
                    "through Debian's mosquitto and prints ratios to it; --peer sink runs "
                    "it with no broker, the load generator's own ceiling.")
    load = parser.add_argument_group("load")
    load.add_argument("--pairs", type=int, default=10, metavar="N",
                      help="sender->receiver pairs (default: %(default)s)")
    load.add_argument("--payload", type=int, default=64, metavar="BYTES",
                      help="size of each message's JSON payload (default: %(default)s)")
    load.add_argument("--rate", type=float, default=0, metavar="MSGS",
                      help="total messages per second; 0 is as fast as the window allows "
                           "(default: %(default)s)")
    load.add_argument("--window", type=int, default=64, metavar="N",
                      help="as fast as possible: messages a sender may have on their way "
                           "(default: %(default)s)")
    load.add_argument("--no-ack", dest="ack", action="store_false",
                      help="receivers do not acknowledge delivered frames (they do by default, "
                           "as the sketch does)")
    load.add_argument("--duration", type=float, default=10, metavar="S",
                      help="seconds measured (default: %(default)s)")
    load.add_argument("--warmup", type=float, default=1, metavar="S",
                      help="seconds of load before measuring (default: %(default)s)")
    load.add_argument("--procs", type=int, default=1, metavar="K",
                      help="load-generator processes (default: %(default)s)")
    idle = parser.add_argument_group("idle fleet")
    idle.add_argument("--idle", type=int, metavar="N",
                      help="instead of pairs: N logged-in connections that only heartbeat "
                           "(10000 is the target figure)")
    idle.add_argument("--idle-time", type=float, default=30, metavar="S",
                      help="seconds of idling measured (default: %(default)s)")
    idle.add_argument("--heartbeat", type=float, default=30, metavar="S",
                      help="seconds between a device's heartbeats, the sketch's 30 "
                           "(default: %(default)s)")
    where = parser.add_argument_group("servers")
    where.add_argument("--peer", action="append", choices=("mosquitto", "sink"), default=[],
                       help="also run the load through mosquitto, or with no broker at all "
                            "(repeatable)")
    where.add_argument("--host", default="127.0.0.1",
                       help="a running server's host, with --port (default: %(default)s)")
    where.add_argument("--port", type=int, help="bench a running server instead of starting one")
    where.add_argument("--token", help="a fleet token for the running server")
    where.add_argument("--server-pid", type=int, metavar="PID",
                       help="the running server's pid, to measure its CPU and memory")
    where.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                       help="an extra option for the server we start, e.g. "
                            "--server-arg=--idle-timeout=300 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(run=_run)


def main(argv: Optional[list[str]] = None) -> int:
    """C{python -m hypertcp.bench}: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="hypertcp")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
