"""
The token file: unique, valid names; a corrupt file named, not a traceback;
the CLI's exit statuses; secrets 0600; no stray temporary files.
(Concurrent writers are tests/test_token_races.py: they need processes.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from hypertcp.app import tap
from hypertcp.app.config import ConfigError, load
from hypertcp.cli.main import main
from hypertcp.server.tokens import TokenFileError, TokenStore


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


def live_names(store: TokenStore) -> list[str]:
    return [r.name for r in store.list() if not r.revoked]


def test_a_name_is_unique_among_live_tokens(store):
    store.add("default", role="fleet")
    with pytest.raises(ValueError, match="a live token named 'default' exists"):
        store.add("default", role="fleet")
    assert live_names(store) == ["default"]
    # Revoking takes the one token; the name is then free for a new one.
    assert store.revoke("default") == 1
    store.add("default", role="fleet")
    assert live_names(TokenStore(store.path)) == ["default"]


@pytest.mark.parametrize("name", ["bad name!", "", " lamp", "lamp\n", "a\x00b", "-lamp",
                                  "é-lamp", "x" * 129, "a/b"])
def test_invalid_names_are_refused(store, name):
    with pytest.raises(ValueError, match="name"):
        store.add(name)
    assert not store.path.exists()


@pytest.mark.parametrize("name", ["server", "broadcast"])
def test_a_device_token_cannot_take_a_reserved_id(store, name):
    with pytest.raises(ValueError, match="reserved"):
        store.add(name)


@pytest.mark.parametrize("name", ["esp32-kitchen", "web_1", "sensor.7", "a", "x" * 128,
                                  "node:3", "ops@site"])
def test_valid_names(store, name):
    store.add(name)
    assert live_names(store) == [name]


@pytest.mark.parametrize("content, complaint", [
    ("{not json", "not JSON"),
    ("[]", "not a HyperTCP token file"),
    ('{"tokens": [{"name": "x"}]}', "record 1"),
    ('{"tokens": [{"name": "x", "role": "device", "hash": "h", "colour": 1}]}', "record 1"),
    ("\xff\xfe", "not JSON"),
])
def test_a_corrupt_file_is_named(tmp_path, content, complaint):
    path = tmp_path / "tokens.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(TokenFileError, match=rf"{path}: .*{complaint}"):
        TokenStore(path)


def test_a_corrupt_file_stops_the_server_with_its_name(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=rf"{path}: not JSON"):
        tap.node(load(overrides={("server", "tokens"): str(path)}), Clock())


def test_files_are_private_and_no_temporary_file_is_left(store):
    stray = store.path.with_name(store.path.name + "k3j2h1.tmp")
    stray.write_text("left by a writer that was killed mid-save")
    store.add("lamp")
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["tokens.json",
                                                                   "tokens.json.lock"]
    assert oct(store.path.with_name("tokens.json.lock").stat().st_mode & 0o777) == "0o600"


def test_a_failed_save_leaves_the_file_and_no_temporary(store, monkeypatch):
    store.add("lamp")
    before = store.path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        store.add("other")
    assert store.path.read_bytes() == before
    assert not list(store.path.parent.glob("*.tmp"))


def test_an_edit_is_seen_even_when_size_and_time_match(store):
    # Writers replace the file: a new inode, whatever the clock's resolution.
    store.add("aaaa")
    record = json.loads(store.path.read_text())
    record["tokens"][0]["name"] = "bbbb"
    stat = store.path.stat()
    tmp = store.path.with_name("edit")
    tmp.write_text(json.dumps(record, indent=1))
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert tmp.stat().st_size == stat.st_size
    os.replace(tmp, store.path)
    assert store.reload() is True
    assert live_names(store) == ["bbbb"]


# -- the command line --

def test_cli_add_twice_is_refused(tmp_path, capsys):
    tokens = str(tmp_path / "t.json")
    assert main(["token", "add", "default", "--role", "fleet", "--tokens", tokens]) == 0
    capsys.readouterr()
    assert main(["token", "add", "default", "--role", "fleet", "--tokens", tokens]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hypertcp token: a live token named 'default' exists") and \
        err.count("\n") == 1
    assert main(["token", "add", "bad name!", "--tokens", tokens]) == 1
    assert "bad name!" in capsys.readouterr().err


def test_cli_list_of_a_missing_file_fails(tmp_path, capsys):
    missing = tmp_path / "nowhere.json"
    assert main(["token", "list", "--tokens", str(missing)]) == 1
    assert capsys.readouterr().err == f"hypertcp token: {missing}: no such token file\n"
    assert not missing.exists()


def test_cli_list_of_a_corrupt_file_names_it(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    assert main(["token", "list", "--tokens", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"hypertcp token: {path}: not JSON") and err.count("\n") == 1


def test_cli_save_writes_the_secret_privately(tmp_path, capsys):
    tokens, saved = tmp_path / "t.json", tmp_path / "balancer.token"
    assert main(["token", "add", "balancer", "--role", "observer", "--tokens", str(tokens),
                 "--save", str(saved)]) == 0
    secret = capsys.readouterr().out.splitlines()[-1]
    assert saved.read_text() == secret + "\n"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    assert TokenStore(tokens).lookup(secret).name == "balancer"
