"""What the commands that talk to a server share: options, connecting, errors."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys

from hypertcp.client.blocking import Client

TOKEN_ENV = "HYPERTCP_TOKEN"


class CommandError(Exception):
    """A failure to report as one line on stderr (exit status 1)."""


class UsageError(CommandError):
    """A command line that cannot work (exit status 2)."""


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
    group.add_argument("--challenge", action="store_true",
                       help="log in by challenge and response: the token never crosses the wire")
    return parser


def connect(args: argparse.Namespace, reconnect: bool = False) -> Client:
    """
    A logged-in client for the connection options in C{args}; it asks the
    server for the reasons of refusals, and with C{reconnect} outlives a
    dropped connection, saying so on stderr.
    """
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise UsageError(f"no token: pass --token or set {TOKEN_ENV}")
    context = ssl.create_default_context(cafile=args.ca) if args.ca else None
    return Client(args.host, args.port, token, args.device_id, ssl_context=context,
                  tls=args.tls or bool(args.ca), reconnect=reconnect,
                  on_reconnect=_reconnected, challenge=args.challenge).connect()


def _reconnected(client: Client) -> None:
    print(f"reconnected to {client.host}:{client.port}", file=sys.stderr, flush=True)


def tls_failure(error: ssl.SSLError, args: argparse.Namespace) -> str:
    """A TLS failure in words that say what to do about it."""
    where = f"{args.host}:{args.port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        problem = error.verify_message or error.reason or str(error)
        if args.ca:
            return f"{where}: its certificate does not verify against {args.ca}: {problem}"
        return (f"{where}: its certificate does not verify against the system's CAs "
                f"({problem}): use --ca FILE to verify the server against your CA")
    if error.reason == "WRONG_VERSION_NUMBER":
        return f"{where} does not speak TLS (is it the plain port?)"
    return f"{where}: TLS failed: {error.reason or error}"


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
