"""C{hypertcp token add|list|revoke}: the token file, or a cluster's tokens in Redis."""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from typing import Any, Optional

from hypertcp.cli.common import CommandError
from hypertcp.server import tokens

CLUSTER_ENV = "HYPERTCP_CLUSTER"


def _cluster(args: argparse.Namespace) -> Optional[str]:
    """The cluster's Redis URL when the tokens live there (--cluster or $HYPERTCP_CLUSTER)."""
    return args.cluster or os.environ.get(CLUSTER_ENV) or None


def _in_cluster(args: argparse.Namespace, operation: Any) -> Any:
    """Run C{operation(admin)} on the cluster's tokens; its result."""
    from hypertcp.cluster import oneshot
    from hypertcp.cluster.tokens import TokenAdmin

    try:
        return oneshot.run(_cluster(args), lambda call, keys: operation(TokenAdmin(call, keys)),
                           prefix=args.cluster_prefix)
    except (ConnectionError, ValueError) as e:
        raise CommandError(str(e)) from None


def _store(args: argparse.Namespace, must_exist: bool = True) -> tokens.TokenStore:
    """The token file C{args} name; a missing one is an error unless it is to be made."""
    try:
        store = tokens.TokenStore(args.tokens or tokens.default_path())
    except ValueError as e:  # TokenFileError: it says which file and why
        raise CommandError(str(e)) from None
    if must_exist and not store.exists:
        raise CommandError(f"{store.path}: no such token file")
    return store


def _save_secret(path: str, secret: str) -> None:
    """Write the secret to C{path}, readable by its owner only from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode above applies only to a file it creates
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


def _token_add(args: argparse.Namespace) -> int:
    if _cluster(args):
        secret = _in_cluster(args, lambda admin: admin.add(args.name, args.role, args.prefix,
                                                           args.reach, args.grant))
        where = "the cluster"
    else:
        store = _store(args, must_exist=False)
        try:
            secret = store.add(args.name, role=args.role, prefix=args.prefix, reach=args.reach,
                               grants=args.grant)
        except ValueError as e:
            raise CommandError(str(e)) from None
        where = str(store.path)
    if args.save:
        _save_secret(args.save, secret)
    if args.role == "device":
        identity = f"it logs in as device {args.name}"
    else:
        within = f" starting with {args.prefix!r}" if args.prefix else ""
        identity = f"its clients choose their device ids{within}"
        if args.role == "observer":
            identity += ", and receive presence events"
    print(f"Added {args.role} token {args.name!r} to {where}: {identity}.")
    print(f"It may send to: {', '.join(args.reach or ['*'])}.")
    if args.grant:
        print(f"It may run: {', '.join(dict.fromkeys(args.grant))}, on the devices it may reach.")
    if args.save:
        print(f"The token is saved in {args.save} (mode 0600); the token file keeps its hash:")
    else:
        print("The token is shown only now; the file keeps its hash:")
    print(secret)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    if _cluster(args):
        records, where = _in_cluster(args, lambda admin: admin.list()), "the cluster"
    else:
        store = _store(args)
        records, where = store.list(), str(store.path)
    if not records:
        print(f"no tokens in {where}")
        return 0
    rows = [("NAME", "ROLE", "PREFIX", "REACH", "GRANTS", "CREATED", "STATE")]
    for r in records:
        created = datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M") if r.created else "-"
        rows.append((r.name, r.role, r.prefix or "-", ",".join(r.reach),
                     ",".join(r.grants) or "-", created,
                     "revoked" if r.revoked else "live"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    if _cluster(args):
        count, where = _in_cluster(args, lambda admin: admin.revoke(args.name)), "the cluster"
        when = "every node closes their sessions now"
    else:
        store = _store(args)
        count, where = store.revoke(args.name), str(store.path)
        when = "a running server closes their sessions when it next reads the file"
    if not count:
        raise CommandError(f"no live token named {args.name!r} in {where}")
    print(f"Revoked {count} token{'s' if count > 1 else ''} named {args.name!r} in {where}; "
          f"{when}.")
    return 0


def add_token_parser(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="add, list and revoke login tokens")
    file_option = argparse.ArgumentParser(add_help=False)
    file_option.add_argument(
        "--tokens", metavar="FILE",
        help=f"the token file (default: $HYPERTCP_TOKENS, else {tokens.DEFAULT_PATH})")
    file_option.add_argument(
        "--cluster", metavar="URL",
        help=f"the tokens of the cluster whose Redis is at URL instead (default: ${CLUSTER_ENV})")
    file_option.add_argument("--cluster-prefix", default="hypertcp:", metavar="P",
                             help="the cluster's [cluster] prefix (default: %(default)s)")
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
    add.add_argument("--save", metavar="FILE",
                     help="also write the token to FILE, readable only by you (mode 0600), "
                          "e.g. for [balancer] token_file")
    add.add_argument("--grant", metavar="COMMAND", nargs="+", action="extend",
                     choices=tokens.GRANTS,
                     help="fleet/observer: admin commands it may run, on the devices its "
                          f"prefix and reach cover ({', '.join(tokens.GRANTS)}; a balancer "
                          "needs stats and drain)")
    add.set_defaults(run=_token_add)

    listing = actions.add_parser("list", parents=[file_option], help="list the tokens")
    listing.set_defaults(run=_token_list)

    revoke = actions.add_parser("revoke", parents=[file_option], help="revoke the tokens called NAME")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(run=_token_revoke)


