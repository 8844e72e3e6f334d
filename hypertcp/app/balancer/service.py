"""The balancer service: its nodes, their health, picking, draining, and its commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from hypertcp.app.balancer import relay
from hypertcp.app.balancer.backends import Backend
from hypertcp.app.balancer.interfaces import INode
from hypertcp.app.balancer.picking import Ring, least_loaded
from hypertcp.app.balancer.registered import Connect, Registry
from hypertcp.app.balancer.session import BalancerFactory
from hypertcp.app.config import BalancerConfig, ConfigError
from hypertcp.app.listeners import DEFAULT_BACKLOG, Listener
from hypertcp.client.txclient import clientService
from hypertcp.protocol.commands import Status
from hypertcp.server.commands import require_grant
from hypertcp.server.factory import HyperTCPFactory
from hypertcp.server.hub import CommandError, Hub
from hypertcp.server.interfaces import IPeer

if TYPE_CHECKING:
    from hypertcp.cluster.node import ClusterNode


class Balancer(MultiService):
    """
    The nodes, their health, and the choice of a node for each login.  The
    nodes are the C{[balancer] backends}, each checked through an observer
    connection; or, with none listed and a C{cluster}, every node
    registered in the cluster's Redis.
    """

    log = Logger()

    def __init__(self, config: BalancerConfig, node: HyperTCPFactory,
                 reactor: Any = None, cluster: Optional[ClusterNode] = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.node = node
        self.policy = config.policy
        self.tls = config.tls
        self.listeners: list[Any] = []
        self.backends: list[Any] = []
        self.registry: Optional[Registry] = None
        if config.backends:
            self._listed(config, reactor)
        elif cluster is not None:
            self.registry = Registry(cluster, self._registry_changed, self._connector(reactor))
        else:
            raise ValueError("no nodes: list [balancer] backends, or join a cluster "
                             "([cluster] redis) whose registered nodes it uses")
        self._ring = Ring(self.backends)
        self.factory = BalancerFactory(self, node)

    def _health_token(self) -> str:
        with open(self.config.token_file, encoding="utf-8") as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"{self.config.token_file} is empty; it should hold a token "
                             "granted stats and drain")
        return token

    def _listed(self, config: BalancerConfig, reactor: Any) -> None:
        """The [balancer] backends, each watched through an observer connection."""
        token = self._health_token()
        for host, port in config.backends:
            backend = Backend(host, port, token, config.backend_tls, config.health_timeout,
                              config.health_interval, reactor)
            tls: Any = False
            if config.backend_tls:
                from hypertcp.app.tls import client_options
                tls = client_options(host, config.ca or None)
            backend.link = relay.connect(reactor, host, port, tls)
            clientService(backend, host, port, tls=tls, reactor=reactor,
                          initialDelay=config.health_interval,
                          maxDelay=config.health_interval).setServiceParent(self)
            self.backends.append(backend)
        TimerService(config.health_interval, self._ask_all).setServiceParent(self)

    def reload_token(self) -> str:
        """
        Read C{[balancer] token_file} again (SIGHUP): when the token changed,
        each health connection logs in anew with it, so a rotated token is
        proven now -- and one its node refused is tried again.  A file that
        cannot be read, or is empty, leaves the old token in force.
        """
        token = self._health_token()
        if all(backend.token == token for backend in self.backends):
            return f"{self.config.token_file} unchanged"
        for backend in self.backends:
            backend.token = token
            backend.loginFailure = None
            service = backend.service
            if service is not None and self.running:
                # Stopping drops the connection; starting again reconnects at once.
                if service.running:
                    service.stopService()
                service.startService()
        return (f"{self.config.token_file} read: a new health token, "
                f"{len(self.backends)} nodes logging in with it")

    def _connector(self, reactor: Any) -> Connect:
        """
        How the relay reaches a registered node: with TLS, checked against
        [balancer] ca, when its registration says its port speaks it.
        """
        def connect(host: str, port: int, tls: bool) -> Callable[[Any], Deferred]:
            options: Any = False
            if tls:
                from hypertcp.app.tls import client_options
                options = client_options(host, self.config.ca or None)
            return relay.connect(reactor, host, port, options)
        return connect

    def _ask_all(self) -> None:
        for backend in self.backends:
            backend.ask()

    def _registry_changed(self) -> None:
        """Registered nodes came or went: the candidates, and the sticky ring, are theirs now."""
        assert self.registry is not None
        self.backends = self.registry.candidates()
        self._ring = Ring(self.backends)

    def pick(self, key: Optional[str]) -> Optional[INode]:
        """The node for a login keyed by C{key} (its device id), or None if none is up."""
        if self.policy == "sticky" and key is not None:
            return self._ring.pick(key)
        return least_loaded(self.backends)

    def backend(self, name: str) -> INode:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(f"no backend {name!r}; the backends are "
                       + (", ".join(b.name for b in self.backends) or "none yet"))

    def address(self) -> tuple[str, int]:
        """Where drained devices are sent: [balancer] advertise, else our own listener."""
        if self.config.advertise is not None:
            return self.config.advertise
        for listener in self.listeners:
            if listener.port is not None:
                bound = listener.port.getHost()
                if bound.host not in ("0.0.0.0", "::", ""):
                    return bound.host, bound.port
        raise ValueError("the balancer listens on every interface (or not yet): "
                         "set [balancer] advertise to the address devices reach it at")

    def drain(self, name: str) -> Deferred:
        """
        Send no one new to the node C{name}, and have it redirect every session
        it holds here, to be spread over the others: a Deferred of the node's
        status for the request.  A node that is down is only marked.
        """
        backend = self.backend(name)
        host, port = self.address()
        self.log.info("balancer: draining node {name} through {host}:{port}",
                      name=name, host=host, port=port)
        return backend.drain(host, port, self.tls)

    def undrain(self, name: str) -> None:
        """Let the node C{name} take new devices again."""
        self.backend(name).undrain()
        self.log.info("balancer: node {name} takes devices again", name=name)

    def status(self) -> dict:
        return {"policy": self.policy, "source": "backends" if self.registry is None else "registry",
                "backends": [b.state() for b in self.backends]}

    def register_commands(self, hub: Hub) -> None:
        """Let tokens granted stats and drain run the balancer with messages to "server"."""
        hub.register_command("backends", self._backends_command)
        hub.register_command("drain_backend", self._drain_command)
        hub.register_command("undrain_backend", self._undrain_command)

    def _named(self, sender: IPeer, payload: dict, command: str) -> str:
        require_grant(sender, "drain", command)
        if not sender.token.unbounded:
            raise CommandError(Status.NOT_ALLOWED,
                               f"{command} needs a token with no prefix and reach *")
        name = payload.get("backend")
        if not isinstance(name, str):
            raise CommandError(Status.ILLEGAL_COMMAND_BODY, f"{command} needs backend: HOST:PORT, "
                               "or a registered node's id")
        try:
            self.backend(name)
        except KeyError as e:
            raise CommandError(Status.DEVICE_NOT_IN_NETWORK, str(e)) from None
        return name

    def _backends_command(self, hub: Hub, sender: IPeer, payload: dict) -> dict:
        require_grant(sender, "stats", "backends")
        return {"command": "backends", **self.status()}

    def _drain_command(self, hub: Hub, sender: IPeer, payload: dict) -> dict:
        name = self._named(sender, payload, "drain_backend")
        try:
            self.drain(name).addErrback(lambda _: None)  # drain() logs a failure
        except ValueError as e:
            raise CommandError(Status.SERVER_EXCEPTION, str(e)) from None
        return {"command": "drain_backend", "backend": name}

    def _undrain_command(self, hub: Hub, sender: IPeer, payload: dict) -> dict:
        name = self._named(sender, payload, "undrain_backend")
        self.undrain(name)
        return {"command": "undrain_backend", "backend": name}


def makeService(config: BalancerConfig, node: HyperTCPFactory, certificate: Any = None,
                reactor: Any = None, backlog: int = DEFAULT_BACKLOG,
                cluster: Optional[ClusterNode] = None) -> Balancer:
    """
    The balancer, its health checks and its listeners, for C{[balancer]} in
    C{config}; with no backends listed, over the nodes registered in
    C{cluster}.
    """
    try:
        balancer = Balancer(config, node, reactor, cluster)
    except (OSError, ValueError) as e:
        raise ConfigError(f"balancer: {e}") from None
    factory: Any = balancer.factory
    if config.tls:
        from twisted.protocols.tls import TLSMemoryBIOFactory
        factory = TLSMemoryBIOFactory(certificate, False, factory)
    for description in config.listen:
        listener = Listener("balancer", description, factory, reactor, backlog)
        listener.setServiceParent(balancer)
        balancer.listeners.append(listener)
    balancer.register_commands(node.hub)
    return balancer
