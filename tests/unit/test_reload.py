"""
SIGHUP's rules, without a signal: the reloader runs every part and says
what each did; the config part applies the live-safe keys, names the
others, and keeps the running config when the file is broken.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from hypertcp.app.config import load
from hypertcp.app.reconfigure import Reconfigure
from hypertcp.app.reload import Reloader
from hypertcp.protocol.commands import Status
from tests.inprocess import Server


@pytest.fixture
def logged():
    """Every event logged during the test, as (level, text)."""
    from twisted.logger import formatEvent
    events: list[tuple] = []

    def observer(event: dict) -> None:
        events.append((event.get("log_level"), formatEvent(event)))

    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def test_every_part_is_reloaded_and_one_failing_stops_none(logged):
    reloader = Reloader(reactor=object())
    calls = []
    reloader.register("first", lambda: calls.append("first") or "done")

    def broken() -> str:
        calls.append("broken")
        raise OSError("disk on fire")

    reloader.register("broken", broken)
    reloader.register("last", lambda: calls.append("last") or "fine")
    reloader.reload()
    assert calls == ["first", "broken", "last"]
    texts = [text for _, text in logged]
    assert "SIGHUP: first: done" in texts and "SIGHUP: last: fine" in texts
    assert "SIGHUP: reloaded first, broken (failed), last" in texts
    assert any(level is LogLevel.critical and "broken: reload failed" in text
               for level, text in logged)


@pytest.fixture
def live(tmp_path: Path):
    path = tmp_path / "hypertcp.ini"
    path.write_text("[limits]\nmax_payload = 8192\n")
    server = Server(tmp_path)
    config = load(str(path))
    server.factory.set_limits(config.limits)
    return path, server, Reconfigure(str(path), {}, config, server.factory)


def test_limits_reload_for_new_connections(live, logged):
    path, server, reconfigure = live
    old = server.connect()
    path.write_text("[limits]\nmax_payload = 100\nack_timeout = 3\n")
    assert reconfigure.reload() == ("applied [limits] max_payload 8192 -> 100, "
                                    "[limits] ack_timeout 10 -> 3")
    assert server.factory.limits.max_payload == 100 and server.hub.ack_timeout == 3
    fleet = server.token("fleet", role="fleet")
    new = server.connect()
    assert new.login(fleet, "new") == Status.SUCCESS
    msg_id = new.message("server", {"blob": "x" * 200})
    assert new.answer(msg_id) == Status.ILLEGAL_COMMAND_BODY
    assert old.login(fleet, "old") == Status.SUCCESS
    msg_id = old.message("server", {"blob": "x" * 200})
    assert old.answer(msg_id) == Status.SUCCESS, "a live connection keeps its limits"


def test_a_key_that_needs_a_restart_is_named_not_applied(live, logged):
    path, server, reconfigure = live
    path.write_text("[server]\nlisten = tcp:9999\n[limits]\nmax_payload = 8192\n")
    assert reconfigure.reload() == "no change to apply"
    assert "SIGHUP: [server] listen changed: restart to apply" in [t for _, t in logged]
    assert reconfigure.running.server.listen == ["tcp:8080:interface=127.0.0.1"]


def test_a_broken_file_keeps_the_running_config(live, logged):
    path, server, reconfigure = live
    path.write_text("[limits]\nlogin_timeout = inf\n")
    assert reconfigure.reload() == "not reloaded"
    assert server.factory.limits.login_timeout == 10
    assert any(level is LogLevel.error and "login_timeout = 'inf'" in text
               for level, text in logged)
