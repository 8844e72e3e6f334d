"""
The challenge login (issue 15, item 14): the server sends a nonce, the
client proves it holds the token with an answer bound to that nonce and to
its device id, and neither the token nor a reusable answer crosses the wire.
The client side is the real L{ClientConnection} (and the Twisted client)
that the Python clients drive; the construction is protocol/challenge.py's.
"""

from __future__ import annotations

import json

from twisted.internet.testing import StringTransport

from hypertcp.client.txclient import HyperTCPClientFactory
from hypertcp.protocol import challenge
from hypertcp.protocol.bodies import challenge_request_body, proof_body
from hypertcp.protocol.client import ClientConnection, LoginAnswered
from hypertcp.protocol.commands import Command, Status
from hypertcp.protocol.frames import Decoder
from tests.inprocess import Peer, Server


def converse(peer: Peer, conn: ClientConnection) -> tuple[list, bytes]:
    """Run C{conn}'s login against the session; its events, and every byte it sent."""
    sent = out = conn.login()
    events: list = []
    for _ in range(4):
        peer.session.dataReceived(out)
        new, out = conn.receive(peer.transport.value())
        peer.transport.clear()
        events += new
        sent += out
        if not out:
            break
    return events, sent


def nonce_for(peer: Peer, msg_id: int) -> str:
    frames = [f for f in peer.frames() if f.command == Command.LOGIN]
    assert [f.msg_id for f in frames] == [msg_id], "the nonce comes in a LOGIN with the request's id"
    nonce = json.loads(frames[0].payload)["nonce"]
    assert len(nonce) == 64 and int(nonce, 16) >= 0
    return nonce


def test_a_challenge_login_logs_in_without_the_token_on_the_wire(tmp_path):
    server = Server(tmp_path)
    secret = server.token("dev1")
    peer = server.connect()
    events, sent = converse(peer, ClientConnection(secret, use_challenge=True))
    assert LoginAnswered(Status.SUCCESS) in events
    assert peer.session.device_id == "dev1" and "dev1" in server.hub.devices
    assert secret.encode() not in sent
    assert challenge.client_key(secret).hex().encode() not in sent


def test_a_fleet_token_chooses_its_id_in_the_proof(tmp_path):
    server = Server(tmp_path)
    fleet = server.token("fleet", "fleet", prefix="pump-")
    peer = server.connect()
    events, _ = converse(peer, ClientConnection(fleet, "pump-7", use_challenge=True))
    assert LoginAnswered(Status.SUCCESS) in events and peer.session.device_id == "pump-7"
    other = server.connect()
    events, _ = converse(other, ClientConnection(fleet, "dev1", use_challenge=True))
    assert LoginAnswered(Status.NOT_ALLOWED) in events, "the token's rules still apply"


def test_a_proof_from_the_wrong_token_is_refused_and_closed(tmp_path):
    server = Server(tmp_path)
    secret = server.token("dev1")
    wrong = server.token("dev2")
    peer = server.connect()
    asked = peer.send(Command.LOGIN, challenge_request_body())
    nonce = nonce_for(peer, asked)
    # dev1's key id, dev2's secret: a guess at dev1's token.
    answer = peer.send(Command.LOGIN, proof_body(challenge.key_id(secret),
                                                 challenge.proof(wrong, nonce)))
    assert peer.answer(answer) == Status.INVALID_TOKEN
    assert peer.closing and "dev1" not in server.hub.devices


def test_a_recorded_answer_cannot_be_replayed(tmp_path):
    server = Server(tmp_path)
    secret = server.token("dev1")
    first = server.connect()
    events, sent = converse(first, ClientConnection(secret, use_challenge=True))
    assert LoginAnswered(Status.SUCCESS) in events
    recorded = [f for f in Decoder().feed(sent) if f.command == Command.LOGIN][-1].payload
    # On a new connection, after a fresh challenge...
    second = server.connect()
    nonce_for(second, second.send(Command.LOGIN, challenge_request_body()))
    assert second.answer(second.send(Command.LOGIN, recorded)) == Status.INVALID_TOKEN
    assert second.closing
    # ...or with no challenge asked at all.
    third = server.connect()
    assert third.answer(third.send(Command.LOGIN, recorded)) == Status.INVALID_TOKEN
    assert third.closing
    assert server.hub.devices["dev1"] == [first.session]


