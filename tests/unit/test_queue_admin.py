"""What operators see of the stored messages: the manhole's helpers and `hypertcp queue`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hypertcp.app.manhole import Rates, namespace
from hypertcp.cli.main import main
from tests.unit.test_offline import Harness


def fired(h: Harness, d) -> object:
    out: list = []
    d.addCallback(out.append)
    h.turn()
    [result] = out
    return result


def test_the_manhole_lists_shows_and_purges_queues(tmp_path: Path):
    h = Harness(tmp_path)
    h.send("lamp", {"n": 1}, qos=1)
    h.send("lamp", {"n": 2}, qos=1, ttl=1)
    h.clock.advance(1)
    names = namespace(h.server.factory, Rates(h.server.factory))
    listing = repr(fired(h, names["queue_list"]()))
    assert "lamp" in listing and "1 devices" in listing
    shown = repr(fired(h, names["queue_show"]("lamp")))
    lines = shown.strip().splitlines()
    assert lines[0].split() == ["KEY", "QUEUED", "EXPIRES", "FROM", "PAYLOAD"]
    assert '{"n":1}' in lines[1] and "(expired)" not in lines[1]
    assert '{"n":2}' in lines[2] and "(expired)" in lines[2]
    assert fired(h, names["queue_purge"]("lamp")) == 2
    assert h.queued() == []


def test_without_a_store_the_manhole_has_no_queue_helpers(tmp_path: Path):
    from tests.inprocess import Server
    server = Server(tmp_path)
    assert "queue_list" not in namespace(server.factory, Rates(server.factory))


def test_the_queue_command_reads_and_purges_the_store_file(tmp_path: Path, capsys):
    path = tmp_path / "messages.db"
    h = Harness(tmp_path, path=str(path), start=time.time())  # the command reads the wall clock
    h.send("lamp", {"n": 1}, qos=1)
    h.send("fan", {"n": 2}, qos=1)
    assert main(["queue", "list", "--json", "--store", str(path)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(q["device"], q["count"]) for q in listed] == [("fan", 1), ("lamp", 1)]
    assert main(["queue", "show", "lamp", "--json", "--store", str(path)]) == 0
    [message] = json.loads(capsys.readouterr().out)
    assert (message["from"], message["payload"], message["expired"]) == ("app", {"n": 1}, False)
    assert main(["queue", "purge", "lamp", "--store", str(path)]) == 0
    assert "purged 1 message stored for lamp" in capsys.readouterr().out
    assert main(["queue", "purge", "lamp", "--store", str(path)]) == 0
    assert "no messages were stored for lamp" in capsys.readouterr().out
    assert main(["queue", "list", "--store", str(tmp_path / "nope.db")]) == 1
    assert "no message store at" in capsys.readouterr().err


def test_send_refuses_a_ttl_without_qos(capsys):
    assert main(["send", "lamp", "{}", "--ttl", "5", "--token", "t"]) == 2
    assert "--ttl" in capsys.readouterr().err
