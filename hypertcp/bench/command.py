"""C{hypertcp bench}: its command line, and the order of its runs."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from hypertcp.bench.errors import BenchError


def _bench(args: argparse.Namespace) -> None:
    """Run the load through our server and each peer in turn, then show the figures."""
    # Imported here, not at the top: the command line builds this command's
    # parser for every `hypertcp` command, and the load generator's modules
    # (epoll, multiprocessing, TLS certificates) are for this one alone.
    from hypertcp.bench import report
    from hypertcp.bench.fleet import run_idle
    from hypertcp.bench.frames import HyperTCP
    from hypertcp.bench.load import run_pairs
    from hypertcp.bench.message import payload_template
    from hypertcp.bench.peers import Broker, sink, start_floor, start_hypertcp, start_mosquitto
    from hypertcp.bench.sockets import raise_nofile, require_epoll
    from hypertcp.bench.storm import run_storm
    from hypertcp.bench.tls import client_context, make_certificates

    require_epoll()
    kind = report.mode(args)
    if args.idle is not None and args.storm is not None:
        raise BenchError("--idle and --storm are different runs; choose one")
    if args.pairs < 1 or args.procs < 1 or args.window < 1:
        raise BenchError("--pairs, --procs and --window must be at least 1")
    if (args.storm is not None and args.storm < 1) or (args.idle is not None and args.idle < 1):
        raise BenchError("--storm and --idle need at least 1 device")
    for peer in {"sink", "floor", "pyfloor"} & set(args.peer):
        if args.tls:
            raise BenchError(f"--peer {peer} has no TLS")
        if kind != "pairs":
            raise BenchError(f"--peer {peer} measures the load generator's pairs, not --{kind}")
    if args.nodes is not None:
        if args.nodes < 2:
            raise BenchError("--nodes needs at least 2 nodes")
        if kind != "pairs" or args.port is not None or args.tls or set(args.peer) - {
                "mosquitto"}:
            raise BenchError("--nodes measures pairs through a cluster the bench starts, over "
                             "plain TCP: not with --idle, --storm, --port, --tls, or a --peer "
                             "but mosquitto")
    raise_nofile({"pairs": 2 * args.pairs, "idle": args.idle, "storm": args.storm}[kind] + 200)
    payload_template(args.payload)  # fail early on a payload too small
    run = {"pairs": run_pairs, "idle": run_idle, "storm": run_storm}[kind]

    with tempfile.TemporaryDirectory(prefix="hypertcp-bench-certs-") as certdir:
        certs = None
        if args.tls and args.port is None:
            certs = make_certificates(Path(certdir))

        def targets() -> list[Callable[[], Optional[Broker]]]:
            if args.port is not None:
                if not args.token:
                    raise BenchError("a running server needs --token (a fleet token)")
                tls = client_context(args.ca) if args.tls else None
                found = [lambda: Broker("HyperTCP", HyperTCP(args.token), (args.host, args.port),
                                        args.server_pid, tls=tls)]
            elif args.nodes is not None:
                from hypertcp.bench.cluster import start_cluster

                # The same cluster twice: pairs kept on one node, then split across two.
                found = [lambda cross=cross: start_cluster(args.nodes, cross, args.server_arg,
                                                           args.backlog)
                         for cross in (False, True)]
            else:
                found = [lambda: start_hypertcp(args.server_arg, certs, args.backlog)]
            for peer in args.peer:
                if peer == "mosquitto":
                    found.append(lambda: start_mosquitto(
                        int(args.heartbeat * 2) if kind == "idle" else 0, certs,
                        args.mqtt_qos, 0 if args.rate else args.window))
                elif peer == "floor":
                    found.append(start_floor)
                elif peer == "pyfloor":
                    found.append(lambda: start_floor("python"))
                else:
                    found.append(sink)
            return found

        ordered = targets()
        if args.transport == "ws":
            if kind != "pairs" or args.port is not None or args.tls:
                raise BenchError("--transport ws measures pairs, without TLS, through a server "
                                 "the bench starts")
            from hypertcp.bench.websocket import start as start_ws
            # TCP<->TCP second: without a peer, the ratios are taken to the second run.
            ordered[:1] = [lambda: start_ws(args.server_arg, True, args.backlog), ordered[0],
                           lambda: start_ws(args.server_arg, False, args.backlog)]

        runs: dict[str, dict] = {}
        names: dict[str, str] = {}
        for start in ordered:
            broker = start()
            if broker is None:
                print("hypertcp bench: mosquitto is not installed (apt-get install mosquitto); "
                      "skipping the Mosquitto run", file=sys.stderr)
                continue
            try:
                figures = run(broker, args)
            finally:
                broker.stop()
            runs[broker.key] = figures
            names[broker.key] = broker.name
    report.show(args, runs, names)


def run(args: argparse.Namespace) -> int:
    """The C{hypertcp bench} command: 0, or 1 with the reason on stderr."""
    try:
        if args.qos:
            if args.transport != "tcp":
                raise BenchError("--qos 1 measures TCP devices; --transport ws is for pairs")
            from hypertcp.bench.stored import run as run_stored
            run_stored(args)
        else:
            _bench(args)
    except BenchError as e:
        print(f"hypertcp bench: {e}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers: Any) -> None:
    """The C{hypertcp bench} subcommand."""
    parser = subparsers.add_parser(
        "bench", help="measure throughput, latency and cost, beside Mosquitto",
        description="Push messages through a HyperTCP server over N sender->receiver pairs "
                    "and report delivered msgs/s, latency, loss and the server's CPU and "
                    "memory. Starts its own server (twistd -n hypertcp) unless --port is "
                    "given. --peer mosquitto runs the same load over MQTT 3.1.1 (QoS 0, "
                    "or 1 with --mqtt-qos 1) through Debian's mosquitto and prints ratios "
                    "to it; --peer floor through a C server that makes the wire contract's "
                    "system calls and nothing more, the protocol's own cost (--peer pyfloor: "
                    "the same in plain Python); --peer sink runs it with no broker, the load "
                    "generator's own ceiling. --idle N and --storm N are the other runs: an "
                    "idle fleet, and N devices logging in at once. --tls runs any of them "
                    "over TLS.")
    load = parser.add_argument_group("load")
    load.add_argument("--pairs", type=int, default=10, metavar="N",
                      help="sender->receiver pairs (default: %(default)s)")
    load.add_argument("--payload", type=int, default=64, metavar="BYTES",
                      help="size of each message's JSON payload (default: %(default)s)")
    load.add_argument("--rate", type=float, default=0, metavar="MSGS",
                      help="total messages per second; 0 is as fast as the window allows "
                           "(default: %(default)s)")
    load.add_argument("--window", type=int, default=64, metavar="N",
                      help="as fast as possible: messages a sender may have on their way; "
                           "1 is request/response, one in flight (default: %(default)s)")
    load.add_argument("--no-ack", dest="ack", action="store_false",
                      help="receivers do not acknowledge delivered frames (they do by default, "
                           "as the sketch does)")
    load.add_argument("--duration", type=float, default=10, metavar="S",
                      help="seconds measured (default: %(default)s)")
    load.add_argument("--warmup", type=float, default=1, metavar="S",
                      help="seconds of load before measuring (default: %(default)s)")
    load.add_argument("--procs", type=int, default=1, metavar="K",
                      help="load-generator processes (default: %(default)s)")
    load.add_argument("--transport", choices=("tcp", "ws"), default="tcp",
                      help="ws: also run the pairs with one end on the WebSocket gateway, "
                           "WS->TCP and TCP->WS, beside TCP<->TCP (default: %(default)s)")
    stored = parser.add_argument_group("store and forward")
    stored.add_argument("--qos", type=int, choices=(0, 1), default=0,
                        help="1: instead, measure qos-1 messages -- stored for offline devices "
                             "and delivered to online ones -- against plain ones, and the drain "
                             "of a backlog at login (default: %(default)s)")
    stored.add_argument("--queued", type=int, default=10000, metavar="N",
                        help="with --qos 1: messages stored for one device before it logs in, "
                             "whose drain is timed (default: %(default)s)")
    stored.add_argument("--devices", type=int, metavar="N",
                        help="with --qos 1: the offline devices the stored run's messages go "
                             "to, each sender taking them in turn (default: one per sender)")
    idle = parser.add_argument_group("idle fleet")
    idle.add_argument("--idle", type=int, metavar="N",
                      help="instead of pairs: N logged-in connections that only heartbeat "
                           "(10000 is the target figure)")
    idle.add_argument("--idle-time", type=float, default=30, metavar="S",
                      help="seconds of idling measured (default: %(default)s)")
    idle.add_argument("--heartbeat", type=float, default=30, metavar="S",
                      help="seconds between a device's heartbeats, the sketch's 30 "
                           "(default: %(default)s)")
    storm = parser.add_argument_group("reconnect storm")
    storm.add_argument("--storm", type=int, metavar="N",
                       help="instead of pairs: N devices connect and log in at once, as after "
                            "a Wi-Fi outage; the time until all are online, logins/s, failures")
    storm.add_argument("--storm-timeout", type=float, default=120, metavar="S",
                       help="seconds a device may take to get online before it counts as "
                            "failed (default: %(default)s)")
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--nodes", type=int, metavar="N",
                         help="run the pairs through N cluster nodes on one Redis (Debian's "
                              "redis-server, started on a loopback port): once with each "
                              "pair's sender and receiver on one node, once with them on two "
                              "different nodes, and report both")
    where = parser.add_argument_group("servers")
    where.add_argument("--peer", action="append",
                       choices=("mosquitto", "floor", "pyfloor", "sink"), default=[],
                       help="also run the load through mosquitto, through the contract's "
                            "floor (a C server built from hypertcp/bench/floor.c with the "
                            "system's compiler) or its twin in plain Python, or with no broker "
                            "at all (repeatable)")
    where.add_argument("--mqtt-qos", type=int, choices=(0, 1), default=0,
                       help="the QoS of Mosquitto's pairs: 0, or 1, where each publish is "
                            "answered and each delivery acknowledged (PUBACK), as HyperTCP "
                            "answers each message and its receivers acknowledge each "
                            "delivery (default: %(default)s)")
    where.add_argument("--host", default="127.0.0.1",
                       help="a running server's host, with --port (default: %(default)s)")
    where.add_argument("--port", type=int, help="bench a running server instead of starting one")
    where.add_argument("--token", help="a fleet token for the running server")
    where.add_argument("--tls", action="store_true",
                       help="the same load over TLS: the servers we start get a certificate "
                            "made like `hypertcp certs` does, and listen for TLS")
    where.add_argument("--ca", metavar="PEM",
                       help="with --tls and --port: the CA that signed the running server's "
                            "certificate (default: the system's)")
    where.add_argument("--server-pid", type=int, metavar="PID",
                       help="the running server's pid, to measure its CPU and memory")
    where.add_argument("--backlog", type=int, metavar="N",
                       help="the listen backlog of the HyperTCP server we start (Twisted's "
                            "default is 50; mosquitto's 100)")
    where.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                       help="an extra option for the server we start, e.g. "
                            "--server-arg=--idle-timeout=300 (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(run=run)
