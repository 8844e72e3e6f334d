"""
Configuration: one INI file, command-line overrides, and validation.

Every key the server reads is declared in L{SCHEMA} with its parser,
default and meaning; the file is checked against it at start-up, so a typo
stops the server with a message naming the key instead of being silently
ignored.  Each section becomes a frozen dataclass (L{Config} holds them), so
code reads typed values, not strings.  etc/hypertcp.ini documents the same
keys (a test keeps the two in step, and the dataclasses with the schema).
"""

from __future__ import annotations

import configparser
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, get_type_hints

from hypertcp.server import tokens
from hypertcp.server.limits import Limits


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


def _int(minimum: int = 0, maximum: Optional[int] = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"must be {bound}")
        return value
    return parse


def _float(minimum: float = 0.0) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        # nan compares false with everything and inf never runs out: either
        # would quietly switch a timeout or a limit off.
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value
    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("must be yes or no")


def _words(text: str) -> list[str]:
    return text.split()


def _text(text: str) -> str:
    return text.strip()


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value
    return parse


def _address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text.strip()!r} is not HOST:PORT")
    return host, int(port)


def _addresses(text: str) -> list[tuple[str, int]]:
    return [_address(word) for word in text.split()]


def _optional_address(text: str) -> Optional[tuple[str, int]]:
    return _address(text) if text.strip() else None


def _redis_url(text: str) -> str:
    """A redis:// or rediss:// URL, checked now; empty: no cluster."""
    if text.strip():
        from hypertcp.cluster.url import parse
        parse(text)
    return text.strip()


class _NoReactor:
    """Stands in for the reactor while an endpoint string is only parsed, never used."""


def _endpoint(description: str) -> str:
    """A Twisted server endpoint string, checked by parsing it as the listener will."""
    if description.isdigit():
        raise ValueError(f"{description!r} is a bare port: write tcp:{description}:"
                         f"interface=127.0.0.1 (loopback only) or tcp:{description} "
                         "(every interface)")
    kind = description.partition(":")[0]
    # Imported here: Twisted's endpoints import its TCP support, which
    # imports pyOpenSSL when installed (hypertcp.app.lean decides first).
    from twisted.internet import endpoints

    try:
        endpoint = endpoints.serverFromString(_NoReactor(), description)
    except ValueError as e:
        if str(e).startswith("Unknown endpoint type"):
            raise ValueError(f"unknown endpoint type {kind!r} in {description!r} "
                             "(tcp:PORT:interface=ADDRESS, tcp6:..., unix:PATH)") from None
        raise ValueError(f"{description!r} is not an endpoint string: {e}") from None
    except (TypeError, OSError) as e:
        raise ValueError(f"{description!r} is not an endpoint string: {e}") from None
    port = getattr(endpoint, "_port", 0)
    if isinstance(port, int) and not 0 <= port < 65536:
        raise ValueError(f"{description!r}: port {port} is not 0..65535")
    return description


def _endpoints(text: str) -> list[str]:
    return [_endpoint(word) for word in text.split()]


def _origins(text: str) -> list[str]:
    """Web origins, scheme://host[:port] each (no path), or * for any."""
    origins = []
    for word in text.split():
        word = word.rstrip("/")
        scheme, sep, rest = word.partition("://")
        if word != "*" and (scheme not in ("http", "https") or not sep or not rest
                            or "/" in rest):
            raise ValueError(f"{word!r} is not an origin such as https://app.example.com")
        origins.append(word.lower())
    return origins


def _ssh_endpoints(text: str) -> list[str]:
    """Endpoint strings; a bare port number means that port on loopback only."""
    return _endpoints(" ".join(f"tcp:{word}:interface=127.0.0.1" if word.isdigit() else word
                               for word in text.split()))


#: TLS 1.2 suites offered by default: forward secret and authenticated
#: encryption only (GCM, ChaCha20-Poly1305), no CBC with SHA-1 or SHA-2 MACs.
#: TLS 1.3 suites are all AEAD.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


@dataclass(frozen=True)
class Option:
    parse: Callable[[str], Any]
    default: str
    help: str
    #: The value may hold a password: errors never repeat it.
    secret: bool = False


