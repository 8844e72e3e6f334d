"""
Start-up checks of the configuration, through the loader and twistd's
Options directly: every mistake is one line naming the key, never a
traceback or twistd's whole usage text.
"""

from __future__ import annotations

import pytest

from hypertcp.app.config import SCHEMA, ConfigError, load
from hypertcp.app.options import Options

#: Every key read as a number of seconds, messages or bytes that may be fractional.
FLOAT_KEYS = [(section, key) for section, options in SCHEMA.items()
              for key, option in options.items()
              if getattr(option.parse, "__qualname__", "").startswith("_float")]


def test_the_float_keys_are_found():
    # The parametrization below must cover the timeouts the issue names.
    assert {("limits", "login_timeout"), ("limits", "rate_limit"), ("limits", "idle_timeout"),
            ("limits", "ack_timeout")} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("section, key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_non_finite_numbers_are_refused_naming_the_key(section, key, value):
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key} = '{value}'.*finite"):
        load(overrides={(section, key): value})


@pytest.mark.parametrize("section", ["server", "tls", "balancer"])
@pytest.mark.parametrize("endpoint, complaint", [
    ("tcp:abc", "'tcp:abc' is not an endpoint"),
    ("tcp:", "'tcp:' is not an endpoint"),
    ("8080", "'8080' is a bare port: write tcp:8080:interface=127.0.0.1"),
    ("tcp:8080:bogus=1", "'tcp:8080:bogus=1' is not an endpoint"),
    ("tcp:70000", "port 70000"),
    ("carrier-pigeon:1", "unknown endpoint type 'carrier-pigeon'"),
])
def test_bad_endpoint_strings_are_named(section, endpoint, complaint):
    overrides = {(section, "listen"): endpoint}
    if section == "tls":
        overrides[("tls", "certificate")] = "server.pem"
    if section == "balancer":
        overrides[("balancer", "backends")] = "127.0.0.1:1"
        overrides[("balancer", "token_file")] = "t"
    with pytest.raises(ConfigError, match=rf"\[{section}\] listen.*{complaint}"):
        load(overrides=overrides)


def test_a_bad_manhole_endpoint_is_named():
    with pytest.raises(ConfigError, match=r"\[manhole\] listen.*'tcp:x' is not an endpoint"):
        load(overrides={("manhole", "listen"): "tcp:x"})


def test_good_endpoint_strings_pass():
    config = load(overrides={("server", "listen"): "tcp:0:interface=127.0.0.1 tcp6:0 unix:/tmp/s",
                             ("manhole", "listen"): "2222"})
    assert config.server.listen == ["tcp:0:interface=127.0.0.1", "tcp6:0", "unix:/tmp/s"]
    assert config.manhole.listen == ["tcp:2222:interface=127.0.0.1"]


def test_an_idle_timeout_at_or_below_the_client_heartbeat_is_refused():
    with pytest.raises(ConfigError, match=r"idle_timeout .*20.* client_heartbeat .*30"):
        load(overrides={("limits", "idle_timeout"): "20"})
    with pytest.raises(ConfigError, match=r"idle_timeout"):
        load(overrides={("limits", "idle_timeout"): "30"})
    # A fleet whose devices beat every 10 s, or that all answer the server's PINGs.
    assert load(overrides={("limits", "idle_timeout"): "20",
                           ("limits", "client_heartbeat"): "10"}).limits.idle_timeout == 20
    assert load(overrides={("limits", "idle_timeout"): "1",
                           ("limits", "client_heartbeat"): "0"}).limits.idle_timeout == 1


@pytest.mark.parametrize("argv, complaint", [
    (["--login-timeout", "nan"], "[limits] login_timeout = 'nan': must be a finite number"),
    (["--listen", "8080"], "[server] listen"),
    (["--set", "limits.nope=1"], "unknown config key limits.nope"),
    (["--set", "nonsense"], "--set takes section.key=value"),
    (["--no-such-option"], "no-such-option"),
])
def test_a_config_error_is_one_line_not_the_usage_text(argv, complaint):
    # twistd prints its whole usage text before a UsageError (and exits 0):
    # the plugin's errors end the process with one line instead.
    with pytest.raises(SystemExit) as caught:
        Options().parseOptions(argv)
    message = str(caught.value.code)
    assert complaint in message
    assert "\n" not in message and message.startswith("twistd hypertcp: ")


def test_a_config_file_that_does_not_parse_is_named(tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text("[limits\nrate_limit = 5\n")
    with pytest.raises(SystemExit, match="broken.ini"):
        Options().parseOptions(["--config", str(path)])
