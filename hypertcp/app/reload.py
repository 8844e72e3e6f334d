"""
SIGHUP: reload what can be reloaded, in every configuration.

systemd's C{ExecReload}, logrotate's C{postrotate} and C{docker kill
--signal=HUP} all send it; unhandled, it would end the process.  One
L{Reloader} holds the handler, and every reloadable part of the service
tree (the token file, the TLS files, the log file, the config keys that are
safe to change live) registers with it; each is reloaded on its own, so one
that fails leaves the others reloaded, and the log says what each did.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

#: A part's reload: returns what it did, in a few words; raises if it failed.
Reload = Callable[[], str]


class Reloader(Service):
    """The SIGHUP handler, and the parts it reloads in the order they registered."""

    log = Logger()

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.parts: list[tuple[str, Reload]] = []
        self._previous: Any = None

    def register(self, name: str, reload: Reload) -> None:
        """Reload C{name} with C{reload()} on every SIGHUP."""
        self.parts.append((name, reload))

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)

    def _hangup(self, signum: int, frame: Any) -> None:
        # A signal handler may interrupt the reactor anywhere: only schedule.
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Reload every part, logging what each did; one failing stops none of the others."""
        done = []
        for name, reload in self.parts:
            try:
                what = reload()
            except Exception:
                self.log.failure("SIGHUP: {part}: reload failed", part=name)
                done.append(f"{name} (failed)")
            else:
                self.log.info("SIGHUP: {part}: {what}", part=name, what=what)
                done.append(name)
        self.log.info("SIGHUP: reloaded {parts}", parts=", ".join(done) or "nothing")