SCHEMA: dict[str, dict[str, Option]] = {
    "server": {
        "listen": Option(_endpoints, "tcp:8080:interface=127.0.0.1",
                         "Twisted endpoint strings for plain TCP listeners, separated by spaces"),
        "tokens": Option(_text, tokens.DEFAULT_PATH,
                         "token file; created with one fleet token on first start"),
        "token_reload": Option(_float(0.1), "2",
                               "seconds between checks of the token file for changes"),
        "handlers": Option(_words, "",
                           "module:function hooks called with the hub to add server commands"),
        "redirect_targets": Option(_addresses, "",
                                   "HOST:PORT the redirect and drain commands may send "
                                   "sessions to; empty: any"),
        "backlog": Option(_int(1), "4096",
                          "accept queue of every listener whose endpoint names no backlog="),
        "reuse_port": Option(_bool, "no",
                             "plain and TLS listeners set SO_REUSEPORT, so processes share "
                             "their ports (--workers sets it)"),
    },
    "limits": {
        "max_payload": Option(_int(16, 65535), "8192",
                              "largest accepted payload in bytes; larger frames get status 11"),
        "rate_limit": Option(_float(0), "100",
                             "messages per second per connection (token bucket); 0 is off"),
        "rate_burst": Option(_int(0), "0",
                             "bucket size in messages; 0 means one second's worth of rate_limit"),
        "quota_strikes": Option(_int(1), "300",
                                "frames refused for quota within 10 s before the connection is closed"),
        "max_outbound_buffer": Option(_int(4096), "1048576",
                                      "bytes queued to a connection that is not reading before it is dropped"),
        "idle_timeout": Option(_float(1), "90",
                               "seconds of silence before a connection is closed; pinged at half"),
        "login_timeout": Option(_float(0.1), "10",
                                "seconds a new connection has to log in"),
        "ack_timeout": Option(_float(0.1), "10",
                              "seconds a delivery that asked for an acknowledgement waits for it"),
        "max_connections": Option(_int(0), "50000",
                                  "open connections at most, over every listener; 0 is no limit"),
        "client_heartbeat": Option(_float(0), "30",
                                   "seconds between the PINGs of quiet devices; idle_timeout "
                                   "must exceed it; 0: no check"),
        "close_timeout": Option(_float(0.1), "5",
                                "seconds a closing connection has to finish before it is aborted"),
        "max_pending_per_source": Option(_int(0), "1024",
                                         "connections not logged in yet from one address "
                                         "(IPv6: one /64); 0 is no limit"),
        "broadcast_rate": Option(_int(0), "1048576",
                                 "bytes per second one token's broadcasts may deliver, over "
                                 "all its connections; 0 is no limit"),
        "broadcast_rate_total": Option(_int(0), "4194304",
                                       "bytes per second all broadcasts together may deliver; "
                                       "0 is no limit"),
    },
    "tls": {
        "listen": Option(_endpoints, "",
                         "endpoint strings (tcp:...) of listeners that speak TLS; empty: none"),
        "certificate": Option(_text, "",
                              "PEM file: the server certificate, then any intermediates"),
        "key": Option(_text, "", "PEM file of the private key; empty: in the certificate file"),
        "ca": Option(_text, "",
                     "PEM file of the CA certificates that sign device certificates"),
        "require_client_cert": Option(_bool, "no",
                                      "refuse devices that present no certificate signed by ca"),
        "min_version": Option(_choice("1.2", "1.3"), "1.2", "the oldest TLS version accepted"),
        "reload": Option(_float(0), "5",
                         "seconds between checks of the files for changes; 0: on SIGHUP only"),
        "ciphers": Option(_text, DEFAULT_CIPHERS,
                          "OpenSSL cipher string for TLS 1.2; the default offers AEAD suites only"),
        "bind_certificate_to_id": Option(_bool, "no",
                                         "a TLS login's client certificate (subject CN or SAN) "
                                         "must name the device id it logs in as"),
    },
    "manhole": {
        "listen": Option(_ssh_endpoints, "",
                         "SSH endpoint strings; a bare port is on loopback; empty: no manhole"),
        "authorized_keys": Option(_text, "hypertcp-manhole-keys",
                                  "OpenSSH authorized_keys file of the operators' public keys"),
        "host_key": Option(_text, "hypertcp-manhole-host-key",
                           "the SSH host key, generated there on first start"),
        "login_timeout": Option(_float(1), "30",
                                "seconds a connection has to authenticate before it is closed"),
        "max_pending": Option(_int(0), "10",
                              "connections not authenticated yet, at most; 0 is no limit"),
    },
    "balancer": {
        "listen": Option(_endpoints, "",
                         "endpoint strings of load-balancer listeners; empty: no balancer"),
        "backends": Option(_addresses, "", "HOST:PORT of each node, separated by spaces; "
                           "empty, with [cluster] redis: the nodes registered there"),
        "policy": Option(_choice("least-connections", "sticky"), "least-connections",
                         "how a node is picked for a login"),
        "token_file": Option(_text, "",
                             "file holding the token, granted stats and drain, the balancer "
                             "logs in to backends with"),
        "health_interval": Option(_float(0.1), "2", "seconds between health checks of a node"),
        "health_timeout": Option(_float(0.1), "5",
                                 "seconds a node has to answer a health check before it is out"),
        "advertise": Option(_optional_address, "",
                            "HOST:PORT drained sessions are sent to; empty: the balancer's own"),
        "tls": Option(_bool, "no", "the balancer listeners speak TLS with the [tls] certificate"),
        "backend_tls": Option(_bool, "no",
                              "the nodes' ports speak TLS: REDIRECTs say so, health checks use it"),
        "ca": Option(_text, "",
                     "PEM CA file the nodes' certificates are checked against; empty: the system's"),
    },
    "cluster": {
        "redis": Option(_redis_url, "",
                        "redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS) of the cluster's "
                        "Redis; empty: a single node", secret=True),
        "node_id": Option(_text, "", "this node's name in the cluster; empty: HOSTNAME-PID"),
        "advertise": Option(_optional_address, "",
                            "HOST:PORT devices reach this node at, for balancers; empty: "
                            "the first plain listener's address"),
        "prefix": Option(_text, "hypertcp:", "prefix of every Redis key and channel"),
        "ttl": Option(_float(1), "5",
                      "seconds a node's registration lives unless renewed: how soon a dead "
                      "node's devices are forgotten"),
        "refresh": Option(_float(0.1), "1", "seconds between renewals of the registration"),
        "ca": Option(_text, "", "PEM CA file Redis's certificate is checked against (rediss://); "
                                "empty: the system's"),
    },
    "store": {
        "enabled": Option(_bool, "yes",
                          'keep messages sent with "qos": 1 for devices that are offline'),
        "path": Option(_text, "hypertcp-messages.db",
                       "the SQLite file of a single node's stored messages (a cluster keeps "
                       "them in its Redis)"),
        "synchronous": Option(_choice("full", "normal"), "full",
                              "full: fsync each commit, a power cut loses nothing answered "
                              "STORED; normal: fsync at checkpoints only"),
        "writer": Option(_choice("process", "thread"), "process",
                         "what writes the file: a process of its own (faster under load) or a "
                         "thread of the server's (no second process)"),
        "max_queued": Option(_int(1), "1000", "messages stored for one device at most"),
        "max_queued_bytes": Option(_int(1), "1048576",
                                   "bytes (sender id and payload) stored for one device at most"),
        "max_total_bytes": Option(_int(1), "268435456",
                                  "bytes stored for all devices together at most"),
        "default_ttl": Option(_float(1), "86400",
                              'seconds a message is kept when it names no "ttl"'),
        "max_ttl": Option(_float(1), "604800",
                          'the longest "ttl" accepted, in seconds; longer is refused with 11'),
        "sweep_interval": Option(_float(0.1), "60",
                                 "seconds between deletions of expired messages"),
        "window": Option(_int(1, 64), "8",
                         "stored messages delivered to a device and not yet acknowledged, "
                         "at most"),
    },
    "log": {
        "level": Option(_choice("debug", "info", "warn", "error", "critical"), "info",
                        "the least important level logged"),
        "format": Option(_choice("text", "json"), "text",
                         "text (twistd's lines) or json (one JSON object per line)"),
    },
    "auth": {
        "require_challenge": Option(_bool, "no",
                                    "refuse token logins; take only challenge logins, which "
                                    "keep the token off the wire"),
    },
    "web": {
        "listen": Option(_endpoints, "",
                         "endpoint strings of the web listeners (dashboard, /ws, /api, "
                         "/metrics); empty: none"),
        "tls": Option(_bool, "no", "the web listeners speak HTTPS and WSS with the [tls] certificate"),
        "allowed_origins": Option(_origins, "",
                                  "origins of other sites whose pages may open /ws; * for any"),
        "metrics_token": Option(_text, "",
                                "bearer token that GET /metrics requires; empty: none"),
    },
}

