"""
C{hypertcp queue list|show|purge}: the messages stored for devices that
were offline, read from a single node's store file, or from the cluster's
Redis with C{--cluster}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

from hypertcp.cli.common import CommandError
from hypertcp.store.records import Bounds, Queue, Stored, message_rows, queue_rows

STORE_ENV = "HYPERTCP_STORE"
CLUSTER_ENV = "HYPERTCP_CLUSTER"
DEFAULT_STORE = "hypertcp-messages.db"


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths))
                     + "  " + str(row[-1]) for row in rows)


def _run(args: argparse.Namespace, on_file: Callable[[Any], Any],
         in_cluster: Callable[[Any], Any]) -> tuple[Any, str]:
    """Run the operation where the messages are: (its result, where that is)."""
    cluster = args.cluster or os.environ.get(CLUSTER_ENV)
    if cluster:
        from twisted.internet import reactor

        from hypertcp.cluster import oneshot
        from hypertcp.store.redis import RedisStore

        def action(call: Any, keys: Any) -> Any:
            return in_cluster(RedisStore(call, keys, Bounds(0, 0, 0), reactor))

        try:
            return oneshot.run(cluster, action, prefix=args.cluster_prefix), "the cluster"
        except (ConnectionError, ValueError) as e:
            raise CommandError(str(e)) from None
    from hypertcp.store import sqlitefile

    path = args.store or os.environ.get(STORE_ENV) or DEFAULT_STORE
    if not os.path.exists(path):
        raise CommandError(f"no message store at {path} (a server makes it when it starts; "
                           "pass --store FILE, the server's [store] path)")
    try:
        conn = sqlitefile.connect(path, create=False)
    except sqlitefile.StoreFileError as e:
        raise CommandError(str(e)) from None
    try:
        # One transaction, as the server's own batches: a purge is all or nothing.
        [result] = sqlitefile.transaction(conn, [(on_file, ())])
    except sqlitefile.sqlite3.Error as e:
        raise CommandError(f"{path}: {e}") from None
    finally:
        conn.close()
    return result, path


def _list(args: argparse.Namespace) -> int:
    from hypertcp.store import sqlitefile

    found: list[Queue]
    found, where = _run(args, sqlitefile.queues, lambda store: store.queues())
    if args.json:
        print(json.dumps([q._asdict() for q in found]))
        return 0
    if not found:
        print(f"no stored messages in {where}")
        return 0
    print(_table(queue_rows(found)))
    print(f"{sum(q.count for q in found)} messages for {len(found)} devices in {where}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from hypertcp.store import sqlitefile

    found: list[Stored]
    found, where = _run(args, lambda conn: sqlitefile.messages(conn, args.device, args.limit),
                        lambda store: store.messages(args.device, args.limit))
    now = time.time() * 1000
    if args.json:
        print(json.dumps([{"key": m.key, "from": m.sender, "payload": json.loads(m.payload),
                           "queued_at": m.queued_at, "expires_at": m.expires_at,
                           "expired": m.expires_at <= now} for m in found]))
        return 0
    if not found:
        print(f"no messages stored for {args.device} in {where}")
        return 0
    print(_table(message_rows(found, int(now))))
    return 0


def _purge(args: argparse.Namespace) -> int:
    from hypertcp.store import sqlitefile

    count, where = _run(args, lambda conn: sqlitefile.purge(conn, args.device),
                        lambda store: store.purge(args.device))
    if not count:
        print(f"no messages were stored for {args.device} in {where}")
    else:
        print(f"purged {count} message{'s' if count != 1 else ''} stored for {args.device} "
              f"in {where}")
    return 0


def add_queue_parser(subparsers: Any) -> None:
    queue = subparsers.add_parser(
        "queue", help="list, show and purge the messages stored for offline devices",
        description='Messages sent with "qos": 1 to a device that was offline wait in the '
                    "server's store until the device logs in.  These commands read a single "
                    "node's store file directly (safe while the server runs), or a cluster's "
                    "Redis with --cluster.")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--store", metavar="FILE",
                       help=f"the store file (default: ${STORE_ENV}, else {DEFAULT_STORE})")
    where.add_argument("--cluster", metavar="URL",
                       help=f"the cluster whose Redis is at URL instead (default: ${CLUSTER_ENV})")
    where.add_argument("--cluster-prefix", default="hypertcp:", metavar="P",
                       help="the cluster's [cluster] prefix (default: %(default)s)")
    actions = queue.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[where], help="each device with stored messages")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(run=_list)

    show = actions.add_parser("show", parents=[where], help="the messages stored for DEVICE")
    show.add_argument("device", metavar="DEVICE")
    show.add_argument("--limit", type=int, default=100, metavar="N",
                      help="the first N messages (default: %(default)s)")
    show.add_argument("--json", action="store_true", help="print a JSON list")
    show.set_defaults(run=_show)

    purge = actions.add_parser("purge", parents=[where],
                               help="delete every message stored for DEVICE")
    purge.add_argument("device", metavar="DEVICE")
    purge.set_defaults(run=_purge)
