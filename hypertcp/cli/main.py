"""The C{hypertcp} command: its parser, made of each subcommand's, and its exit statuses."""

from __future__ import annotations

import argparse
import ssl
import sys
from typing import Any, Callable, Optional, Sequence

from hypertcp import __version__
from hypertcp.bench.command import add_parser as add_bench_parser
from hypertcp.cli.certs import add_parser as add_certs_parser
from hypertcp.cli.common import CommandError, UsageError, tls_failure
from hypertcp.cli.messaging import add_messaging_parsers
from hypertcp.cli.queue import add_queue_parser
from hypertcp.cli.tokens import add_token_parser
from hypertcp.client.errors import HyperTCPError

#: Every subcommand's add_parser, in the order C{--help} lists them.
COMMANDS: list[Callable[[Any], None]] = [add_messaging_parsers, add_token_parser,
                                         add_queue_parser, add_bench_parser, add_certs_parser]


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
    parser.add_argument("--version", action="version", version=f"hypertcp {__version__}")
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
    except ssl.SSLError as e:  # before ValueError: a failed verification is both
        print(f"hypertcp {args.command}: {tls_failure(e, args)}", file=sys.stderr)
        return 1
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