#: What SIGHUP applies to the running server when the config file changed
#: (every other key needs a restart, and SIGHUP says so).
RELOADABLE: frozenset[tuple[str, str]] = frozenset(
    [("limits", key) for key in SCHEMA["limits"]] + [("log", key) for key in SCHEMA["log"]])


@dataclass(frozen=True)
class ServerConfig:
    listen: list[str]
    tokens: str
    token_reload: float
    handlers: list[str]
    redirect_targets: list[tuple[str, int]]
    backlog: int
    reuse_port: bool


@dataclass(frozen=True)
class TLSConfig:
    listen: list[str]
    certificate: str
    key: str
    ca: str
    require_client_cert: bool
    min_version: str
    reload: float
    ciphers: str
    bind_certificate_to_id: bool


@dataclass(frozen=True)
class ManholeConfig:
    listen: list[str]
    authorized_keys: str
    host_key: str
    login_timeout: float
    max_pending: int


@dataclass(frozen=True)
class BalancerConfig:
    listen: list[str]
    backends: list[tuple[str, int]]
    policy: str
    token_file: str
    health_interval: float
    health_timeout: float
    advertise: Optional[tuple[str, int]]
    tls: bool
    backend_tls: bool
    ca: str


@dataclass(frozen=True)
class ClusterConfig:
    redis: str
    node_id: str
    advertise: Optional[tuple[str, int]]
    prefix: str
    ttl: float
    refresh: float
    ca: str


