"""
The Python client package's surface, without a server: what it exports,
its errors, a clear error for a send before connecting, and type hints
shipped for type checkers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from setuptools.config.setupcfg import read_configuration

import hypertcp
from hypertcp.client import AsyncClient, Client, HyperTCPError, Status

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("call", [
    lambda c: c.send("lamp", {"on": True}), lambda c: c.broadcast({"on": True}),
    lambda c: c.send_to_server({"command": "stats"}), lambda c: c.ping()])
def test_a_request_before_connecting_says_so(call):
    with pytest.raises(ConnectionError, match=r"not connected: call connect\(\)"):
        call(Client(token="t"))


def test_the_asyncio_client_says_so_too():
    async def scenario() -> None:
        client = AsyncClient(token="t")
        with pytest.raises(ConnectionError, match="not connected"):
            await client.send("lamp", {})
        with pytest.raises(ConnectionError, match="not connected"):
            await client.receive(0)

    asyncio.run(scenario())


def test_errors_say_the_servers_reason_first():
    error = HyperTCPError(Status.DEVICE_NOT_IN_NETWORK, "send to lamp", "'lamp' is not connected")
    assert str(error) == "send to lamp: 'lamp' is not connected (DEVICE_NOT_IN_NETWORK, 7)"
    assert (error.status, error.reason) == (Status.DEVICE_NOT_IN_NETWORK, "'lamp' is not connected")
    plain = HyperTCPError(Status.TIMEOUT, "send to lamp")
    assert str(plain) == "send to lamp: TIMEOUT (16): no acknowledgement in time"
    assert plain.reason is None


def test_type_hints_ship_with_the_package():
    assert (Path(hypertcp.__file__).parent / "py.typed").is_file()
    package_data = read_configuration(str(ROOT / "setup.cfg"))["options"]["package_data"]
    assert "py.typed" in package_data["hypertcp"]


class _ClosedAfterLogin:
    """
    A socket whose server refused the login with its reason and closed at
    once: the reason frame and the login's answer are already here, and the
    client's acknowledgement of the reason meets a closed connection.
    """

    def __init__(self, frames: bytes) -> None:
        self.frames = frames
        self.sent: list[bytes] = []

    def setsockopt(self, *args) -> None:
        pass

    def settimeout(self, timeout) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        if self.sent:
            raise BrokenPipeError(32, "Broken pipe")
        self.sent.append(data)

    def recv(self, size: int) -> bytes:
        data, self.frames = self.frames, b""
        return data

    def close(self) -> None:
        pass


def test_a_refused_login_is_reported_though_the_server_closed_first(monkeypatch):
    from hypertcp.client import blocking
    from hypertcp.protocol.bodies import refusal_body
    from hypertcp.protocol.commands import Command
    from hypertcp.protocol.frames import encode, response

    why = "login with an unknown or revoked token"
    frames = (encode(Command.JSON_MESSAGE, 1, refusal_body(1, Status.INVALID_TOKEN, why))
              + response(1, Status.INVALID_TOKEN, login=True))
    monkeypatch.setattr(blocking.socket, "create_connection",
                        lambda *args, **kw: _ClosedAfterLogin(frames))
    with pytest.raises(HyperTCPError) as refused:
        Client(port=1, token="not-a-token").connect()
    assert refused.value.status == Status.INVALID_TOKEN
    assert refused.value.reason == why
