"""The cluster service: this node's L{ClusterNode} and its L{RedisLink}, started and stopped together."""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application.service import MultiService

from hypertcp.app.config import ClusterConfig
from hypertcp.app.listeners import Listener
from hypertcp.cluster.keys import Keys
from hypertcp.cluster.node import ClusterNode, default_node_id
from hypertcp.cluster.redis import RedisLink
from hypertcp.cluster.tokens import ClusterTokens
from hypertcp.cluster.url import parse
from hypertcp.server.factory import HyperTCPFactory


class ClusterService(MultiService):
    """Joins the cluster when started, leaves it (cleanly, at once) when stopped."""

    def __init__(self, node: ClusterNode, link: RedisLink) -> None:
        super().__init__()
        self.node = node
        self.link = link
        link.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.node.start(self.link)

    def stopService(self) -> Any:
        left = self.node.stop()
        if left is None:
            return super().stopService()
        return left.addBoth(lambda _: super(ClusterService, self).stopService())


def advertised(config: ClusterConfig, listeners: list[Listener]
               ) -> Callable[[], Optional[tuple[str, int]]]:
    """Where devices reach this node: [cluster] advertise, else the first specific listener."""
    def address() -> Optional[tuple[str, int]]:
        if config.advertise is not None:
            return config.advertise
        for listener in listeners:
            if listener.port is not None:
                bound = listener.port.getHost()
                if bound.host not in ("0.0.0.0", "::", ""):
                    return bound.host, bound.port
        return None
    return address


def makeService(config: ClusterConfig, factory: HyperTCPFactory, listeners: list[Listener],
                reactor: Any) -> ClusterService:
    url = parse(config.redis)
    keys = Keys(config.prefix)
    node = ClusterNode(factory.hub, config.node_id or default_node_id(),
                       advertised(config, listeners), keys, reactor, ttl=config.ttl,
                       refresh=config.refresh, writes=factory.batch)
    node.tokens = ClusterTokens(factory.tokens, keys, factory.tokens_changed)
    tls = None
    if url.tls:
        from hypertcp.app.tls import client_options
        tls = client_options(url.host, config.ca or None)
    link = RedisLink(url, node.channels, node.received, node.bus_up, node.bus_down,
                     tls=tls, reactor=reactor)
    return ClusterService(node, link)
