"""C{hypertcp send}, C{broadcast}, C{listen} and C{ping}: talking to a server."""

from __future__ import annotations

import argparse
import sys
import json
import time
from typing import Any

from hypertcp.cli.common import (
    CommandError, UsageError, connect, connection_options, json_object,
)
from hypertcp.client.blocking import Client
from hypertcp.client.errors import ACCEPTED, HyperTCPError
from hypertcp.protocol.commands import Command, status_name

KINDS = {Command.JSON_MESSAGE: "message", Command.BROADCAST: "broadcast"}


def _answered(what: str, answer: int, client: Client) -> int:
    """Print the status; a refusal is an error that says why, as the server put it."""
    if answer not in ACCEPTED:
        raise HyperTCPError(answer, what, client.last_reason)
    print(status_name(answer))
    return 0


def _send(args: argparse.Namespace) -> int:
    payload = json_object(args.json)
    if args.ttl is not None and not args.qos:
        raise UsageError("--ttl is how long a stored message waits: it needs --qos 1")
    if args.ttl is not None and not (0 < args.ttl < float("inf")):
        raise UsageError("--ttl must be a positive number of seconds")
    with connect(args) as client:
        answer = client.send(args.target, payload, ack=args.ack, qos=args.qos, ttl=args.ttl)
        if args.target == "server" and answer in ACCEPTED:
            # A server command's reply comes before the answer: print it.
            replies = _server_replies(client)
            if replies:
                for reply in replies:
                    print(json.dumps(reply, ensure_ascii=False))
                return 0
        return _answered(f"send to {args.target}", answer, client)


def _server_replies(client: Client) -> list:
    """The payloads of the messages from "server" that arrived with the answer."""
    replies = []
    while (message := client.receive(0)) is not None:
        if message.sender == "server":
            replies.append(message.payload)
    return replies


def _broadcast(args: argparse.Namespace) -> int:
    payload = json_object(args.json)
    with connect(args) as client:
        return _answered("broadcast", client.broadcast(payload), client)


def _listen(args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    received = 0
    with connect(args, reconnect=True) as client:
        # On stderr, so stdout stays pure JSON lines; it tells scripts (and
        # tests) that messages sent from now on will arrive.
        who = f" as {client.device_id}" if client.device_id else ""
        print(f"listening on {args.host}:{args.port}{who}", file=sys.stderr, flush=True)
        while args.count is None or received < args.count:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            message = client.receive(left)
            if message is None:
                break
            line = {"command": KINDS[message.command], "from": message.sender,
                    "payload": message.payload}
            if message.extra and "queued_at" in message.extra:
                line["queued_at"] = message.extra["queued_at"]  # it was stored for us
            print(json.dumps(line, ensure_ascii=False), flush=True)
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
    send = subparsers.add_parser(
        "send", parents=[common], help="send a JSON message to a device",
        description="Send a JSON object to one device, or to \"server\": a server command's "
                    "reply (such as {\"command\": \"stats\"}'s) is printed as a JSON line.")
    send.add_argument("target", metavar="TARGET", help="the device id to send to")
    send.add_argument("json", metavar="JSON", help="the payload, a JSON object; - reads stdin")
    send.add_argument("--ack", action="store_true",
                      help="succeed only once the target has acknowledged the message")
    send.add_argument("--qos", type=int, choices=(0, 1), default=0,
                      help="1: if the target is offline, the server stores the message until "
                           "it logs in (answer STORED) (default: %(default)s)")
    send.add_argument("--ttl", type=float, metavar="S",
                      help="with --qos 1: seconds the message may wait (default: the server's)")
    send.set_defaults(run=_send)

    broadcast = subparsers.add_parser("broadcast", parents=[common],
                                      help="send a JSON message to every other client")
    broadcast.add_argument("json", metavar="JSON", help="the payload, a JSON object; - reads stdin")
    broadcast.set_defaults(run=_broadcast)

    listen = subparsers.add_parser(
        "listen", parents=[common], help="print incoming messages as JSON lines",
        description="Print each message delivered to this client as one JSON line: "
                    '{"command": "message"|"broadcast", "from": ID, "payload": {...}}, '
                    'with "queued_at" (ms) on a message that was stored for this client. '
                    "A dropped connection is made again (said on stderr).")
    listen.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    listen.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    listen.set_defaults(run=_listen)

    ping = subparsers.add_parser("ping", parents=[common], help="measure the round trip to a server")
    ping.set_defaults(run=_ping)


