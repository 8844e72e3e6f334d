"""
GET /metrics: the node in Prometheus' text format, through prometheus_client.

One source of truth: L{NodeCollector} reads the figures the server keeps
anyway -- C{factory.counters}, C{hub.delivered}, each session's messages in
and out -- when Prometheus scrapes, so the message path pays nothing for
metrics.  The page is rendered in the reactor thread (prometheus_client's
own Twisted resource runs collectors in a thread pool, racing the reactor).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from hypertcp.app.buffers import buffered
from hypertcp.app.web.figures import TRANSPORTS, messages, transport
from hypertcp.app.web.site import JSONResource, WebRequest, problem
from hypertcp.protocol.commands import Command, Status

if TYPE_CHECKING:
    from hypertcp.app.listeners import Listener
    from hypertcp.app.web.gateway import WebGateway
    from hypertcp.server.factory import HyperTCPFactory

#: Counters that mean a connection was closed or refused, by reason.
DROPS = ("slow_receiver", "idle", "login_timeout", "flood", "max_connections",
         "pending_per_source", "evicted")
#: Counters that count a status under another name.
ALIASES = {"quota": "QUOTA_LIMIT", "oversize": "ILLEGAL_COMMAND_BODY"}
ROLES = ("device", "fleet", "observer")
#: Listener kinds whose connections are this node's sessions.
NODE_LISTENERS = ("tcp", "tls", "web")


def sort_counters(counters: dict[str, int]) -> tuple[int, dict, dict, dict]:
    """C{factory.counters} as (connections opened, refusals by status, drops, the rest)."""
    refusals: dict[str, int] = {}
    drops: dict[str, int] = dict.fromkeys(DROPS, 0)
    other: dict[str, int] = {}
    opened = 0
    for key, value in counters.items():
        name = ALIASES.get(key) or key.upper()
        if key == "connections":
            opened = value
        elif key in drops:
            drops[key] = value
        elif name in Status.__members__:
            refusals[name] = refusals.get(name, 0) + value
        else:
            other[key] = value
    return opened, refusals, drops, other


class NodeCollector:
    """The node's figures as metric families, read at each scrape."""

    def __init__(self, node: "HyperTCPFactory", gateway: Optional["WebGateway"],
                 listeners: Callable[[], list["Listener"]]) -> None:
        self.node = node
        self.gateway = gateway
        self.listeners = listeners

    def _by_command(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "hypertcp_frames_received", "Frames received from clients, by command "
            "(logins, messages, pings and acknowledgements alike)", labels=["transport", "command"])
        sent = CounterMetricFamily(
            "hypertcp_frames_sent", "Frames the server sent on its own, by command "
            "(deliveries, broadcasts, events, pings, redirects; answers aside)",
            labels=["transport", "command"])
        for name, source in (("tcp", self.node), ("ws", self.gateway)):
            if source is None:
                continue
            for family, counts in ((received, source.received_by_command),
                                   (sent, source.sent_by_command)):
                for command, count in enumerate(counts):
                    if count:
                        family.add_metric([name, _command_name(command)], count)
        yield received
        yield sent

    def collect(self) -> Iterator[Metric]:
        node, hub = self.node, self.node.hub
        sessions = list(node.sessions)

        open_by = dict.fromkeys(TRANSPORTS, 0)
        queued = paused = 0
        by_port: dict[int, int] = {}
        for session in sessions:
            open_by[transport(session)] = open_by.get(transport(session), 0) + 1
            if session.paused:
                paused += 1
            queued += buffered(session.transport)
            try:
                port = session.transport.getHost().port
            except AttributeError:
                continue
            by_port[port] = by_port.get(port, 0) + 1
        family = GaugeMetricFamily("hypertcp_connections", "Open client connections",
                                   labels=["transport"])
        for name, count in open_by.items():
            family.add_metric([name], count)
        yield family

        opened, refusals, drops, other = sort_counters(node.counters)
        yield CounterMetricFamily("hypertcp_connections_opened",
                                  "Client connections accepted since start", value=opened)

        roles = dict.fromkeys(ROLES, 0)
        for peer in hub.sessions:
            roles[peer.token.role] = roles.get(peer.token.role, 0) + 1
        family = GaugeMetricFamily("hypertcp_sessions",
                                   "Logged-in connections by the role of their token",
                                   labels=["role"])
        for role, count in roles.items():
            family.add_metric([role], count)
        yield family
        yield GaugeMetricFamily("hypertcp_devices", "Device ids with a live connection",
                                value=len(hub.devices))
        yield GaugeMetricFamily("hypertcp_draining", "1 while this node is drained",
                                value=int(hub.draining is not None))

        totals = messages(node, self.gateway)
        received = CounterMetricFamily("hypertcp_messages_received",
                                       "Frames received from clients (acknowledgements aside)",
                                       labels=["transport"])
        sent = CounterMetricFamily("hypertcp_messages_sent",
                                   "Messages, broadcasts and events sent to clients",
                                   labels=["transport"])
        for name, (count_in, count_out) in totals.items():
            received.add_metric([name], count_in)
            sent.add_metric([name], count_out)
        yield received
        yield sent
        yield from self._by_command()
        yield CounterMetricFamily("hypertcp_deliveries",
                                  "Messages and broadcasts handed to receiving connections",
                                  value=hub.delivered)

        if hub.offline is not None:
            yield from _store(hub.offline.stats())

        family = CounterMetricFamily("hypertcp_refusals", "Requests answered with an error status",
                                     labels=["status"])
        for name, count in sorted(refusals.items()):
            family.add_metric([name], count)
        yield family
        family = CounterMetricFamily("hypertcp_drops", "Connections closed or refused by the server",
                                     labels=["reason"])
        for name, count in drops.items():
            family.add_metric([name], count)
        yield family
        if other:
            family = CounterMetricFamily("hypertcp_events", "Other events the server counts",
                                         labels=["event"])
            for name, count in sorted(other.items()):
                family.add_metric([name], count)
            yield family

        yield GaugeMetricFamily("hypertcp_queued_bytes",
                                "Bytes queued for clients that the kernel has not taken",
                                value=queued)
        yield GaugeMetricFamily("hypertcp_slow_readers",
                                "Connections whose client has stopped reading", value=paused)

        family = GaugeMetricFamily("hypertcp_listener_connections",
                                   "Open client connections per listener",
                                   labels=["kind", "address"])
        for listener in self.listeners():
            if listener.port is None or listener.kind not in NODE_LISTENERS:
                continue
            host = listener.port.getHost()
            family.add_metric([listener.kind, f"{host.host}:{host.port}"],
                              by_port.get(host.port, 0))
        yield family


