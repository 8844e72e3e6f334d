"""
Instructions the server spends per message, counted by valgrind's callgrind.

Wall-clock figures swing with whatever else runs on the machine; an
instruction count does not.  This runs the server under
C{valgrind --tool=callgrind} twice, pushes a fixed number of messages
through it each time, and divides the difference of the two totals by the
difference of the two message counts, so start-up, logins and shutdown
cancel out.  Every message goes from a sender to its receiver, which
acknowledges it, and the sender reads the server's answer: the bench's
load, at a fixed window instead of a fixed rate.

Two paths can be counted:

* C{--path server} (the default): the real C{twistd -n hypertcp} on a
  loopback port, the reactor, the transports and the system-call wrappers
  included (the kernel's own work is not counted).  C{--window 1} is the
  request/response load, one message per reactor event; a larger window
  batches.  C{--tls} goes through the TLS listener.
* C{--path inprocess}: the session, the hub and the codec only, two
  sessions on C{StringTransport}s in one process, as
  C{tests/inprocess.py} drives them: the Python of the message path
  without the reactor.

Run from a checkout, with its interpreter::

    python tools/icount.py --window 1
    python tools/icount.py --window 64 --pairs 4
    python tools/icount.py --path inprocess --window 64
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypertcp.bench.message import payload_template  # noqa: E402
from hypertcp.protocol.bodies import login_body, message_body  # noqa: E402
from hypertcp.protocol.commands import Command, Status  # noqa: E402
from hypertcp.protocol.frames import Decoder, encode, response  # noqa: E402

COLLECTED = re.compile(r"Collected : (\d+)")
LISTENING = re.compile(r"HyperTCP (tcp|tls) listening on ([\d.]+):(\d+)")
PAYLOAD = payload_template(64) % (0, 0)


def frames(count: int, window: int) -> list[tuple[int, int]]:
    """(first msg_id, frames) of each round: C{count} messages, C{window} at a time."""
    rounds, sent = [], 0
    while sent < count:
        n = min(window, count - sent)
        rounds.append((sent % 0xFFFF + 1, n))
        sent += n
    return rounds


def message(target: str, msg_id: int) -> bytes:
    return encode(Command.JSON_MESSAGE, (msg_id - 1) % 0xFFFF + 1,
                  message_body(target, {"seq": msg_id, "pad": PAYLOAD.decode()}))


class Conn:
    """A blocking client connection that reads whole frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = Decoder()
        self.unread: list = []

    def read(self, n: int) -> list:
        while len(self.unread) < n:
            data = self.sock.recv(1 << 16)
            if not data:
                raise SystemExit("the server closed a connection")
            self.unread.extend(self.decoder.feed(data))
        got, self.unread = self.unread[:n], self.unread[n:]
        return got


def connect(address: tuple[str, int], token: str, device: str,
            context: Optional[ssl.SSLContext]) -> Conn:
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=address[0])
    conn = Conn(sock)
    sock.sendall(encode(Command.LOGIN, 1, login_body(token, device)))
    [answer] = conn.read(1)
    if answer.payload[:1] != bytes((Status.SUCCESS,)):
        raise SystemExit(f"login of {device} refused: {answer}")
    return conn


def drive(pairs: list[tuple[Conn, Conn, str]], count: int, window: int) -> None:
    """C{count} messages per pair, C{window} in flight, each acknowledged and answered."""
    for first, n in frames(count, window):
        for sender, receiver, target in pairs:
            sender.sock.sendall(b"".join(message(target, first + i) for i in range(n)))
            delivered = receiver.read(n)
            receiver.sock.sendall(b"".join(response(f.msg_id) for f in delivered))
            answers = sender.read(n)
            assert all(a.command == Command.RESPONSE and not a.payload for a in answers), answers


