"""
Where the server's log goes and what it looks like.

twistd's own C{--logfile} rotates the file by itself every megabyte into
C{.1}, C{.2}, ... and never deletes those, which fights logrotate.  So the
plug-in hands twistd its own observer (L{Logs.observer}): the same
destination twistd would choose (C{--logfile}, else standard output with
C{-n}, else C{twistd.log}), never rotated by size, reopened on SIGHUP so
logrotate can rename it; filtered by C{[log] level}; as twistd's text
lines or, with C{[log] format = json}, one JSON object per line for log
shippers.  With C{--syslog} or C{--logger}, twistd's observer is used as
it is.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import IO, Any, Callable, Optional

from twisted.logger import (
    FileLogObserver, FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate,
    formatEvent, formatEventAsClassicLogText, formatTime, timeFormatRFC3339,
)
from zope.interface import implementer

from hypertcp.app.config import ConfigError, LogConfig

#: Keys of twisted.python.log's events that are not the event's own fields.
_LEGACY = frozenset(("message", "isError", "system", "time", "format", "why", "failure"))


class ReopenableFile:
    """
    A log file opened for appending that can be opened again at the same
    path: after logrotate renames it, L{reopen} starts a new one.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._file = self._open()

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", errors="backslashreplace")

    def write(self, text: str) -> None:
        self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def reopen(self) -> str:
        # Open the new file first: if that fails, logging goes on to the old one.
        new = self._open()
        old, self._file = self._file, new
        old.close()
        return f"reopened {self.path}"


def text_line(event: dict) -> Optional[str]:
    """The line twistd writes for C{event}."""
    return formatEventAsClassicLogText(event, lambda t: formatTime(t, timeFormatRFC3339))


def json_line(event: dict) -> str:
    """
    C{event} as one JSON object: time (UTC), level, namespace, message, the
    event's own fields that JSON can hold as they are, and the traceback of
    a failure.
    """
    when = datetime.fromtimestamp(event.get("log_time", 0), timezone.utc)
    level = event.get("log_level", LogLevel.info)
    record: dict[str, Any] = {
        "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "level": level.name, "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event)}
    legacy = "log_legacy" in event
    for key, value in event.items():
        if key.startswith("log_") or key in record or (legacy and key in _LEGACY):
            continue
        if value is None or isinstance(value, (str, int, float, bool)):
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


FORMATS: dict[str, Callable[[dict], Optional[str]]] = {"text": text_line, "json": json_line}


@implementer(ILogObserver)
class Logs:
    """
    The server's log observer: a level filter and a format in front of a
    destination, all three replaceable while the server runs (L{configure},
    L{reopen}), since SIGHUP reloads them.
    """

    def __init__(self, config: LogConfig, destination: Any) -> None:
        self.destination = destination
        self._predicate = LogLevelFilterPredicate()
        self._file = FileLogObserver(destination, self._format)
        self._filtered = FilteringLogObserver(self._file, [self._predicate])
        self.configure(config)

    def configure(self, config: LogConfig) -> None:
        self.config = config
        self._predicate.setLogLevelForNamespace("", LogLevel.levelWithName(config.level))
        self._formatter = FORMATS[config.format]

    def _format(self, event: dict) -> Optional[str]:
        return self._formatter(event)

    def __call__(self, event: dict) -> None:
        self._filtered(event)

    @property
    def to_file(self) -> bool:
        """Does the log go to a file (not to the terminal or the journal)?"""
        return isinstance(self.destination, ReopenableFile)

    def reopen(self) -> str:
        """Reopen a log file at its path (after logrotate renamed it)."""
        if not isinstance(self.destination, ReopenableFile):
            return "not a file: nothing to reopen"
        return self.destination.reopen()


def for_twistd(config: LogConfig, twistd: Any) -> Optional[Logs]:
    """
    The observer for the destination twistd's options C{twistd} name, or
    None when twistd keeps its own (C{--syslog}, C{--logger}).
    """
    if twistd is None or twistd.get("syslog") or twistd.get("logger"):
        return None
    path = twistd.get("logfile")
    daemon = not twistd.get("nodaemon")
    if path == "-" or (not path and not daemon):
        if daemon:
            raise ConfigError("a daemon cannot log to standard output: give --logfile FILE "
                              "or run with -n")
        # The real one: twistd turns sys.stdout into a log writer later on.
        return Logs(config, sys.stdout)
    try:
        return Logs(config, ReopenableFile(path or "twistd.log"))
    except OSError as e:
        raise ConfigError(f"log file {path or 'twistd.log'}: {e.strerror}") from None