@dataclass(frozen=True)
class StoreConfig:
    enabled: bool
    path: str
    synchronous: str
    writer: str
    max_queued: int
    max_queued_bytes: int
    max_total_bytes: int
    default_ttl: float
    max_ttl: float
    sweep_interval: float
    window: int


@dataclass(frozen=True)
class LogConfig:
    level: str
    format: str


@dataclass(frozen=True)
class AuthConfig:
    require_challenge: bool


@dataclass(frozen=True)
class WebConfig:
    listen: list[str]
    tls: bool
    allowed_origins: list[str]
    metrics_token: str


@dataclass(frozen=True)
class Config:
    """The whole configuration, one typed dataclass per section."""

    server: ServerConfig
    limits: Limits
    tls: TLSConfig
    manhole: ManholeConfig
    balancer: BalancerConfig
    cluster: ClusterConfig
    store: StoreConfig
    log: LogConfig
    auth: AuthConfig
    web: WebConfig


#: The dataclass each section is read into.
SECTIONS: dict[str, type] = get_type_hints(Config)


def read(path: Optional[str] = None, overrides: Optional[dict[tuple[str, str], str]] = None
         ) -> dict[tuple[str, str], str]:
    """
    The text of every key, by (section, key): its default, then C{path}'s
    value (if given), then C{overrides}'.  L{ConfigError} for a file that
    cannot be read and for unknown sections and keys; values are not
    checked yet (L{parse} does that).
    """
    parser = configparser.ConfigParser(interpolation=None, empty_lines_in_values=False)
    if path is not None:
        if not os.path.exists(path):
            raise ConfigError(f"config file {path} does not exist")
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as e:
            raise ConfigError(f"{path}: {e}") from None
    where = path or "command line"
    for section in parser.sections():
        if section not in SCHEMA:
            raise ConfigError(f"{where}: unknown section [{section}]; known: "
                              + ", ".join(f"[{s}]" for s in SCHEMA))
        for key in parser[section]:
            if key not in SCHEMA[section]:
                raise ConfigError(f"{where}: unknown key '{key}' in [{section}]; known: "
                                  + ", ".join(SCHEMA[section]))
    if overrides:
        for section, key in overrides:
            if key not in SCHEMA.get(section, {}):
                raise ConfigError(f"unknown config key {section}.{key}")
    raw: dict[tuple[str, str], str] = {}
    for section, options in SCHEMA.items():
        for key, option in options.items():
            value = option.default
            if parser.has_option(section, key):
                value = parser.get(section, key)
            if overrides and (section, key) in overrides:
                value = overrides[(section, key)]
            raw[(section, key)] = value
    return raw


