"""
The protocol's tables (hypertcp.protocol.server and .commands): which frames
a connection is served before and after login, what each bad input is
answered with, and the statuses' names.
"""

from __future__ import annotations

import pytest

from hypertcp.protocol import server as rules
from hypertcp.protocol.commands import Command, Status, describe, status, status_name
from hypertcp.protocol.frames import Oversize


@pytest.mark.parametrize("command, before, after", [
    (Command.RESPONSE, rules.ACK, rules.ACK),
    (Command.PING, rules.PING, rules.PING),
    (Command.LOGIN, rules.LOGIN, Status.ILLEGAL_COMMAND),
    (Command.JSON_MESSAGE, Status.NOT_AUTHENTICATED, rules.MESSAGE),
    (Command.BROADCAST, Status.NOT_AUTHENTICATED, rules.MESSAGE),
    (Command.REDIRECT, Status.NOT_AUTHENTICATED, Status.ILLEGAL_COMMAND),
    (99, Status.NOT_AUTHENTICATED, Status.ILLEGAL_COMMAND),
    (255, Status.NOT_AUTHENTICATED, Status.ILLEGAL_COMMAND),
])
def test_what_each_frame_asks_before_and_after_login(command, before, after):
    for logged_in, expected in ((False, before), (True, after)):
        action = rules.action(command, logged_in)
        if isinstance(expected, str):
            assert action == expected
        else:
            assert isinstance(action, rules.Refusal) and action.status == expected
            assert action.why


def test_refusals_say_why_for_the_log():
    assert rules.action(99, True).why == "unknown command 99"
    assert rules.action(30, False).why == "command 30 before login"
    assert rules.action(Command.LOGIN, True).why == "LOGIN on a logged-in connection"


def test_an_oversize_frame_is_answered_11_unless_it_is_a_response():
    refusal = rules.oversize(Oversize(Command.JSON_MESSAGE, 4, 9000), 8192)
    assert refusal == rules.Refusal(Status.ILLEGAL_COMMAND_BODY,
                                    "payload of 9,000 bytes over the 8,192-byte limit")
    assert rules.oversize(Oversize(Command.RESPONSE, 4, 9000), 8192) is None


def test_below_level_2_every_answer_is_an_empty_response():
    for code in (Status.SUCCESS, Status.NOT_ALLOWED, Status.TIMEOUT):
        assert rules.answer(7, code, proto=1) == b"\x00\x00\x07\x00\x00"
    assert rules.answer(7, Status.SUCCESS, proto=2) == b"\x00\x00\x07\x00\x00"
    assert rules.answer(7, Status.NOT_ALLOWED, proto=2) == b"\x00\x00\x07\x00\x01\x06"


def test_the_wire_numbers_are_the_contracts():
    assert {c.name: int(c) for c in Command} == {
        "RESPONSE": 0, "PING": 6, "LOGIN": 29, "JSON_MESSAGE": 30, "REDIRECT": 41, "BROADCAST": 50}
    assert {s.name: int(s) for s in Status} == {
        "SUCCESS": 200, "STORED": 202, "QUOTA_LIMIT": 1, "ILLEGAL_COMMAND": 2,
        "NOT_AUTHENTICATED": 5, "NOT_ALLOWED": 6, "DEVICE_NOT_IN_NETWORK": 7, "INVALID_TOKEN": 9,
        "ILLEGAL_COMMAND_BODY": 11, "TIMEOUT": 16, "SERVER_EXCEPTION": 19}


def test_statuses_print_by_name_and_unknown_codes_by_number():
    assert status(7) is Status.DEVICE_NOT_IN_NETWORK
    assert status(99) == 99 and not isinstance(status(99), Status)
    assert status_name(9) == "INVALID_TOKEN"
    assert status_name(99) == "status 99"
    assert describe(7) == "DEVICE_NOT_IN_NETWORK (7): the target is not connected"
    assert describe(99) == "status 99 (99)"


def test_every_status_has_words_for_a_person():
    from hypertcp.protocol.commands import MEANING

    assert set(MEANING) == set(Status)
