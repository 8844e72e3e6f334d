"""
L{hypertcp.app.lean}: which configurations need pyOpenSSL, so a server
whose configuration needs none can leave it (13 MB) out.
"""

from __future__ import annotations

import sys

import pytest

from hypertcp.app import lean
from hypertcp.app.config import read


@pytest.mark.parametrize("overrides", [
    {},
    {("manhole", "listen"): "2222"},
    {("server", "listen"): "tcp:8080 tcp6:8080"},
])
def test_a_configuration_without_tls(overrides):
    assert not lean.wants_tls(read(overrides=overrides))


@pytest.mark.parametrize("overrides", [
    {("tls", "listen"): "tcp:8443"},
    {("tls", "certificate"): "server.pem"},
    {("balancer", "listen"): "tcp:7000"},
    {("web", "listen"): "tcp:8000:interface=127.0.0.1"},
    {("cluster", "redis"): "rediss://redis.example:6380/0"},
    {("cluster", "redis"): "redis://127.0.0.1:6379/0"},  # txredisapi imports Twisted's TLS
    {("server", "listen"): "tcp:8080 ssl:8443:privateKey=k.pem"},
])
def test_a_configuration_that_speaks_tls(overrides):
    assert lean.wants_tls(read(overrides=overrides))


def test_nothing_is_left_out_once_twisteds_tcp_support_is_imported():
    import twisted.internet.tcp  # noqa: F401  (as in any process that has begun serving)

    openssl = sys.modules.get("OpenSSL", "absent")
    assert lean.leave_out_tls() is False
    assert sys.modules.get("OpenSSL", "absent") is openssl