def count_server(args: argparse.Namespace, messages: int, workdir: Path) -> int:
    """Instructions of one server run that relays C{messages} per pair."""
    tokens, token = workdir / "tokens.json", args.token
    log = workdir / f"callgrind-{messages}.log"
    endpoint = "tcp:0:interface=127.0.0.1"
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", f"--log-file={log}",
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", *args.twistd_arg, "hypertcp", "--listen", endpoint,
            "--tokens", str(tokens),
            "--rate-limit", "0", *args.server_arg]
    context = None
    kind = "tcp"
    if args.tls:
        from hypertcp.bench.tls import client_context, make_certificates
        certs = make_certificates(workdir / "certs")
        argv += ["--tls", endpoint, "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
        context = client_context(certs.ca)
        kind = "tls"
    server = subprocess.Popen(argv, cwd=workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        deadline = time.monotonic() + 300
        assert server.stdout is not None
        for line in server.stdout:
            found = LISTENING.search(line)
            if found and found.group(1) == kind:
                address = (found.group(2), int(found.group(3)))
                break
            if time.monotonic() > deadline:
                break
        if address is None:
            raise SystemExit("the server did not start under valgrind")
        pairs = [(connect(address, token, f"icount-s-{i}", context),
                  connect(address, token, f"icount-r-{i}", context), f"icount-r-{i}")
                 for i in range(args.pairs)]
        drive(pairs, messages, args.window)
        for sender, receiver, _ in pairs:
            sender.sock.close()
            receiver.sock.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return _collected(log)


def _collected(log: Path) -> int:
    found = COLLECTED.findall(log.read_text())
    if not found:
        raise SystemExit(f"no instruction total in {log}:\n{log.read_text()[-2000:]}")
    return int(found[-1])


def count_inprocess(args: argparse.Namespace, messages: int, workdir: Path) -> int:
    """Instructions of one in-process run of C{messages} per pair, under valgrind."""
    log = workdir / f"callgrind-inprocess-{messages}.log"
    subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                    f"--log-file={log}", sys.executable, __file__, "--inner", str(messages),
                    "--window", str(args.window), "--pairs", str(args.pairs)],
                   check=True, cwd=ROOT)
    return _collected(log)


def inner(messages: int, window: int, pairs: int) -> None:
    """
    The in-process path: the real factory and hub, sessions on
    StringTransports (the unit tests' harness).  The driver's own work per
    message is kept to a %-format and a slice: frames come from the bench's
    templates, acknowledgements from a table, and what the server writes is
    taken, not decoded.
    """
    from hypertcp.bench.frames import HyperTCP
    from tests.inprocess import Server

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), rate_limit=0)
        proto = HyperTCP(server.token("icount", role="fleet"))
        acks = [response(i) for i in range(0x10000)]
        peers = []
        for i in range(pairs):
            sender, receiver = server.connect(), server.connect()
            assert sender.login(proto.token, f"icount-s-{i}") == Status.SUCCESS
            assert receiver.login(proto.token, f"icount-r-{i}") == Status.SUCCESS
            sender.frames(), receiver.frames()
            template = proto.template(f"icount-s-{i}", f"icount-r-{i}", payload_template(64))
            peers.append((sender.session.dataReceived, sender.transport,
                          receiver.session.dataReceived, receiver.transport, template))
        sent = 0
        for first, n in frames(messages, window):
            for send, sender_out, ack, receiver_out, template in peers:
                send(proto.batch(template, sent, n, 0, 0))
                assert receiver_out.value(), "delivered"
                receiver_out.clear()
                ack(b"".join(acks[(sent + k) % 0xFFFF + 1] for k in range(n)))
                assert sender_out.value(), "answered"
                sender_out.clear()
            sent += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=("server", "inprocess"), default="server")
    parser.add_argument("--window", type=int, default=1, help="messages in flight per pair")
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--counts", type=int, nargs=2, default=(500, 2500), metavar=("N1", "N2"),
                        help="messages per pair in the two runs")
    parser.add_argument("--tls", action="store_true", help="through the TLS listener")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="an extra option for the server")
    parser.add_argument("--twistd-arg", action="append", default=[],
                        help="an extra option for twistd itself, e.g. --reactor")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is not None:
        inner(args.inner, args.window, args.pairs)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    count = count_server if args.path == "server" else count_inprocess
    with tempfile.TemporaryDirectory(prefix="hypertcp-icount-") as tmp:
        workdir = Path(tmp)
        from hypertcp.server.tokens import TokenStore
        args.token = TokenStore(workdir / "tokens.json").add("icount", role="fleet")
        low, high = (count(args, n, workdir) for n in args.counts)
    n1, n2 = args.counts
    per = (high - low) / ((n2 - n1) * args.pairs)
    print(f"{args.path} path, window {args.window}, {args.pairs} pair(s)"
          f"{', TLS' if args.tls else ''}: {per:,.0f} instructions per message "
          f"({low:,} for {n1 * args.pairs}, {high:,} for {n2 * args.pairs})")


if __name__ == "__main__":
    main()