#: What the store counts, as the event label of hypertcp_store_messages_total.
STORE_EVENTS = ("stored", "refused", "failed", "delivered", "expired", "undelivered")


def _store(stats: dict) -> Iterator[Metric]:
    """Store and forward's counts (L{Offline.stats})."""
    family = CounterMetricFamily(
        "hypertcp_store_messages",
        "qos-1 messages stored, refused over a bound, failed to store, delivered from the "
        "store, expired; and live deliveries not acknowledged (then stored)",
        labels=["event"])
    for event in STORE_EVENTS:
        family.add_metric([event], stats[event])
    yield family
    yield GaugeMetricFamily("hypertcp_store_backlogs",
                            "Devices being sent their stored messages", value=stats["backlogs"])
    yield CounterMetricFamily("hypertcp_store_writer_restarts",
                              "Times the store's writer process was started again after it died",
                              value=stats["writer_restarts"])


def registry(collector: NodeCollector) -> CollectorRegistry:
    """The node's metrics and the process's (CPU, memory, file descriptors)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(collector)
    ProcessCollector(registry=found)
    return found


class MetricsResource(JSONResource):
    """/metrics, behind a bearer token when C{[web] metrics_token} is set."""

    isLeaf = True

    def __init__(self, metrics: CollectorRegistry, token: str = "") -> None:
        super().__init__()
        self.metrics = metrics
        self.token = token.encode("utf-8")

    def render_GET(self, request: WebRequest) -> bytes:
        if self.token:
            given = request.getHeader(b"authorization") or b""
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                request.setHeader(b"www-authenticate", b'Bearer realm="metrics"')
                return problem(request, 401, "metrics need Authorization: Bearer "
                                             "with [web] metrics_token")
        accept: Any = request.getHeader(b"accept") or b""
        encode, content_type = choose_encoder(accept.decode("latin-1"))
        request.setHeader(b"content-type", content_type.encode())
        return encode(self.metrics)


def _command_name(command: int) -> str:
    """A command byte as a label: its name, or the number of one the protocol does not define."""
    try:
        return Command(command).name
    except ValueError:
        return str(command)
