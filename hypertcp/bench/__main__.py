"""C{python -m hypertcp.bench}: the same command without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from hypertcp.bench.command import add_parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="hypertcp")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
