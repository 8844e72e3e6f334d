"""
The C{hypertcp} command line: talk to a server, and manage its tokens.

Each subcommand comes from an C{add_parser(subparsers)} function listed in
L{COMMANDS}.  It adds its parser and sets C{run}, a function taking the
parsed arguments and returning the exit status, with C{set_defaults}.  A
command kept in a module of its own (bench, certs) joins by adding its
module's C{add_parser} to the list; L{connection_options} and L{connect}
give it the same C{--host}/C{--port}/C{--token} handling as the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
from datetime import datetime
from typing import Any, Callable, Optional, Sequence

from hypertcp import bench, certs, tokens
from hypertcp.client import Client, HyperTCPError
from hypertcp.client._common import status_name
from hypertcp.wire import Command, Status

TOKEN_ENV = "HYPERTCP_TOKEN"
KINDS = {Command.JSON_MESSAGE: "message", Command.BROADCAST: "broadcast"}


class CommandError(Exception):
    """A failure to report as one line on stderr (exit status 1)."""


class UsageError(CommandError):
    """A command line that cannot work (exit status 2)."""


# -- shared by the commands that talk to a server --

def connection_options() -> argparse.ArgumentParser:
    """A parent parser with the options every command that connects takes."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument("--host", default="127.0.0.1", help="server host (default: %(default)s)")
    group.add_argument("--port", type=int, default=8080, help="server port (default: %(default)s)")
    group.add_argument("--token", help=f"login token (default: ${TOKEN_ENV}); write --token=T "
                       "when T starts with a dash")
    group.add_argument("--device-id", help="the device id to log in as, if the token lets you choose")
    group.add_argument("--tls", action="store_true",
                       help="connect over TLS, verifying the server's certificate and name")
    group.add_argument("--ca", metavar="FILE",
                       help="verify servers against this CA instead of the system's (implies --tls)")
    return parser


def connect(args: argparse.Namespace) -> Client:
    """A logged-in client for the connection options in C{args}."""
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise UsageError(f"no token: pass --token or set {TOKEN_ENV}")
    context = ssl.create_default_context(cafile=args.ca) if args.ca else None
    return Client(args.host, args.port, token, args.device_id, ssl_context=context,
                  tls=args.tls or bool(args.ca)).connect()


def json_object(text: str) -> dict:
    """Parse a JSON object argument; "-" reads it from standard input."""
    if text == "-":
        text = sys.stdin.read()
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise UsageError(f"the payload must be a JSON object, like '{{\"on\": true}}', not {text!r}")
    return value


def _answered(what: str, answer: int) -> int:
    if answer != Status.SUCCESS:
        raise HyperTCPError(answer, what)
    print(status_name(answer))
    return 0


# -- messaging --

def _send(args: argparse.Namespace) -> int:
    payload = json_object(args.json)
    with connect(args) as client:
        return _answered(f"send to {args.target}", client.send(args.target, payload, ack=args.ack))


def _broadcast(args: argparse.Namespace) -> int:
    payload = json_object(args.json)
    with connect(args) as client:
        return _answered("broadcast", client.broadcast(payload))


