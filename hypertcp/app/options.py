"""
C{twistd hypertcp}'s command line: a config file and overrides of its keys.

A mistake on it, or in the config file, ends the process with one line
naming the key.  (twistd answers a L{usage.UsageError} by printing its
whole usage text, then the error, and exiting 0; so the plugin raises
L{SystemExit} instead.)
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from twisted.python import usage

from hypertcp import __version__
from hypertcp.app import lean
from hypertcp.app.config import Config, ConfigError, parse, read


class Options(usage.Options):
    """C{twistd hypertcp} options: a config file and overrides of its keys."""

    synopsis = "[--config FILE] [--listen ENDPOINT ...] [options]"
    optParameters = [
        ["config", "c", None, "INI configuration file (see etc/hypertcp.ini)"],
        ["tokens", "t", None, "token file ([server] tokens)"],
        ["rate-limit", None, None, "messages/s per connection, 0 for none ([limits] rate_limit)"],
        ["idle-timeout", None, None, "seconds of silence before closing ([limits] idle_timeout)"],
        ["login-timeout", None, None, "seconds allowed to log in ([limits] login_timeout)"],
        ["max-payload", None, None, "largest payload in bytes ([limits] max_payload)"],
        ["tls-cert", None, None, "TLS certificate PEM file ([tls] certificate)"],
        ["tls-key", None, None, "TLS private key PEM file ([tls] key)"],
        ["tls-ca", None, None, "CA PEM file for device certificates ([tls] ca)"],
        ["workers", None, 0, "run N node processes sharing the listening ports, joined "
                             "through [cluster] redis; 0: this process is the node", int],
        ["log-level", None, None, "debug, info, warn, error or critical ([log] level)"],
        ["log-format", None, None, "text, or json for one JSON object per line ([log] format)"],
    ]
    # Options whose value lands on one config key.
    keys = {
        "tokens": ("server", "tokens"),
        "rate-limit": ("limits", "rate_limit"),
        "idle-timeout": ("limits", "idle_timeout"),
        "login-timeout": ("limits", "login_timeout"),
        "max-payload": ("limits", "max_payload"),
        "tls-cert": ("tls", "certificate"),
        "tls-key": ("tls", "key"),
        "tls-ca": ("tls", "ca"),
        "log-level": ("log", "level"),
        "log-format": ("log", "format"),
    }

    def __init__(self) -> None:
        super().__init__()
        #: The arguments as given, which --workers passes on to each worker.
        self.argv: list[str] = []
        self.overrides: dict[tuple[str, str], str] = {}
        self.listen: list[str] = []
        # Repeatable options, each joined into one config key.
        self.lists: dict[tuple[str, str], list[str]] = {}

    def opt_listen(self, endpoint: str) -> None:
        """Listen on a Twisted endpoint, e.g. tcp:8080:interface=127.0.0.1 (repeatable)"""
        self.listen.append(endpoint)

    opt_l = opt_listen

    def opt_tls(self, endpoint: str) -> None:
        """Listen for TLS on a Twisted endpoint, e.g. tcp:8443 ([tls] listen; repeatable)"""
        self.lists.setdefault(("tls", "listen"), []).append(endpoint)

    def opt_manhole(self, endpoint: str) -> None:
        """Serve the SSH manhole on an endpoint or a loopback port ([manhole] listen)"""
        self.lists.setdefault(("manhole", "listen"), []).append(endpoint)

    def opt_balancer(self, endpoint: str) -> None:
        """Run the load balancer on an endpoint ([balancer] listen; repeatable)"""
        self.lists.setdefault(("balancer", "listen"), []).append(endpoint)

    def opt_backend(self, address: str) -> None:
        """A node the balancer sends devices to, HOST:PORT ([balancer] backends; repeatable)"""
        self.lists.setdefault(("balancer", "backends"), []).append(address)

    def opt_cluster(self, url: str) -> None:
        """Join the cluster whose Redis is at URL, redis://HOST:PORT/DB ([cluster] redis)"""
        self.overrides[("cluster", "redis")] = url

    def opt_version(self) -> None:
        """Print the HyperTCP version and exit"""
        print(f"HyperTCP {__version__}")
        raise SystemExit(0)

    def opt_web(self, endpoint: str) -> None:
        """Serve the dashboard, /ws, /api and /metrics on an endpoint ([web] listen; repeatable)"""
        self.lists.setdefault(("web", "listen"), []).append(endpoint)

    def opt_set(self, assignment: str) -> None:
        """Set any config key: --set section.key=value (repeatable)"""
        name, sep, value = assignment.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot:
            raise usage.UsageError(f"--set takes section.key=value, not {assignment!r}")
        self.overrides[(section.strip(), key.strip())] = value

    config: Config

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        # Kept for --workers, which runs its workers with the same arguments.
        self.argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"twistd hypertcp: {e} (twistd hypertcp --help lists the options)"
                             ) from None
        except ConfigError as e:
            raise SystemExit(f"twistd hypertcp: {e}") from None

    def postOptions(self) -> None:
        if self["workers"] < 0:
            raise usage.UsageError("--workers takes a number of processes, 0 or more")
        for option, target in self.keys.items():
            if self[option] is not None:
                self.overrides[target] = self[option]
        if self.listen:
            self.overrides[("server", "listen")] = " ".join(self.listen)
        for target, values in self.lists.items():
            self.overrides[target] = " ".join(values)
        raw = read(self["config"], self.overrides)
        if self.parent is not None and not lean.wants_tls(raw):
            # twistd's subcommand, before anything imported Twisted's TCP
            # support: a server speaking no TLS does without pyOpenSSL.
            lean.leave_out_tls()
        self.config = parse(raw)
        if self.parent is not None:
            # twistd was not told which reactor (it would have installed
            # it by now): epoll without its per-event log context.  Imported
            # here, after the TLS decision: it imports Twisted's TCP support.
            from hypertcp.app.reactor import install_default

            install_default()
