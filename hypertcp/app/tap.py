"""
C{twistd hypertcp}: the service tree, wired from the configuration.

Nothing here decides behaviour.  It builds the token store, the hub and the
session factory, then one service per configured piece -- a L{Listener}
per plain TCP endpoint, the token reload timer, the SIGHUP L{Reloader} and
the parts it reloads, and, only when configured, TLS, the cluster, the
balancer, the manhole and the web service (so their imports -- pyOpenSSL,
conch, Autobahn, prometheus_client -- cost nothing otherwise).  With
C{--workers N} it builds none of that: the process runs N workers that do
(L{hypertcp.app.workers}).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

from hypertcp.app.config import Config, ConfigError
from hypertcp.app.logs import Logs, for_twistd
from hypertcp.app.options import Options
from hypertcp.app.reload import Reloader
from hypertcp.app.startup import one_line_failures
from hypertcp.server.tokens import TokenFileError, TokenStore

if TYPE_CHECKING:
    from hypertcp.server.factory import HyperTCPFactory

# The server core, the listeners and the reload of the config are imported
# where the tree is built, not here: twistd imports this module to parse
# the command line, and the options decide first whether the process needs
# pyOpenSSL at all (hypertcp.app.lean), which Twisted's TCP support would
# otherwise import with them.

__all__ = ["Options", "makeService"]

log = Logger()


def first_start(store: TokenStore) -> None:
    """
    With no token file, make one holding a single fleet token and print it
    once: the server works with no editing and no well-known secret.
    """
    secret = store.add("default", role="fleet")
    print(f"HyperTCP: created token file {store.path} with one fleet token.\n"
          f"HyperTCP: it is shown only now; log in with:\n{secret}",
          file=sys.stderr, flush=True)


def token_store(config: Config) -> TokenStore:
    """The token file, made on first start."""
    try:
        store = TokenStore(config.server.tokens)
    except TokenFileError as e:
        raise ConfigError(f"{e}; fix or move it away") from None
    except OSError as e:
        raise ConfigError(f"token file {config.server.tokens}: {e.strerror}") from None
    if not store.exists:
        first_start(store)
    return store


def node(config: Config, reactor: Any) -> "HyperTCPFactory":
    """The server core: tokens, hub with its commands and plug-ins, session factory."""
    from hypertcp.server import commands
    from hypertcp.server.factory import HyperTCPFactory
    from hypertcp.server.hub import Hub

    store = token_store(config)
    hub = Hub(reactor, config.limits.ack_timeout)
    commands.install(hub, config.server.redirect_targets)
    for hook in config.server.handlers:
        module, _, name = hook.partition(":")
        getattr(importlib.import_module(module), name)(hub)
    return HyperTCPFactory(config.limits, store, hub, reactor,
                           require_challenge=config.auth.require_challenge,
                           bind_certificates=config.tls.bind_certificate_to_id)


class Top(MultiService):
    """
    The whole tree.  Given to twistd's Application, it hands it the log
    observer too: twistd then logs through L{Logs} instead of its own.
    """

    logs: Optional[Logs] = None

    def setServiceParent(self, parent: Any) -> None:
        if self.logs is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.logs)
        super().setServiceParent(parent)


def _tokens_part(factory: "HyperTCPFactory") -> Callable[[], str]:
    def reload() -> str:
        if not factory.reload_tokens(force=True):
            return "unreadable, the old tokens stay in force"
        live = sum(not r.revoked for r in factory.tokens.list())
        return f"{factory.tokens.path} read, {live} live tokens"
    return reload


def build(config: Config, reactor: Any, options: Optional[Options] = None) -> Top:
    """
    The whole tree for C{config}; L{ConfigError} for files that make no
    service.  With twistd's C{options}, it also logs where they say, and
    reloads the config file they name on SIGHUP.
    """
    from twisted.application.internet import TimerService

    from hypertcp.app.listeners import Listener
    from hypertcp.app.reconfigure import Reconfigure

    top = Top()
    reloader = Reloader(reactor)
    reloader.setServiceParent(top)
    top.logs = for_twistd(config.log, getattr(options, "parent", None))
    if top.logs is not None and top.logs.to_file:
        reloader.register("log file", top.logs.reopen)
    factory = node(config, reactor)
    if config.store.enabled and not config.cluster.redis:
        from hypertcp.app.store import embedded
        # Before the listeners: open before the first device, closed after the last.
        embedded(config.store, factory, reactor).setServiceParent(top)
    if options is not None and options["config"]:
        reloader.register("config", Reconfigure(options["config"], options.overrides, config,
                                                factory, top.logs).reload)
    reloader.register("token file", _tokens_part(factory))
    backlog, reuse_port = config.server.backlog, config.server.reuse_port
    if config.tls.bind_certificate_to_id and config.server.listen:
        log.warn("[tls] bind_certificate_to_id: logins on the plain listeners ({listen}) "
                 "carry no certificate and are not bound", listen=" ".join(config.server.listen))
    plain = [Listener("tcp", description, factory, reactor, backlog, reuse_port)
             for description in config.server.listen]
    for listener in plain:
        listener.setServiceParent(top)
    TimerService(config.server.token_reload, factory.reload_tokens).setServiceParent(top)
    certificate = None
    if config.tls.certificate:
        from hypertcp.app.tls import certificate_service, listeners
        certificate = certificate_service(config.tls, reactor)
        certificate.setServiceParent(top)
        reloader.register("TLS certificate", certificate.reload_now)
        for listener in listeners(config.tls, certificate, factory, reactor, backlog,
                                  reuse_port):
            listener.setServiceParent(top)
    cluster = None
    if config.cluster.redis:
        from hypertcp.app.cluster import makeService as cluster_service
        cluster = cluster_service(config.cluster, factory, plain, reactor)
        cluster.setServiceParent(top)
        if config.store.enabled:
            from hypertcp.app.store import clustered
            clustered(config.store, factory, cluster, reactor).setServiceParent(top)
    balancer = None
    if config.balancer.listen:
        from hypertcp.app.balancer.service import makeService as balancer_service
        balancer = balancer_service(config.balancer, factory, certificate, reactor, backlog,
                                    cluster.node if cluster is not None else None)
        balancer.setServiceParent(top)
        if config.balancer.backends:
            reloader.register("balancer token file", balancer.reload_token)
    if config.manhole.listen:
        from hypertcp.app.manhole import makeService as manhole_service
        manhole_service(config.manhole, factory, balancer, reactor,
                        backlog).setServiceParent(top)
    if config.web.listen:
        from hypertcp.app.web.service import makeService as web_service
        web_service(config.web, factory, certificate, top, reactor, backlog,
                    reuse_port).setServiceParent(top)
    return top


def makeService(options: Options) -> IService:
    from twisted.internet import reactor
    try:
        if options["workers"]:
            from hypertcp.app.workers import monitor
            workers = monitor(options.config, options.argv, options["workers"], reactor)
            # Made here, once: the workers must not each make a token file of their own.
            token_store(options.config)
            return workers
        top = build(options.config, reactor, options)
    except ConfigError as e:
        raise SystemExit(f"twistd hypertcp: {e}") from None
    one_line_failures(to_terminal=top.logs is None or top.logs.to_file)
    return top