def test_a_nonce_is_good_for_one_answer_only(tmp_path):
    server = Server(tmp_path)
    secret = server.token("dev1")
    peer = server.connect()
    old = nonce_for(peer, peer.send(Command.LOGIN, challenge_request_body()))
    nonce_for(peer, peer.send(Command.LOGIN, challenge_request_body()))  # replaces it
    stale = proof_body(challenge.key_id(secret), challenge.proof(secret, old))
    assert peer.answer(peer.send(Command.LOGIN, stale)) == Status.INVALID_TOKEN


def test_the_proof_is_bound_to_the_device_id(tmp_path):
    server = Server(tmp_path)
    fleet = server.token("fleet", "fleet")
    peer = server.connect()
    nonce = nonce_for(peer, peer.send(Command.LOGIN, challenge_request_body()))
    # A proof made for "lamp", sent as "door": someone on the path changed the id.
    forged = proof_body(challenge.key_id(fleet), challenge.proof(fleet, nonce, "lamp"), "door")
    assert peer.answer(peer.send(Command.LOGIN, forged)) == Status.INVALID_TOKEN


def test_require_challenge_refuses_token_logins_and_takes_challenges(tmp_path):
    server = Server(tmp_path)
    server.factory.require_challenge = True
    secret = server.token("dev1")
    raw = server.connect()
    assert raw.login(secret, proto=None) == Status.NOT_ALLOWED
    as_json = server.connect()
    assert as_json.login(secret) == Status.NOT_ALLOWED
    events, _ = converse(as_json, ClientConnection(secret, use_challenge=True))
    assert LoginAnswered(Status.SUCCESS) in events, "the same connection may then answer one"


def test_raw_token_logins_keep_working_unless_challenges_are_required(tmp_path):
    server = Server(tmp_path)
    peer = server.connect()
    assert peer.login(server.token("dev1"), proto=None) == Status.SUCCESS


def test_a_token_made_before_challenges_existed_is_refused_a_challenge_login(tmp_path):
    server = Server(tmp_path)
    secret = server.token("old")
    data = json.loads(server.tokens.path.read_text())
    data["tokens"][0].pop("stored_key")
    server.tokens.path.write_text(json.dumps(data))
    server.factory.reload_tokens()
    peer = server.connect()
    events, _ = converse(peer, ClientConnection(secret, use_challenge=True))
    assert LoginAnswered(Status.INVALID_TOKEN) in events
    assert server.connect().login(secret) == Status.SUCCESS, "its token login still works"


def test_the_twisted_client_logs_in_by_challenge(tmp_path):
    server = Server(tmp_path)
    secret = server.token("dev1")
    peer = server.connect()
    factory = HyperTCPClientFactory(secret, challenge=True, clock=server.clock)
    logged_in = factory.whenLoggedIn()
    client = factory.buildProtocol(None)
    client_transport = StringTransport()
    client.makeConnection(client_transport)
    wire = b""
    for _ in range(4):
        out = client_transport.value()
        client_transport.clear()
        wire += out
        peer.session.dataReceived(out)
        client.dataReceived(peer.transport.value())
        peer.transport.clear()
    assert logged_in.called and peer.session.device_id == "dev1"
    assert secret.encode() not in wire
    client.connectionLost(None)


def test_a_challenge_request_on_a_logged_in_connection_is_refused(tmp_path):
    server = Server(tmp_path)
    peer = server.online("dev1")
    assert peer.answer(peer.send(Command.LOGIN, challenge_request_body())) \
        == Status.ILLEGAL_COMMAND


def test_frames_keep_their_place_around_a_challenge(tmp_path):
    server = Server(tmp_path)
    secret = server.token("dev1")
    peer = server.connect()
    asked = peer.send(Command.LOGIN, challenge_request_body())
    ping = peer.send(Command.PING)
    login, pong = peer.frames()
    assert (login.command, login.msg_id) == (Command.LOGIN, asked)
    assert (pong.command, pong.msg_id, pong.payload) == (Command.RESPONSE, ping, b"")
    nonce = json.loads(login.payload)["nonce"]
    proof = peer.send(Command.LOGIN, proof_body(challenge.key_id(secret),
                                                challenge.proof(secret, nonce)))
    assert peer.answer(proof) == Status.SUCCESS