def parse(raw: dict[tuple[str, str], str]) -> Config:
    """The configuration L{read} found, parsed and checked; L{ConfigError} names the first bad key."""
    sections: dict[str, Any] = {}
    for section, options in SCHEMA.items():
        values: dict[str, Any] = {}
        for key, option in options.items():
            text = raw[(section, key)]
            try:
                values[key] = option.parse(text)
            except ValueError as e:
                shown = "(hidden)" if option.secret else repr(text)
                raise ConfigError(f"bad value for [{section}] {key} = {shown}: {e}") from None
        sections[section] = SECTIONS[section](**values)
    config = Config(**sections)
    _check(config)
    return config


def load(path: Optional[str] = None, overrides: Optional[dict[tuple[str, str], str]] = None
         ) -> Config:
    """
    Read C{path} (if given), apply C{overrides} keyed by (section, key), and
    return the parsed, checked configuration.  L{ConfigError} names the
    first bad key.
    """
    return parse(read(path, overrides))


def check_reuse_port(config: Config) -> None:
    """Can the plain and TLS listeners be shared through SO_REUSEPORT?  L{ConfigError} if not."""
    from hypertcp.app import reuseport
    if not reuseport.supported():
        raise ConfigError("[server] reuse_port: this platform's sockets have no SO_REUSEPORT; "
                          "run one node per port instead")
    for key, descriptions in (("[server] listen", config.server.listen),
                              ("[tls] listen", config.tls.listen)):
        for description in descriptions:
            try:
                reuseport.parse(description)
            except ValueError as e:
                raise ConfigError(f"{key} with [server] reuse_port: {e}") from None


def changes(old: Config, new: Config) -> list[tuple[str, str, Any, Any]]:
    """Every key whose value differs, as (section, key, old value, new value)."""
    found = []
    for section, options in SCHEMA.items():
        before, after = getattr(old, section), getattr(new, section)
        for key in options:
            if getattr(before, key) != getattr(after, key):
                found.append((section, key, getattr(before, key), getattr(after, key)))
    return found


def _check(config: Config) -> None:
    """Keys that only make sense together, checked now rather than at the first connection."""
    tls, balancer, limits, cluster = config.tls, config.balancer, config.limits, config.cluster
    if config.server.reuse_port:
        check_reuse_port(config)
    if config.store.default_ttl > config.store.max_ttl:
        raise ConfigError("[store] default_ttl must not be more than [store] max_ttl")
    if cluster.redis and cluster.ttl <= 2 * cluster.refresh:
        raise ConfigError("[cluster] ttl must be more than twice [cluster] refresh, or a "
                          "node that is alive can look dead")
    if limits.client_heartbeat and limits.idle_timeout <= limits.client_heartbeat:
        raise ConfigError(
            f"[limits] idle_timeout = {limits.idle_timeout:g} would close devices between "
            f"their heartbeats: it must exceed [limits] client_heartbeat = "
            f"{limits.client_heartbeat:g} (set that to 0 if every device answers the "
            "server's PINGs)")
    if (tls.listen or balancer.tls or (config.web.listen and config.web.tls)) \
            and not tls.certificate:
        raise ConfigError("TLS listeners need [tls] certificate (try `hypertcp certs`)")
    if tls.require_client_cert and not tls.ca:
        raise ConfigError("[tls] require_client_cert needs [tls] ca, the CA of the device certificates")
    if tls.bind_certificate_to_id and not tls.require_client_cert:
        raise ConfigError("[tls] bind_certificate_to_id needs [tls] require_client_cert, "
                          "so every TLS login presents a certificate")
    if balancer.listen and not balancer.backends and not cluster.redis:
        raise ConfigError("[balancer] listen needs [balancer] backends, or [cluster] redis "
                          "to send devices to the nodes registered there")
    if balancer.backends and balancer.listen and not balancer.token_file:
        raise ConfigError("[balancer] backends need [balancer] token_file, holding a token "
                          "granted stats and drain for the health checks")
