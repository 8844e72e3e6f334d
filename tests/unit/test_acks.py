"""
End-to-end acknowledgements: L{AckTracker} on its own, then a sender waiting
on real sessions for the receiver's RESPONSE, TIMEOUT, and msg_id reuse.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from hypertcp.protocol.commands import Command, Status
from hypertcp.server.acks import AckTracker
from tests.inprocess import Server


def results(d) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


# -- AckTracker ---------------------------------------------------------------

def test_a_wait_ends_with_the_acknowledgements_status():
    tracker = AckTracker(Clock())
    got = results(tracker.expect(5, timeout=10))
    tracker.acknowledged(5, Status.SERVER_EXCEPTION)
    assert got == [Status.SERVER_EXCEPTION]
    assert len(tracker) == 0


def test_a_wait_ends_with_timeout_after_the_timeout():
    clock = Clock()
    tracker = AckTracker(clock)
    got = results(tracker.expect(5, timeout=10))
    clock.advance(9.9)
    assert got == []
    clock.advance(0.1)
    assert got == [Status.TIMEOUT]
    assert len(tracker) == 0
    tracker.acknowledged(5, Status.SUCCESS)  # late: nobody waits any more
    assert got == [Status.TIMEOUT]


def test_an_acknowledgement_of_nothing_awaited_is_ignored():
    tracker = AckTracker(Clock())
    got = results(tracker.expect(5, timeout=10))
    tracker.acknowledged(6, Status.SUCCESS)
    assert got == [] and len(tracker) == 1


def test_a_msg_id_coming_round_again_ends_the_older_wait():
    clock = Clock()
    tracker = AckTracker(clock)
    older = results(tracker.expect(7, timeout=10))
    newer = results(tracker.expect(7, timeout=10))
    assert older == [Status.TIMEOUT], "the two could never be told apart"
    assert newer == [] and len(tracker) == 1
    tracker.acknowledged(7, Status.SUCCESS)
    assert newer == [Status.SUCCESS]


def test_the_end_of_the_connection_ends_every_wait_and_cancels_the_timers():
    clock = Clock()
    tracker = AckTracker(clock)
    waits = [results(tracker.expect(i, timeout=10)) for i in (1, 2, 3)]
    tracker.end()
    assert waits == [[Status.TIMEOUT]] * 3
    assert clock.getDelayedCalls() == []


def test_one_timer_serves_every_wait_of_a_connection():
    clock = Clock()
    tracker = AckTracker(clock)
    waits = [results(tracker.expect(i, timeout=10)) for i in range(1, 101)]
    assert len(clock.getDelayedCalls()) == 1, "not a timer per delivery"
    for i in range(1, 51):
        tracker.acknowledged(i, Status.SUCCESS)
    clock.advance(10)
    assert waits[:50] == [[Status.SUCCESS]] * 50
    assert waits[50:] == [[Status.TIMEOUT]] * 50
    assert len(tracker) == 0 and clock.getDelayedCalls() == []


def test_each_wait_times_out_at_its_own_deadline():
    clock = Clock()
    tracker = AckTracker(clock)
    first = results(tracker.expect(1, timeout=10))
    clock.advance(4)
    second = results(tracker.expect(2, timeout=10))
    clock.advance(6)
    assert (first, second) == ([Status.TIMEOUT], [])
    assert len(clock.getDelayedCalls()) == 1, "armed again for the later wait"
    clock.advance(3.9)
    assert second == []
    clock.advance(0.1)
    assert second == [Status.TIMEOUT]
    assert clock.getDelayedCalls() == []


def test_a_shorter_timeout_after_a_longer_one_keeps_its_deadline():
    clock = Clock()
    tracker = AckTracker(clock)
    slow = results(tracker.expect(1, timeout=30))
    quick = results(tracker.expect(2, timeout=5))
    clock.advance(5)
    assert (slow, quick) == ([], [Status.TIMEOUT])
    clock.advance(25)
    assert slow == [Status.TIMEOUT]


def test_a_cancelled_wait_takes_no_later_answer():
    clock = Clock()
    tracker = AckTracker(clock)
    d = tracker.expect(1, timeout=10)
    got = results(d)
    d.cancel()
    tracker.acknowledged(1, Status.SUCCESS)
    clock.advance(10)
    assert len(got) == 1 and got[0].check(CancelledError)
    assert len(tracker) == 0


def test_a_wait_ending_can_start_another():
    clock = Clock()
    tracker = AckTracker(clock)
    later: list = []
    first = tracker.expect(1, timeout=10)
    first.addCallback(lambda _: later.append(results(tracker.expect(2, timeout=10))))
    clock.advance(10)
    assert later == [[]], "the next wait is pending"
    clock.advance(10)
    assert later == [[Status.TIMEOUT]]


def test_a_wait_that_ends_the_connection_as_it_times_out_leaves_no_timer():
    clock = Clock()
    tracker = AckTracker(clock)
    first = tracker.expect(1, timeout=10)
    first.addCallback(lambda status: tracker.end())  # the session closes on it
    clock.advance(1)
    later = results(tracker.expect(2, timeout=10))
    clock.advance(9)
    assert later == [Status.TIMEOUT], "ended with the connection"
    assert len(tracker) == 0 and clock.getDelayedCalls() == []


def test_waits_in_deadline_order_after_a_shorter_timeout_each_end_on_time():
    # A shorter timeout breaks the order the waits are kept in; the next
    # firing sorts them, and every later one still ends at its deadline.
    clock = Clock()
    tracker = AckTracker(clock)
    a = results(tracker.expect(1, timeout=10))
    b = results(tracker.expect(2, timeout=4))
    clock.advance(1)
    c = results(tracker.expect(3, timeout=10))
    d = results(tracker.expect(4, timeout=5))
    for at, ended in ((4, [b]), (6, [b, d]), (10, [b, d, a]), (11, [b, d, a, c])):
        clock.advance(at - clock.seconds())
        assert [w for w in (a, b, c, d) if w] == ended, at


# -- acknowledged delivery through the server -------------------------------------

def test_the_sender_is_answered_when_the_receiver_acknowledges(server):
    sender, receiver = server.online("sender"), server.online("receiver")
    msg_id = sender.message("receiver", {"n": 1}, ack=True)
    [frame] = receiver.frames()
    assert frame.command == Command.JSON_MESSAGE
    assert sender.answer(msg_id) is None, "not before the receiver acknowledges"
    receiver.ack(frame)
    assert sender.answer(msg_id) == Status.SUCCESS


def test_the_sender_gets_the_status_the_receiver_acknowledges_with(server):
    sender, receiver = server.online("sender"), server.online("receiver")
    msg_id = sender.message("receiver", {}, ack=True)
    [frame] = receiver.frames()
    receiver.ack(frame, Status.ILLEGAL_COMMAND_BODY)
    assert sender.answer(msg_id) == Status.ILLEGAL_COMMAND_BODY


def test_an_unacknowledged_delivery_times_out_with_16(tmp_path):
    server = Server(tmp_path, ack_timeout=10)
    sender, mute = server.online("sender"), server.online("mute")
    msg_id = sender.message("mute", {}, ack=True)
    assert len(mute.frames()) == 1
    server.clock.advance(9.9)
    assert sender.answer(msg_id) is None
    server.clock.advance(0.1)
    assert sender.answer(msg_id) == Status.TIMEOUT
    assert server.factory.counters["timeout"] == 1


def test_the_sender_is_answered_at_once_when_the_receiver_goes_away(server):
    sender, receiver = server.online("sender"), server.online("receiver")
    msg_id = sender.message("receiver", {}, ack=True)
    receiver.lose()
    assert sender.answer(msg_id) == Status.TIMEOUT


def test_with_two_connections_the_first_acknowledgement_answers(server):
    secret = server.token("twin")
    one, two = server.connect(), server.connect()
    assert one.login(secret) == two.login(secret) == Status.SUCCESS
    sender = server.online("sender")
    msg_id = sender.message("twin", {}, ack=True)
    [first], [second] = one.frames(), two.frames()
    two.ack(second)
    assert sender.answer(msg_id) == Status.SUCCESS
    one.ack(first, Status.TIMEOUT)
    assert sender.answer(msg_id) is None, "answered once"


def test_with_two_connections_one_leaving_does_not_end_the_wait(tmp_path):
    server = Server(tmp_path, ack_timeout=10)
    secret = server.token("twin")
    one, two = server.connect(), server.connect()
    assert one.login(secret) == two.login(secret) == Status.SUCCESS
    sender = server.online("sender")
    msg_id = sender.message("twin", {}, ack=True)
    one.lose()
    assert sender.answer(msg_id) is None, "the other may still acknowledge"
    [frame] = two.frames()
    two.ack(frame)
    assert sender.answer(msg_id) == Status.SUCCESS


def test_without_ack_success_means_handed_to_every_live_connection(server):
    sender, receiver = server.online("sender"), server.online("receiver")
    msg_id = sender.message("receiver", {})
    assert sender.answer(msg_id) == Status.SUCCESS
    assert len(receiver.frames()) == 1


def test_a_delivery_msg_id_reused_after_the_wrap_ends_the_older_wait(tmp_path):
    server = Server(tmp_path, ack_timeout=1000)
    sender, receiver = server.online("sender"), server.online("receiver")
    first = sender.message("receiver", {"n": "first"}, ack=True)
    [old] = receiver.frames()
    for _ in range(65535 - 1):  # the receiver's msg_ids go round: 65,535 ids, never 0
        server.hub.send("receiver", {})
    receiver.transport.clear()
    second = sender.message("receiver", {"n": "second"}, ack=True)
    [new] = receiver.frames()
    assert new.msg_id == old.msg_id
    assert sender.answer(first) == Status.TIMEOUT, "the older wait ends when its id is reused"
    assert sender.answer(second) is None
    receiver.ack(new)
    assert sender.answer(second) == Status.SUCCESS


def test_a_closing_connection_takes_no_acked_message(server):
    sender, receiver = server.online("sender"), server.online("receiver")
    receiver.session.close("leaving")
    msg_id = sender.message("receiver", {}, ack=True)
    assert sender.answer(msg_id) == Status.DEVICE_NOT_IN_NETWORK, "it left the hub at once"
    waited = results(receiver.session.deliver_acked(Command.JSON_MESSAGE, b"{}", 10))
    assert waited == [Status.TIMEOUT], "and nothing sent to it can be acknowledged"
