"""--workers and [server] reuse_port, in-process: the checks, the workers' command lines, the endpoint's descriptions."""

from __future__ import annotations

import socket
import sys

import pytest

from hypertcp.app import reuseport, tap, workers
from hypertcp.app.config import ConfigError, load
from hypertcp.app.options import Options

REDIS_URL = "redis://127.0.0.1:6379/0"


def options(*argv: str) -> Options:
    parsed = Options()
    parsed.parseOptions(list(argv))
    return parsed


@pytest.mark.parametrize("description, address", [
    ("tcp:8080", (8080, "0.0.0.0", 50)),
    ("tcp:8080:interface=127.0.0.1:backlog=128", (8080, "127.0.0.1", 128)),
    ("tcp:port=9000:interface=\\:\\:1", (9000, "::1", 50)),
    ("tcp6:8080", (8080, "::", 50)),
])
def test_tcp_descriptions_as_the_plain_listeners_read_them(description, address) -> None:
    assert reuseport.parse(description) == address


@pytest.mark.parametrize("description, why", [
    ("unix:/run/hypertcp.sock", "tcp: listeners only"),
    ("ssl:8443", "tcp: listeners only"),
    ("tcp:http", "port must be a number"),
    ("tcp:70000", "port must be a number"),
    ("tcp:8080:reuse=1", "expected tcp:PORT"),
    ("tcp:8080:port=9000", "expected tcp:PORT"),
    ("tcp:8080:backlog=0", "backlog must be a positive number"),
])
def test_other_descriptions_are_refused_saying_why(description, why) -> None:
    with pytest.raises(ValueError, match=why):
        reuseport.parse(description)


def test_reuse_port_is_checked_at_start_up() -> None:
    assert load(None, {("server", "reuse_port"): "yes"}).server.reuse_port
    with pytest.raises(ConfigError, match=r"\[tls\] listen with \[server\] reuse_port: "
                                          r"'unix:/x': reuse_port works with tcp"):
        load(None, {("server", "reuse_port"): "yes", ("tls", "listen"): "unix:/x",
                    ("tls", "certificate"): "cert.pem"})


def test_a_platform_without_so_reuseport_is_told_so(monkeypatch) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    with pytest.raises(ConfigError, match="no SO_REUSEPORT; run one node per port"):
        load(None, {("server", "reuse_port"): "yes"})
    with pytest.raises(ValueError, match="no SO_REUSEPORT"):
        reuseport.endpoint(None, "tcp:8080")


def test_workers_run_twistd_with_the_same_arguments_and_their_own_settings(tmp_path) -> None:
    argv = ["--cluster", REDIS_URL, "--listen", "tcp:9000:interface=127.0.0.1",
            "--tokens", str(tmp_path / "tokens.json"), "--workers=2",
            "--set", "cluster.node_id=edge"]
    monitor = tap.makeService(options(*argv))
    assert isinstance(monitor, workers.WorkerMonitor)
    assert "'edge-1'" in repr(monitor) and "'edge-2'" in repr(monitor)
    assert workers.command(argv, "edge-2") == [
        sys.executable, "-c", workers.BOOTSTRAP, "-n", "--pidfile=", "hypertcp", *argv,
        "--workers", "0", "--set", "server.reuse_port=yes", "--set", "cluster.node_id=edge-2"]
    # What a worker makes of it: the later options win.
    worker = options(*workers.command(argv, "edge-2")[6:])
    assert (worker["workers"], worker.config.server.reuse_port, worker.config.cluster.node_id) \
        == (0, True, "edge-2")
    assert (tmp_path / "tokens.json").exists(), "the token file is made once, by the monitor"


@pytest.mark.parametrize("argv, why", [
    (["--listen", "tcp:9000"], "--workers needs [cluster] redis (--cluster redis://HOST:PORT/DB)"),
    (["--cluster", REDIS_URL, "--listen", "tcp:0:interface=127.0.0.1"], "needs fixed ports"),
    (["--cluster", REDIS_URL, "--listen", "unix:/x"], "reuse_port works with tcp: listeners only"),
    (["--cluster", REDIS_URL, "--listen", "tcp:9000", "--manhole", "2222"], "runs nodes only"),
    (["--cluster", REDIS_URL, "--listen="], "needs a [server] or [tls] listener"),
])
def test_what_workers_cannot_do_is_one_line_at_start_up(tmp_path, argv, why) -> None:
    with pytest.raises(SystemExit) as stopped:
        tap.makeService(options("--workers", "2", "--tokens", str(tmp_path / "t.json"), *argv))
    message = str(stopped.value)
    assert message.startswith("twistd hypertcp: ") and why in message and "\n" not in message
    assert not (tmp_path / "t.json").exists()


def test_a_negative_number_of_workers_is_refused() -> None:
    with pytest.raises(SystemExit, match="--workers takes a number"):
        options("--workers", "-1")
