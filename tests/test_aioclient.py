"""
The asyncio client's whole API over real sockets against the real daemon:
connect and log in (plain and TLS), send with and without ack and with qos
to a device that is away, broadcast, send_to_server with its reply, ping,
receive, messages and async iteration, reasons and raise_on_error, a
refused login, the heartbeat past the idle timeout, following a REDIRECT,
reconnecting after a restart, and close.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from hypertcp.client import AsyncClient, Client, HyperTCPError, Status
from tests.daemon import Daemon, make_certs

pytestmark = pytest.mark.integration


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "certs", "--host", "localhost")


def test_the_whole_api(start_daemon, token, certs: Path):
    daemon = start_daemon("--tls", "tcp:0:interface=127.0.0.1",
                          "--tls-cert", str(certs / "server.pem"),
                          "--tls-key", str(certs / "server.key"),
                          "--idle-timeout", "1", "--set", "limits.client_heartbeat=0",
                          expect=("tcp", "tls"))
    fleet, observer = token("fleet", "--role", "fleet"), token("ops", "--role", "observer")

    async def scenario() -> None:
        with pytest.raises(ConnectionError, match="not connected"):
            await AsyncClient(port=daemon.port, token=fleet).send("x", {})
        with pytest.raises(HyperTCPError) as refused:
            await AsyncClient(port=daemon.port, token="wrong").connect()
        assert refused.value.status == Status.INVALID_TOKEN
        assert refused.value.reason == "login with an unknown or revoked token"

        async with AsyncClient(port=daemon.port, token=fleet, device_id="web-1",
                               heartbeat=0.3) as web, \
                AsyncClient(port=daemon.port, token=fleet, device_id="lamp") as lamp, \
                AsyncClient(port=daemon.port, token=observer, device_id="ops") as ops:
            assert await web.send("lamp", {"switch": "on"}) == Status.SUCCESS
            message = await lamp.receive(timeout=5)
            assert (message.sender, message.payload) == ("web-1", {"switch": "on"})

            # An acknowledged send: lamp's reader acknowledges on receipt.
            assert await web.send("lamp", {"switch": "off"}, ack=True) == Status.SUCCESS
            assert (await lamp.receive(timeout=5)).payload == {"switch": "off"}

            # qos 1 to a device that is away: stored, and it gets it when it logs in.
            assert await web.send("fan", {"speed": 1}, qos=1, ttl=600) == Status.STORED
            async with AsyncClient(port=daemon.port, token=fleet, device_id="fan") as fan:
                stored = await fan.receive(timeout=5)
                assert (stored.sender, stored.payload) == ("web-1", {"speed": 1})

            assert await lamp.broadcast({"notice": "hello"}) == Status.SUCCESS
            assert (await web.receive(timeout=5)).payload == {"notice": "hello"}
            assert await lamp.receive(timeout=0.2) is None, "not to the sender"

            assert await ops.send_to_server({"command": "whoami"}) == Status.SUCCESS
            reply = [m async for m in ops.messages(timeout=1) if m.sender == "server"
                     and m.payload.get("command") == "whoami"]
            assert reply[0].payload["deviceId"] == "ops"
            assert 0 < await web.ping() < 5

            # Reasons, as a status by default and raised with raise_on_error.
            assert await web.send("nobody", {}) == Status.DEVICE_NOT_IN_NETWORK
            assert web.last_reason == "'nobody' is not connected"
            web.raise_on_error = True
            with pytest.raises(HyperTCPError, match="'nobody' is not connected") as error:
                await web.send("nobody", {})
            assert error.value.status == Status.DEVICE_NOT_IN_NETWORK

            # Past the server's 1 s idle timeout: the heartbeat keeps web online.
            await asyncio.sleep(2.5)
            assert await web.ping() > 0
            assert await web.send("lamp", {"still": "here"}) == Status.SUCCESS
            async for message in lamp:
                assert message.payload == {"still": "here"}
                break

        # TLS, verified against the development CA.
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        async with AsyncClient("localhost", daemon.ports["tls"], fleet, "tls-1",
                               ssl_context=context) as secure:
            assert await secure.ping() > 0
        with pytest.raises(ConnectionError, match="closed"):
            await secure.receive(timeout=1)

    run(scenario())


def test_it_follows_a_redirect_and_reconnects_after_a_restart(tmp_path: Path, tokens_file: Path,
                                                              token):
    fleet = token("fleet", "--role", "fleet")
    observer = token("ops", "--role", "observer", "--grant", "redirect")
    first = Daemon(tmp_path, "--tokens", str(tokens_file)).start()
    second = Daemon(tmp_path, "--tokens", str(tokens_file)).start()
    third = None
    reconnected = []

    async def scenario() -> None:
        nonlocal third
        client = AsyncClient(port=first.port, token=fleet, device_id="mover", reconnect=True,
                             on_reconnect=lambda c: reconnected.append(c.port))
        await client.connect()
        with Client(port=first.port, token=observer, device_id="ops") as ops:
            assert ops.send_to_server({"command": "redirect", "deviceId": "mover",
                                       "server": "127.0.0.1", "port": second.port}) == \
                Status.SUCCESS
        while client.port != second.port or reconnected != [second.port]:
            assert await client.receive(timeout=0.1) is None
        with Client(port=second.port, token=fleet, device_id="alice") as alice:
            assert alice.send("mover", {"moved": True}) == Status.SUCCESS
        assert (await client.receive(timeout=5)).payload == {"moved": True}

        second.stop()
        third = Daemon(tmp_path, "--tokens", str(tokens_file),
                       "--listen", f"tcp:{second.port}:interface=127.0.0.1").start()
        while len(reconnected) < 2:
            assert await client.receive(timeout=0.1) is None
        with Client(port=second.port, token=fleet, device_id="bob") as bob:
            assert bob.send("mover", {"back": True}) == Status.SUCCESS
        assert (await client.receive(timeout=5)).payload == {"back": True}
        await client.close()

    try:
        run(scenario())
    finally:
        for daemon in (first, second, third):
            if daemon is not None:
                daemon.stop()
