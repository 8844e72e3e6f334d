"""
The log observer the plug-in gives twistd: where it writes for which twistd
options, the level filter, the JSON lines, and a file that logrotate can
manage (reopened at its path, never rotated by size).
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from twisted.logger import LogLevel, Logger
from twisted.python.failure import Failure

from hypertcp.app.config import ConfigError, LogConfig
from hypertcp.app.logs import Logs, ReopenableFile, for_twistd

TEXT, JSON = LogConfig("info", "text"), LogConfig("info", "json")


def emit(logs: Logs, level: LogLevel = LogLevel.info, text: str = "{peer} said hello",
         **fields) -> None:
    Logger(namespace="test", observer=logs).emit(level, text, peer="192.0.2.1:5", **fields)


def test_the_destination_follows_twistds_options(tmp_path):
    assert for_twistd(TEXT, {"syslog": True, "nodaemon": True}) is None
    assert for_twistd(TEXT, {"logger": "x.y", "nodaemon": True}) is None
    assert for_twistd(TEXT, {"nodaemon": True, "logfile": None}).destination is sys.stdout
    assert for_twistd(TEXT, {"nodaemon": True, "logfile": "-"}).destination is sys.stdout
    with pytest.raises(ConfigError, match="cannot log to standard output"):
        for_twistd(TEXT, {"nodaemon": False, "logfile": "-"})
    path = tmp_path / "hypertcp.log"
    logs = for_twistd(TEXT, {"nodaemon": False, "logfile": str(path)})
    assert logs.to_file and logs.destination.path == str(path)
    with pytest.raises(ConfigError, match="log file .*/no/such/dir/x.log"):
        for_twistd(TEXT, {"nodaemon": True, "logfile": str(tmp_path / "no/such/dir/x.log")})


def test_text_lines_as_twistd_writes_them():
    out = io.StringIO()
    emit(Logs(TEXT, out))
    assert out.getvalue().endswith(" [test#info] 192.0.2.1:5 said hello\n")


def test_the_level_filters_and_can_change():
    out = io.StringIO()
    logs = Logs(LogConfig("warn", "text"), out)
    emit(logs, LogLevel.info, "quiet")
    emit(logs, LogLevel.warn, "loud")
    assert "quiet" not in out.getvalue() and "loud" in out.getvalue()
    logs.configure(LogConfig("debug", "text"))
    emit(logs, LogLevel.debug, "detail")
    assert "detail" in out.getvalue()


def test_json_lines_hold_the_fields_and_the_traceback():
    out = io.StringIO()
    logs = Logs(JSON, out)
    emit(logs, device="lamp", count=3, blob=object())
    try:
        1 / 0
    except ZeroDivisionError:
        Logger(namespace="test", observer=logs).failure("routing failed", Failure())
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "192.0.2.1:5 said hello" and first["level"] == "info"
    assert first["namespace"] == "test" and first["device"] == "lamp" and first["count"] == 3
    assert "blob" not in first, "only fields JSON holds as they are"
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert second["level"] == "critical" and "ZeroDivisionError" in second["traceback"]


def test_a_log_file_is_reopened_after_logrotate_renames_it(tmp_path):
    path = tmp_path / "hypertcp.log"
    logs = Logs(TEXT, ReopenableFile(str(path)))
    emit(logs, text="before")
    path.rename(tmp_path / "hypertcp.log-1")
    emit(logs, text="still to the renamed file")
    assert logs.reopen() == f"reopened {path}"
    emit(logs, text="after")
    assert "after" in path.read_text() and "before" not in path.read_text()
    assert "still to the renamed file" in (tmp_path / "hypertcp.log-1").read_text()


def test_a_log_file_is_never_rotated_by_size(tmp_path):
    # twistd's own --logfile rotates at 1 MB into .1, .2, ... and never deletes them.
    path = tmp_path / "hypertcp.log"
    logs = Logs(TEXT, ReopenableFile(str(path)))
    for _ in range(1200):
        emit(logs, text="x" * 1000)
    assert path.stat().st_size > 1_200_000
    assert [p.name for p in tmp_path.iterdir()] == ["hypertcp.log"]
