"""
The real daemon as an operator runs it: SIGHUP reloads (in every
configuration, not only with TLS), the log file is one logrotate can
manage, and start-up failures end the process at once with one clear line.
(The rules behind these are tests/unit/test_reload.py and test_logs.py.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypertcp.protocol.commands import Status
from tests.daemon import Daemon, _script, add_token
from tests.raw import Raw

pytestmark = pytest.mark.integration


def twistd(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run twistd to completion (start-up failures, daemon mode's parent)."""
    return subprocess.run([_script("twistd"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def wait_until(predicate, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def busy_port():
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# -- SIGHUP ------------------------------------------------------------------

def test_sighup_on_a_plain_server_reloads_tokens_and_config_and_says_so(tmp_path: Path):
    config = tmp_path / "hypertcp.ini"
    tokens = tmp_path / "tokens.json"
    # Token polling off in effect: only the HUP can make the new token known.
    config.write_text("[server]\ntoken_reload = 3600\n[limits]\nrate_limit = 100\n")
    fleet = add_token(tokens, "fleet", "--role", "fleet")
    daemon = Daemon(tmp_path, "--config", str(config), "--tokens", str(tokens)).start()
    try:
        late = add_token(tokens, "late", "--role", "fleet")
        config.write_text("[server]\ntoken_reload = 60\n[limits]\nrate_limit = 5\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("SIGHUP: reloaded")
        assert daemon.alive(), "SIGHUP killed the server"
        log = daemon.output
        assert "token file" in log and "rate_limit 100 -> 5" in log
        assert "[server] token_reload changed: restart to apply" in log
        with Raw(daemon.port) as raw:
            assert raw.login_json(late, "late-1") == Status.SUCCESS
        with Raw(daemon.port) as raw:
            assert raw.login_json(fleet, "f-1") == Status.SUCCESS
        # A second HUP with a broken config keeps the running one.
        config.write_text("[limits]\nrate_limit = nan\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("config not reloaded")
        assert daemon.alive()
        assert "rate_limit = 'nan': must be a finite number" in daemon.output
    finally:
        daemon.stop()


def test_daemon_mode_reopens_its_log_on_sighup_and_keeps_its_pid_file(tmp_path: Path):
    log, pidfile = tmp_path / "hypertcp.log", tmp_path / "hypertcp.pid"
    tokens = tmp_path / "tokens.json"
    add_token(tokens, "fleet", "--role", "fleet")
    started = twistd("--pidfile", str(pidfile), "--logfile", str(log), "hypertcp",
                     "--tokens", str(tokens), "--listen", "tcp:0:interface=127.0.0.1",
                     cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        wait_until(lambda: log.exists() and "listening on" in log.read_text(), "the log")
        # What logrotate does: rename the file, then reload.
        rotated = tmp_path / "hypertcp.log-20250101"
        log.rename(rotated)
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: log.exists() and "SIGHUP: reloaded" in log.read_text(),
                   "the reopened log")
        assert "log file: reopened" in log.read_text()
        assert "SIGHUP" not in rotated.read_text()
        os.kill(pid, 0)  # alive
        assert int(pidfile.read_text()) == pid
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists(), "the pid file to go")
    assert not list(tmp_path.glob("hypertcp.log.[0-9]")), "twistd's own rotation is off"


# -- start-up failures ---------------------------------------------------------

def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> str:
    out = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, out
    assert "Traceback" not in out and "Usage:" not in out, out
    lines = [line for line in out.splitlines() if "hypertcp" in line.lower() and
             any(w in line for w in words)]
    assert lines, out
    error_lines = [line for line in out.splitlines() if "error" in line.lower()
                   or "cannot" in line.lower() or "twistd hypertcp:" in line]
    assert len(error_lines) == 1, out
    for word in words:
        assert word in error_lines[0], out
    return error_lines[0]


def test_a_busy_port_ends_start_up_with_one_line(tmp_path: Path, busy_port: int):
    started = time.monotonic()
    result = twistd("-n", "--pidfile=", "hypertcp", "--tokens", str(tmp_path / "t.json"),
                    "--listen", f"tcp:{busy_port}:interface=127.0.0.1", cwd=tmp_path)
    assert time.monotonic() - started < 20
    assert_one_line(result, f"Address already in use: cannot listen on tcp:{busy_port}"
                    ":interface=127.0.0.1")


def test_a_busy_port_fails_a_daemon_start_too(tmp_path: Path, busy_port: int):
    log, pidfile = tmp_path / "hypertcp.log", tmp_path / "hypertcp.pid"
    result = twistd("--pidfile", str(pidfile), "--logfile", str(log), "hypertcp",
                    "--tokens", str(tmp_path / "t.json"),
                    "--listen", f"tcp:{busy_port}:interface=127.0.0.1", cwd=tmp_path)
    assert result.returncode != 0
    # twistd's parent shows only the first 100 bytes the child reports: the
    # reason and the address must both be inside them.
    assert f"cannot listen on tcp:{busy_port}" in result.stderr, result.stderr
    assert "Address already in use" in result.stderr, result.stderr
    # The parent exits as soon as the child reports; the child then removes the pid file.
    wait_until(lambda: not pidfile.exists(), "the pid file to go")
    text = log.read_text()
    assert "Traceback" not in text
    assert [line for line in text.splitlines() if "cannot listen" in line][0].endswith(
        f"Address already in use: cannot listen on tcp:{busy_port}:interface=127.0.0.1")


@pytest.mark.parametrize("args, words", [
    (["--listen", "8080"], ["'8080' is a bare port"]),
    (["--listen", "tcp:abc"], ["'tcp:abc' is not an endpoint"]),
    (["--idle-timeout", "10"], ["idle_timeout = 10"]),
    (["--login-timeout", "nan"], ["login_timeout", "finite"]),
])
def test_config_errors_are_one_line(tmp_path: Path, args: list[str], words: list[str]):
    result = twistd("-n", "--pidfile=", "hypertcp", "--tokens", str(tmp_path / "t.json"), *args,
                    cwd=tmp_path)
    line = assert_one_line(result, *words)
    assert line.startswith("twistd hypertcp: ")
    assert result.returncode == 1


def test_a_corrupt_token_file_is_named_in_one_line(tmp_path: Path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"tokens": [')
    result = twistd("-n", "--pidfile=", "hypertcp", "--tokens", str(tokens),
                    "--listen", "tcp:0:interface=127.0.0.1", cwd=tmp_path)
    assert_one_line(result, str(tokens), "not JSON")


def test_version():
    from hypertcp import __version__
    cli = subprocess.run([sys.executable, "-m", "hypertcp.cli", "--version"],
                         capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0 and cli.stdout == f"hypertcp {__version__}\n"
    plugin = twistd("hypertcp", "--version", cwd=Path.cwd())
    assert plugin.returncode == 0 and plugin.stdout == f"HyperTCP {__version__}\n"


def test_json_log_lines_for_log_shippers(tmp_path: Path):
    tokens = tmp_path / "tokens.json"
    fleet = add_token(tokens, "fleet", "--role", "fleet")
    daemon = Daemon(tmp_path, "--tokens", str(tokens), "--set", "log.format=json",
                    "--set", "log.level=debug").start()
    try:
        with Raw(daemon.port) as raw:
            assert raw.login_json(fleet, "lamp") == Status.SUCCESS
        daemon.wait_for_log("logged in as lamp")
    finally:
        daemon.stop()
    records = [json.loads(line) for line in daemon.output.splitlines() if line.startswith("{")]
    assert len(records) == len(daemon.output.splitlines()), "every line is one JSON object"
    login = [r for r in records if "logged in as lamp" in r["message"]][0]
    assert login["level"] == "info" and login["device"] == "lamp"
    assert login["namespace"] == "hypertcp.server.session.Session"
    assert login["time"].endswith("Z")


def test_the_daemon_runs_epoll_without_the_log_context_unless_told_a_reactor(
        tmp_path: Path, tokens_file: Path) -> None:
    lean = Daemon(tmp_path, "--tokens", str(tokens_file)).start()
    stock = Daemon(tmp_path, "--tokens", str(tokens_file), twistd=("--reactor", "epoll")).start()
    try:
        for daemon in (lean, stock):
            with Raw(daemon.port) as raw:
                assert raw.login(add_token(tokens_file, f"dev-{daemon.port}")) == Status.SUCCESS
        assert "reactor class: hypertcp.app.reactor.LeanEPollReactor" in lean.output
        assert "reactor class: twisted.internet.epollreactor.EPollReactor" in stock.output
    finally:
        lean.stop()
        stock.stop()
