"""
The server core as C{twistd hypertcp} wires it (hypertcp.app.tap.node): the
token file made on a first start, the built-in commands and the plug-ins of
C{[server] handlers}, run by real sessions.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from hypertcp.app.config import load
from hypertcp.app.tap import node
from hypertcp.protocol.commands import Status
from tests.inprocess import Peer, Transport


def session(factory) -> Peer:
    from twisted.internet.address import IPv4Address

    addr = IPv4Address("TCP", "192.0.2.1", 5000)
    protocol = factory.buildProtocol(addr)
    transport = Transport(peerAddress=addr)
    protocol.makeConnection(transport)
    return Peer(None, protocol, transport)


def test_a_first_start_makes_a_token_file_with_one_fleet_token(tmp_path, capsys):
    tokens = tmp_path / "tokens.json"
    factory = node(load(overrides={("server", "tokens"): str(tokens)}), Clock())
    err = capsys.readouterr().err.splitlines()
    assert err[-2] == "HyperTCP: it is shown only now; log in with:"
    secret = err[-1]
    assert tokens.exists() and secret not in tokens.read_text()
    peer = session(factory)
    assert peer.login(secret, "lamp") == Status.SUCCESS
    node(load(overrides={("server", "tokens"): str(tokens)}), Clock())
    assert "log in with" not in capsys.readouterr().err, "only the first time"


def test_handler_plugins_add_server_commands_and_a_failing_one_is_a_server_exception(tmp_path):
    config = load(overrides={("server", "tokens"): str(tmp_path / "tokens.json"),
                             ("server", "handlers"): "tests.handlers:register"})
    factory = node(config, Clock())
    assert {"ping", "whoami", "kick", "explode", "echo"} <= set(factory.hub.commands)
    secret = factory.tokens.add("dev")
    peer = session(factory)
    assert peer.login(secret) == Status.SUCCESS
    assert peer.to_server({"command": "explode"}) == (Status.SERVER_EXCEPTION, [])
    assert peer.ping() == Status.SUCCESS, "the connection lives on"
    assert peer.to_server({"command": "echo", "v": 3}) == (
        Status.SUCCESS, [{"command": "echo", "v": 3}])
