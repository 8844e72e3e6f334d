"""
C{--workers N}: one host's cores, each running a node.

The process given C{--workers N} serves no devices itself: it runs N
C{twistd hypertcp} workers with its own arguments, each listening on the
same ports with SO_REUSEPORT (so the kernel spreads new connections over
them) and joined to the others through the cluster's Redis (so a device on
one reaches a device on any other), and restarts a worker that dies.  Each
worker is a node with the id C{BASE-i}, BASE being C{[cluster] node_id} or
the host's name, so a restarted worker comes back under the same id.  The
workers' log lines come out in this process's log, each tagged with the
worker's id.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.runner.procmon import ProcessMonitor

from hypertcp.app import reuseport
from hypertcp.app.config import Config, ConfigError, check_reuse_port

#: How a worker starts: the same interpreter, so the same virtualenv and plug-ins.
BOOTSTRAP = "from hypertcp.app.workers import run; run()"
#: The monitor's pid, for a worker to tell whether it outlived it.
MONITOR_PID = "HYPERTCP_MONITOR_PID"
PR_SET_PDEATHSIG = 1


def run() -> None:
    """
    A worker's twistd, in a session of its own: a terminal's Ctrl-C or a
    signal to the monitor's process group reaches the monitor only, which
    stops the workers itself.  On Linux a worker is also stopped when the
    monitor dies, so none is left holding the port.
    """
    try:
        os.setsid()
    except OSError:
        pass  # a sandbox that forbids it: signals to the group reach the workers too
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the monitor's stop is what stops the workers
    if os.environ.get(MONITOR_PID) not in (None, str(os.getppid())):
        sys.exit("HyperTCP worker: the monitor has gone already")
    from twisted.scripts.twistd import run as twistd
    twistd()


class WorkerMonitor(ProcessMonitor):
    """Twisted's process monitor, saying when a worker starts or dies, and outliving its workers."""

    def startService(self) -> None:
        self.log.info("HyperTCP workers: running {count} node processes",
                      count=len(self._processes))
        super().startService()

    def startProcess(self, name: str) -> None:
        super().startProcess(name)
        protocol = self.protocols.get(name)
        if protocol is not None and protocol.transport is not None:
            self.log.info("workers: {name} started as pid {pid}", name=name,
                          pid=protocol.transport.pid)

    def _monitoredProcessExited(self, name: str, reason: Optional[Failure] = None) -> None:
        # ProcessMonitor says nothing of a worker killed by a signal; an operator wants to know.
        # (Its hook for a process's end is private: should it change, only this line is lost.)
        if self.running and reason is not None:
            self.log.warn("workers: {name} exited ({why}); restarting it", name=name,
                          why=reason.getErrorMessage())
        super()._monitoredProcessExited(name, reason)

    def stopService(self) -> Deferred:
        """Stop every worker (SIGTERM, SIGKILL after C{killTime}), and wait until they have gone."""
        super().stopService()
        deadline = self._clock.seconds() + self.killTime + 1

        def check() -> None:
            if not self.protocols or self._clock.seconds() > deadline:
                waiting.stop()

        waiting = LoopingCall(check)
        waiting.clock = self._clock
        return waiting.start(0.1).addCallback(lambda _: None)


def check(config: Config) -> None:
    """What --workers needs of the configuration; L{ConfigError} says what is missing."""
    if not config.cluster.redis:
        raise ConfigError("--workers needs [cluster] redis (--cluster redis://HOST:PORT/DB): "
                          "the workers reach each other through it")
    if config.manhole.listen or config.balancer.listen:
        raise ConfigError("--workers runs nodes only: every worker would bind the [manhole] and "
                          "[balancer] listeners; run those in a process of their own")
    try:
        check_reuse_port(config)
    except ConfigError as e:
        raise ConfigError(f"--workers shares the listeners: {e}") from None
    for description in config.server.listen + config.tls.listen:
        if reuseport.parse(description).port == 0:
            raise ConfigError(f"--workers needs fixed ports, not {description!r}: with port 0 "
                              "each worker would get a port of its own")
    if not config.server.listen and not config.tls.listen:
        raise ConfigError("--workers needs a [server] or [tls] listener for its workers to share")


def monitor(config: Config, argv: list[str], count: int, reactor: Any) -> WorkerMonitor:
    """The monitor running C{count} workers with the arguments C{argv} (as this process got them)."""
    check(config)
    base = config.cluster.node_id or socket.gethostname()
    workers = WorkerMonitor(reactor)
    for i in range(1, count + 1):
        name = f"{base}-{i}"
        workers.addProcess(name, command(argv, name),
                           env={**os.environ, MONITOR_PID: str(os.getpid())})
    return workers


def command(argv: list[str], name: str) -> list[str]:
    """The command line of the worker C{name}: twistd hypertcp with C{argv}, and its own settings."""
    # Options given later win, so these come last.
    return [sys.executable, "-c", BOOTSTRAP, "-n", "--pidfile=", "hypertcp", *argv,
            "--workers", "0", "--set", "server.reuse_port=yes", "--set", f"cluster.node_id={name}"]
