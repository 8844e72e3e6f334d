"""
The store service: store and forward wired from C{[store]} -- the embedded
SQLite store on a single node, the cluster's Redis in a cluster -- with its
expiry sweep, opened before the listeners and closed after them.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from hypertcp.app.config import ConfigError, StoreConfig
from hypertcp.server.factory import HyperTCPFactory
from hypertcp.server.offline import Offline
from hypertcp.store.records import Bounds


class StoreService(Service):
    """Starts the store and its sweep; on stop, commits what was accepted and closes it."""

    log = Logger()

    def __init__(self, offline: Offline, interval: float, clock: Any, where: str) -> None:
        self.offline = offline
        self.where = where
        self.interval = interval
        self._sweep = LoopingCall(offline.sweep)
        self._sweep.clock = clock

    def startService(self) -> None:
        super().startService()
        self.offline.store.start()
        self.log.info("messages sent with qos 1 are stored in {where}", where=self.where)
        self._sweep.start(self.interval, now=True)

    def stopService(self) -> Optional[Any]:
        super().stopService()
        if self._sweep.running:
            self._sweep.stop()
        return self.offline.store.close()


def _bounds(config: StoreConfig) -> Bounds:
    return Bounds(config.max_queued, config.max_queued_bytes, config.max_total_bytes)


def _offline(config: StoreConfig, factory: HyperTCPFactory, store: Any, clock: Any) -> Offline:
    return Offline(factory.hub, store, clock, config.default_ttl, config.max_ttl, config.window)


def embedded(config: StoreConfig, factory: HyperTCPFactory, reactor: Any) -> StoreService:
    """A single node's store: the SQLite file at C{[store] path}, written by C{[store] writer}."""
    from hypertcp.store.sqlite import SQLiteStore
    from hypertcp.store.sqlitefile import StoreFileError, connect, open_writer
    from hypertcp.store.writers import ProcessWriter, ThreadWriter

    probe = None
    try:
        if config.writer == "thread":
            writer: Any = ThreadWriter(open_writer(config.path, config.synchronous), reactor)
        else:
            # Made or migrated here, so that a file that cannot be used stops
            # the start; kept open to tell whether the writer is needed yet.
            probe = connect(config.path, config.synchronous)
            writer = ProcessWriter(config.path, config.synchronous, reactor)
    except StoreFileError as e:
        raise ConfigError(f"[store] path: {e}") from None
    store = SQLiteStore(writer, _bounds(config), reactor, config.path, writes=factory.batch,
                        probe=probe)
    return StoreService(_offline(config, factory, store, reactor), config.sweep_interval, reactor,
                        f"{config.path} (SQLite, synchronous={config.synchronous}, "
                        f"written by a {config.writer})")


def clustered(config: StoreConfig, factory: HyperTCPFactory, cluster: Any,
              reactor: Any) -> StoreService:
    """A cluster node's store: the cluster's Redis, through the node's link."""
    from hypertcp.store.redis import RedisStore

    node = cluster.node
    store = RedisStore(cluster.link.call, node.keys, _bounds(config), reactor, node.id,
                       config.sweep_interval)
    return StoreService(_offline(config, factory, store, reactor), config.sweep_interval, reactor,
                        "the cluster's Redis")
