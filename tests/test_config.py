"""Configuration: defaults, validation naming the bad key, and etc/ documenting every key."""

import configparser
from pathlib import Path

import pytest

from hypertcp.app.config import SCHEMA, ConfigError, load
from hypertcp.app.options import Options

ETC = Path(__file__).parent.parent / "etc" / "hypertcp.ini"


def test_defaults_are_the_documented_safe_ones():
    config = load()
    assert config.server.listen == ["tcp:8080:interface=127.0.0.1"]
    assert config.limits.login_timeout == 10
    assert config.limits.idle_timeout > 2 * 30, "tolerates the sketch's 30 s heartbeat"
    assert config.limits.max_payload >= 4096
    assert 50 <= config.limits.rate_limit <= 200


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[limits]\nrate_limt = 5\n")
    with pytest.raises(ConfigError, match="rate_limt"):
        load(str(path))


def test_unknown_section_is_named(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[limitz]\nrate_limit = 5\n")
    with pytest.raises(ConfigError, match=r"\[limitz\]"):
        load(str(path))


def test_bad_value_names_key_and_value(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[limits]\nmax_payload = 70000\n")
    with pytest.raises(ConfigError, match=r"max_payload.*70000"):
        load(str(path))


def test_command_line_overrides_file(tmp_path):
    path = tmp_path / "ok.ini"
    path.write_text("[limits]\nrate_limit = 5\nidle_timeout = 40\n")
    options = Options()
    options.parseOptions(["--config", str(path), "--rate-limit", "0",
                          "--listen", "tcp:1", "--listen", "tcp:2"])
    assert options.config.limits.rate_limit == 0
    assert options.config.limits.idle_timeout == 40
    assert options.config.server.listen == ["tcp:1", "tcp:2"]


def test_bad_set_option_is_one_line():
    with pytest.raises(SystemExit, match="limits.nope"):
        Options().parseOptions(["--set", "limits.nope=1"])


def test_example_config_documents_every_key_and_loads():
    parser = configparser.ConfigParser(interpolation=None)
    text = ETC.read_text()
    parser.read_string(text)
    for section, options in SCHEMA.items():
        for key in options:
            assert f"{key} =" in text, f"etc/hypertcp.ini does not document [{section}] {key}"
    load(str(ETC))


def test_example_config_says_which_keys_sighup_reloads():
    from hypertcp.app.config import RELOADABLE
    sections = {}
    for block in ETC.read_text().split("\n[")[1:]:
        name, _, body = block.partition("]")
        sections[name] = body
    for section, keys in SCHEMA.items():
        reloaded = {(section, key) for key in keys} <= RELOADABLE
        assert ("Reloaded on SIGHUP" in sections[section]) == reloaded, section