def _listen(args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    received = 0
    with connect(args) as client:
        # On stderr, so stdout stays pure JSON lines; it tells scripts (and
        # tests) that messages sent from now on will arrive.
        who = f" as {client.device_id}" if client.device_id else ""
        print(f"listening on {args.host}:{args.port}{who}", file=sys.stderr, flush=True)
        while args.count is None or received < args.count:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            message = client.receive(left)
            if message is None:
                break
            print(json.dumps({"command": KINDS[message.command], "from": message.sender,
                              "payload": message.payload}, ensure_ascii=False), flush=True)
            received += 1
    if args.count is not None and received < args.count:
        raise CommandError(f"timed out after {args.timeout:g} s with {received} of "
                           f"{args.count} messages")
    return 0


def _ping(args: argparse.Namespace) -> int:
    with connect(args) as client:
        print(f"{client.ping() * 1000:.2f} ms from {args.host}:{args.port}")
    return 0


def add_messaging_parsers(subparsers: Any) -> None:
    common = connection_options()
    send = subparsers.add_parser("send", parents=[common], help="send a JSON message to a device",
                                 description="Send a JSON object to one device (or to \"server\").")
    send.add_argument("target", metavar="TARGET", help="the device id to send to")
    send.add_argument("json", metavar="JSON", help="the payload, a JSON object; - reads stdin")
    send.add_argument("--ack", action="store_true",
                      help="succeed only once the target has acknowledged the message")
    send.set_defaults(run=_send)

    broadcast = subparsers.add_parser("broadcast", parents=[common],
                                      help="send a JSON message to every other client")
    broadcast.add_argument("json", metavar="JSON", help="the payload, a JSON object; - reads stdin")
    broadcast.set_defaults(run=_broadcast)

    listen = subparsers.add_parser(
        "listen", parents=[common], help="print incoming messages as JSON lines",
        description="Print each message delivered to this client as one JSON line: "
                    '{"command": "message"|"broadcast", "from": ID, "payload": {...}}.')
    listen.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    listen.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    listen.set_defaults(run=_listen)

    ping = subparsers.add_parser("ping", parents=[common], help="measure the round trip to a server")
    ping.set_defaults(run=_ping)


# -- tokens --

def _store(args: argparse.Namespace) -> tokens.TokenStore:
    return tokens.TokenStore(args.tokens or tokens.default_path())


def _token_add(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        secret = store.add(args.name, role=args.role, prefix=args.prefix, reach=args.reach)
    except ValueError as e:
        raise CommandError(str(e)) from None
    if args.role == "device":
        identity = f"it logs in as device {args.name}"
    else:
        within = f" starting with {args.prefix!r}" if args.prefix else ""
        identity = f"its clients choose their device ids{within}"
        if args.role == "observer":
            identity += ", and receive presence events"
    print(f"Added {args.role} token {args.name!r} to {store.path}: {identity}.")
    print(f"It may send to: {', '.join(args.reach or ['*'])}.")
    print("The token is shown only now; the file keeps its hash:")
    print(secret)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    store = _store(args)
    records = store.list()
    if not records:
        print(f"no tokens in {store.path}")
        return 0
    rows = [("NAME", "ROLE", "PREFIX", "REACH", "CREATED", "STATE")]
    for r in records:
        created = datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M") if r.created else "-"
        rows.append((r.name, r.role, r.prefix or "-", ",".join(r.reach), created,
                     "revoked" if r.revoked else "live"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    count = store.revoke(args.name)
    if not count:
        raise CommandError(f"no live token named {args.name!r} in {store.path}")
    print(f"Revoked {count} token{'s' if count > 1 else ''} named {args.name!r} in {store.path}; "
          "a running server closes their sessions when it next reads the file.")
    return 0


def add_token_parser(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="add, list and revoke login tokens")
    file_option = argparse.ArgumentParser(add_help=False)
    file_option.add_argument(
        "--tokens", metavar="FILE",
        help=f"the token file (default: $HYPERTCP_TOKENS, else {tokens.DEFAULT_PATH})")
    actions = token.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", parents=[file_option], help="create a token and print it",
                             description="Create a token; it is printed once, as the last line.")
    add.add_argument("name", metavar="NAME", help="its name; for a device token, the device id")
    add.add_argument("--role", choices=tokens.ROLES, default="device",
                     help="device: bound to the id NAME; fleet: clients choose their ids; "
                          "observer: a fleet token that also receives presence events "
                          "(default: %(default)s)")
    add.add_argument("--prefix", metavar="P", help="fleet/observer: ids must start with P")
    add.add_argument("--reach", metavar="PATTERN", nargs="+", action="extend",
                     help="glob patterns of the targets it may send to (default: *)")
    add.set_defaults(run=_token_add)

    listing = actions.add_parser("list", parents=[file_option], help="list the tokens")
    listing.set_defaults(run=_token_list)

    revoke = actions.add_parser("revoke", parents=[file_option], help="revoke the tokens called NAME")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(run=_token_revoke)


#: Every subcommand's add_parser, in the order C{--help} lists them.
COMMANDS: list[Callable[[Any], None]] = [add_messaging_parsers, add_token_parser,
                                         bench.add_parser, certs.add_parser]


def _describe(error: OSError, args: argparse.Namespace) -> str:
    """An OSError as one line that says where: the file, or the server."""
    if error.filename:
        return f"{error.filename}: {error.strerror}"
    text = error.strerror or str(error) or type(error).__name__
    where = f"{args.host}:{args.port}" if hasattr(args, "host") else ""
    return text if where in text else f"{where}: {text}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypertcp", description="Talk to a HyperTCP server and manage its tokens.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print(f"hypertcp {args.command}: {e}", file=sys.stderr)
        return 2
    except (CommandError, HyperTCPError, ValueError) as e:
        # ValueError: what the client refuses to send, e.g. an oversize payload.
        print(f"hypertcp {args.command}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"hypertcp {args.command}: {_describe(e, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
