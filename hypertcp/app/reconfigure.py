"""
The config file, read again on SIGHUP: the keys safe to change while the
server runs (L{hypertcp.app.config.RELOADABLE}: the limits and the log's
level and format) are applied; a change to any other key is named, with
what to do, and waits for a restart.  A file that no longer loads leaves
the running configuration as it was.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from twisted.logger import Logger

from hypertcp.app.config import RELOADABLE, Config, ConfigError, changes, load
from hypertcp.app.logs import Logs
from hypertcp.server.factory import HyperTCPFactory


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "(empty)"
    return str(value)


class Reconfigure:
    """Reloads C{path} (with the command line's C{overrides} on top) into the running server."""

    log = Logger()

    def __init__(self, path: str, overrides: dict[tuple[str, str], str], running: Config,
                 factory: HyperTCPFactory, logs: Optional[Logs] = None) -> None:
        self.path = path
        self.overrides = overrides
        self.running = running
        self.factory = factory
        self.logs = logs

    def reload(self) -> str:
        """Apply what changed and may; return what was done."""
        try:
            new = load(self.path, self.overrides)
        except ConfigError as e:
            self.log.error("SIGHUP: config not reloaded, the running one stays: {error}",
                           error=str(e))
            return "not reloaded"
        applied = []
        for section, key, old, value in changes(self.running, new):
            if (section, key) in RELOADABLE:
                applied.append(f"[{section}] {key} {_shown(old)} -> {_shown(value)}")
            else:
                self.log.warn("SIGHUP: [{section}] {key} changed: restart to apply",
                              section=section, key=key)
        self.running = dataclasses.replace(self.running, limits=new.limits, log=new.log)
        self.factory.set_limits(new.limits)
        if self.logs is not None:
            self.logs.configure(new.log)
        return "applied " + ", ".join(applied) if applied else "no change to apply"
