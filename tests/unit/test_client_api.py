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
