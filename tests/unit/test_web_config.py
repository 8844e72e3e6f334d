"""The [web] section: validated at start-up, naming the bad key."""

from __future__ import annotations

import pytest

from hypertcp.app.config import ConfigError, load
from hypertcp.app.options import Options


def test_defaults_are_off():
    web = load().web
    assert web.listen == [] and web.tls is False and web.allowed_origins == []
    assert web.metrics_token == ""


def test_web_option_and_origins():
    options = Options()
    options.parseOptions(["--web", "tcp:0:interface=127.0.0.1", "--set",
                          "web.allowed_origins=https://App.example.com/ http://x:81"])
    web = options.config.web
    assert web.listen == ["tcp:0:interface=127.0.0.1"]
    assert web.allowed_origins == ["https://app.example.com", "http://x:81"]


@pytest.mark.parametrize("origin", ["app.example.com", "ftp://x", "https://x/path", "https://"])
def test_bad_origin_names_the_key(origin):
    with pytest.raises(ConfigError, match=r"\[web\] allowed_origins"):
        load(overrides={("web", "allowed_origins"): origin})


def test_web_tls_needs_the_certificate():
    with pytest.raises(ConfigError, match=r"\[tls\] certificate"):
        load(overrides={("web", "listen"): "tcp:0", ("web", "tls"): "yes"})
