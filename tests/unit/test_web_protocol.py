"""The gateway's JSON and frames, sans-IO: what the browser reads is what the hub meant."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from hypertcp.app.web.frames import text_frame, unmask
from hypertcp.protocol.bodies import delivery_body, event_body, redirect_body
from hypertcp.protocol.commands import Command
from hypertcp.protocol.web import (
    MAX_ID, BadAction, delivery, parse_action, status_body, success_body, success_frame,
)
from tests.webinprocess import TEXT, server_frames

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(sender=st.text(min_size=1), payload=st.dictionaries(st.text(), json_values, max_size=5),
       ref=st.integers(1, MAX_ID))
def test_delivery_is_the_hubs_body_with_type_and_ref(sender, payload, ref):
    body = delivery_body(sender, payload)
    assert json.loads(delivery(Command.JSON_MESSAGE, body, ref)) == {
        "type": "message", "ref": ref, "from": sender, "payload": payload}
    assert json.loads(delivery(Command.BROADCAST, body, ref))["type"] == "broadcast"


def test_events_and_redirects_keep_their_fields():
    event = json.loads(delivery(Command.JSON_MESSAGE, event_body("deviceConnected", "a", "h:1", 5), 3))
    assert event["payload"] == {"event": "deviceConnected", "deviceId": "a", "clientId": "h:1",
                                "timestamp": 5}
    redirect = json.loads(delivery(Command.REDIRECT, redirect_body("h", 9, True), 4))
    assert redirect == {"type": "redirect", "ref": 4, "server": "h", "port": 9, "tls": True}


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frames_of_every_length_encoding_read_back(size):
    payload = b"x" * size
    frames, rest = server_frames(text_frame(payload) + text_frame(b"next"))
    assert frames == [(TEXT, payload), (TEXT, b"next")] and rest == b""


@pytest.mark.parametrize("text, status, why, msg_id", [
    (b'{"action": "ping", "id": -1}', 11, '"id" must be a whole number from 0', None),
    (b'{"action": "ping", "id": true}', 11, '"id" must be a whole number from 0', None),
    (b'{"action": "ping", "id": %d}' % (MAX_ID + 1), 11, '"id" must be a whole number from 0',
     None),
    (b'{"action": 5, "id": 3}', 2, "unknown action 5; known: login, send, broadcast, ping, ack", 3),
    (b'"ping"', 11, "text is not a JSON object", None),
])
def test_parse_action_names_what_is_wrong(text, status, why, msg_id):
    with pytest.raises(BadAction) as caught:
        parse_action(text)
    assert (caught.value.status, str(caught.value), caught.value.id) == (status, why, msg_id)


def test_parse_action_maps_actions_to_commands():
    assert parse_action(b'{"action": "send", "id": 0}').command == Command.JSON_MESSAGE
    assert parse_action(b'{"action": "ack", "ref": 2}').id is None


def test_status_body_says_the_meaning_when_no_reason_is_given():
    assert json.loads(status_body(4, 7)) == {
        "type": "status", "id": 4, "status": 7, "name": "DEVICE_NOT_IN_NETWORK",
        "reason": "the target is not connected"}


@given(payload=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4))
def test_unmask_undoes_the_clients_mask(payload, key):
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, key) == payload


@given(msg_id=st.integers(0, MAX_ID))
def test_success_body_is_the_status_body_of_success(msg_id):
    assert success_body(msg_id) == status_body(msg_id, 200)
    assert success_frame(msg_id) == text_frame(success_body(msg_id))
