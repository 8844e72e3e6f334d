"""
The manhole: a Python prompt inside the running server, over SSH.

It is the chain L{twisted.conch.manhole_tap} builds -- a L{ConchFactory}
whose L{TerminalRealm} runs a L{ColoredManhole} -- with keys only: the
operators' public keys come from one OpenSSH C{authorized_keys} file, and
the host key is made once and kept, so C{ssh} sees the same server after
every restart.  The namespace holds the live hub and factory and a few
helpers; C{helpers()} lists them.
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.error import ValidPublicKey
from twisted.conch.insults.insults import ServerProtocol
from twisted.conch.interfaces import IConchUser
from twisted.conch.manhole_ssh import ConchFactory, TerminalRealm, TerminalSession
from twisted.conch.ssh.keys import BadKeyError, FingerprintFormats, Key
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from hypertcp.app.audit import AuditedManhole, Operator, audited
from hypertcp.app.buffers import buffered
from hypertcp.app.config import ConfigError, ManholeConfig
from hypertcp.app.listeners import DEFAULT_BACKLOG, Listener
from hypertcp.app.preauth import PreAuthLimit
from hypertcp.protocol.commands import status_name
from hypertcp.server.factory import HyperTCPFactory
from hypertcp.server.tokens import TokenStore
from hypertcp.store.records import message_rows, queue_rows

log = Logger()
LOOPBACK = ("interface=127.", "interface=localhost", "interface=\\:\\:1", "interface=::1")


def _fingerprint(key: Key) -> str:
    """As ssh-keygen -l and the ssh client show it."""
    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


@implementer(IAuthorizedKeysDB)
class OperatorKeys(SSHPublicKeyChecker):
    """
    The operators' public keys: one C{authorized_keys} file for every user
    name, read at each login so an added or removed key counts at once.
    Every login and every refused key is logged.
    """

    def __init__(self, path: str) -> None:
        super().__init__(self)
        self.path = path

    def getAuthorizedKeys(self, username: bytes) -> Iterable[Key]:
        try:
            with open(self.path, "rb") as f:
                return list(readAuthorizedKeyFile(f))
        except OSError as e:
            log.error("manhole: cannot read {path}, so no key is accepted: {error}",
                      path=self.path, error=e.strerror)
            return []

    def requestAvatarId(self, credentials: Any) -> Deferred:
        user = credentials.username.decode("utf-8", "replace")
        key = Key.fromString(credentials.blob)

        def accepted(avatar: bytes) -> bytes:
            log.info("manhole: {user} logged in with key {fingerprint}", user=user,
                     fingerprint=_fingerprint(key))
            # Any user name is let in; the key says who it is, in the audit lines.
            return f"{user} ({_fingerprint(key)})".encode("utf-8")

        def refused(failure: Any) -> Any:
            # ValidPublicKey is the client asking whether to sign: not a refusal.
            if failure.check(UnauthorizedLogin) and not failure.check(ValidPublicKey):
                log.warn("manhole: refused key {fingerprint} for {user}: not in {path}",
                         fingerprint=_fingerprint(key), user=user,
                         path=self.path)
            return failure

        return super().requestAvatarId(credentials).addCallbacks(accepted, refused)


class Console(TerminalSession):
    """
    conch's terminal session, able to resize, and ending on end of input:
    its own windowChanged and eofReceived raise NotImplementedError, which
    drops the operator's connection when the window is resized.
    """

    def openShell(self, proto: Any) -> None:
        user = IConchUser(self.original)
        self.terminal = self.chainedProtocolFactory(getattr(user, "name", "?"))
        self.transportFactory(proto, self.terminal, user, self.width, self.height)

    def windowChanged(self, newWindowSize: tuple) -> None:
        rows, columns = newWindowSize[:2]
        self.terminal.terminalProtocol.terminalSize(columns, rows)

    def eofReceived(self) -> None:
        self.terminal.loseConnection()


def host_key(path: str) -> Key:
    """
    The SSH host key kept at C{path}; on first start an Ed25519 key is made
    there (mode 0600), with its public half in C{path}.pub for known_hosts.
    """
    where = Path(path)
    if where.exists():
        return Key.fromFile(str(where))
    key = Key(ed25519.Ed25519PrivateKey.generate())
    where.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.toString("openssh"))
    Path(f"{where}.pub").write_bytes(key.public().toString("openssh") + b"\n")
    log.info("manhole: made SSH host key {path} ({fingerprint})", path=path,
             fingerprint=_fingerprint(key))
    return key


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


class _Shown(str):
    """Text the manhole prints as it is when a Deferred fires with it (it prints the repr)."""

    def __repr__(self) -> str:
        return "\n" + self


def _json_object(payload: Any) -> dict:
    """The contract carries JSON objects only: a list or a string is refused, not relayed."""
    if not isinstance(payload, dict):
        raise TypeError(f"the payload must be a dict (a JSON object), not "
                        f"{type(payload).__name__}: {payload!r}")
    return payload


class Rates:
    """Messages per second, from totals sampled once a second."""

    def __init__(self, factory: HyperTCPFactory) -> None:
        self.factory = factory
        self.received_per_s = self.delivered_per_s = 0.0
        self._last: Optional[tuple[float, int, int]] = None

    def sample(self) -> None:
        factory = self.factory
        received = factory.closed_messages_in + sum(s.messages_in for s in factory.sessions)
        now = factory.clock.seconds()
        last, self._last = self._last, (now, received, factory.hub.delivered)
        if last is not None and now > last[0]:
            self.received_per_s = (received - last[1]) / (now - last[0])
            self.delivered_per_s = (factory.hub.delivered - last[2]) / (now - last[0])


def namespace(factory: HyperTCPFactory, rates: Rates, balancer: Any = None) -> dict[str, Any]:
    """The manhole's globals: the live objects and the operator's helpers."""
    hub, tokens, clock = factory.hub, factory.tokens, factory.clock

    def sessions() -> None:
        """List the connections: device, address, role, since when, messages in/out, bytes queued."""
        now = clock.seconds()
        rows: list[tuple] = [("DEVICE", "ADDRESS", "ROLE", "CONNECTED", "AGE", "IN", "OUT",
                              "BUFFERED")]
        for s in sorted(factory.sessions, key=lambda s: s.connected_at):
            role = f"{s.token.role}:{s.token.name}" if s.token is not None else "-"
            rows.append((s.device_id or "(not logged in)", s.peer, role,
                         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.connected_at)),
                         _age(now - s.connected_at), s.messages_in, s.messages_out,
                         buffered(s.transport)))
        print(_table(rows))
        print(f"{len(factory.sessions)} connections, {len(hub.devices)} devices online")
        if hub.remote is not None:
            # The cluster: the other nodes' connections, as this node knows them.
            elsewhere = sorted(hub.remote.peers(), key=lambda p: (p.node, p.device_id))
            if elsewhere:
                print(_table([("DEVICE", "ADDRESS", "NODE")]
                             + [(p.device_id, p.peer, p.node) for p in elsewhere]))
            print(f"{len(elsewhere)} connections on other nodes")

    def kick(device_id: str) -> int:
        """Close every connection of device_id; return how many."""
        return hub.kick(device_id)

    def send(device_id: str, payload: dict) -> Any:
        """Send payload (a dict) to device_id as "server", on any node; the status's name."""
        answer = hub.send(device_id, _json_object(payload))
        if isinstance(answer, int):
            return status_name(answer)
        return answer.addCallback(status_name)  # across the cluster: the manhole shows it

    def broadcast(payload: dict) -> int:
        """Send payload (a dict) as a BROADCAST from "server" to everyone; return to how many."""
        hub.broadcast(None, _json_object(payload))
        return len(hub.sessions) + (hub.remote.elsewhere() if hub.remote is not None else 0)

    def redirect(device_id: Optional[str], host: str, port: int, tls: bool = False) -> int:
        """Send device_id's connections (None: all) to log in at host:port; return how many."""
        return hub.redirect(device_id, host, port, tls)

    def drain(host: str, port: int, tls: bool = False) -> int:
        """Send every connection to host:port and mark this node draining in its stats."""
        return hub.drain(host, port, tls)

    def add_token(name: str, role: str = "device", prefix: Optional[str] = None,
                  reach: Optional[list[str]] = None) -> str:
        """Create a token (role device, fleet or observer) and return its secret, shown only now."""
        secret = TokenStore(tokens.path).add(name, role, prefix, reach)
        factory.reload_tokens()
        return secret

    def revoke_token(name: str) -> int:
        """Revoke the tokens called name and close their connections now; return how many."""
        # Through the file, as the command line does: the server's reload then
        # sees the change and closes the revoked sessions.
        count = TokenStore(tokens.path).revoke(name)
        factory.reload_tokens()
        return count

    def counters() -> dict[str, Any]:
        """Connections, devices, messages per second and the drop counts by reason."""
        return {"connections": len(factory.sessions), "devices": len(hub.devices),
                "received_per_s": round(rates.received_per_s, 1),
                "delivered_per_s": round(rates.delivered_per_s, 1),
                **dict(sorted(factory.counters.items()))}

    helpers_: dict[str, Callable[..., Any]] = {
        "sessions": sessions, "kick": audited(kick), "send": audited(send),
        "broadcast": audited(broadcast), "redirect": audited(redirect), "drain": audited(drain),
        "add_token": audited(add_token, show_result=False),
        "revoke_token": audited(revoke_token), "counters": counters}

    offline = hub.offline
    if offline is not None:
        store = offline.store

        def queue_list() -> Deferred:
            """Each device with stored messages: how many, their bytes, the oldest."""
            return store.queues().addCallback(
                lambda found: _Shown(_table(queue_rows(found)) + f"\n{len(found)} devices"))

        def queue_show(device_id: str, limit: int = 20) -> Deferred:
            """The first messages stored for device_id, oldest first."""
            return store.messages(device_id, limit).addCallback(
                lambda found: _Shown(_table(message_rows(found, int(clock.seconds() * 1000)))))

        def queue_purge(device_id: str) -> Deferred:
            """Delete every message stored for device_id; how many went."""
            return store.purge(device_id)

        helpers_.update(queue_list=queue_list, queue_show=queue_show, queue_purge=queue_purge)

    if balancer is not None:
        def backends() -> None:
            """The balancer's nodes: up, draining, sessions, load."""
            rows: list[tuple] = [("BACKEND", "UP", "DRAINING", "SESSIONS", "LOAD")]
            for state in balancer.status()["backends"]:
                rows.append((state["backend"], "yes" if state["up"] else "NO",
                             "yes" if state["draining"] else "no", state["sessions"],
                             state["load"]))
            print(_table(rows))
            print(f"policy: {balancer.policy}")

        def drain_backend(name: str) -> Deferred:
            """Move every device on node HOST:PORT (or registered id) to the others, through here."""
            return balancer.drain(name)

        def undrain_backend(name: str) -> None:
            """Let node HOST:PORT (or registered id) take new devices again."""
            balancer.undrain(name)

        helpers_.update(backends=backends, drain_backend=audited(drain_backend),
                        undrain_backend=audited(undrain_backend))

    def helpers() -> None:
        """List these helpers."""
        for name, function in sorted(helpers_.items()):
            arguments = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                                  for p in inspect.signature(function).parameters.values())
            print(f"{name}({arguments}): {(function.__doc__ or '').strip()}")
        print("Objects: hub, factory, tokens" + (", balancer" if balancer is not None else ""))

    return {**helpers_, "helpers": helpers, "hub": hub, "factory": factory, "tokens": tokens,
            "balancer": balancer}


def _authenticated(transport: Any) -> bool:
    """Has this SSH connection authenticated?  The connection service starts only then."""
    return getattr(getattr(transport, "service", None), "name", None) == b"ssh-connection"


def makeService(config: ManholeConfig, factory: HyperTCPFactory, balancer: Any = None,
                reactor: Any = None, backlog: int = DEFAULT_BACKLOG) -> MultiService:
    """The SSH manhole for C{[manhole]} in C{config}, on the live C{factory}."""
    top = MultiService()
    rates = Rates(factory)
    TimerService(1.0, rates.sample).setServiceParent(top)
    names = namespace(factory, rates, balancer)
    realm = TerminalRealm()
    realm.userFactory = Operator
    realm.sessionFactory = Console
    realm.chainedProtocolFactory = lambda operator: ServerProtocol(AuditedManhole, names,
                                                                   operator)
    ssh = ConchFactory(Portal(realm, [OperatorKeys(config.authorized_keys)]))
    try:
        key = host_key(config.host_key)
    except (OSError, BadKeyError) as e:
        raise ConfigError(f"manhole host key {config.host_key}: {e}") from None
    ssh.publicKeys = {key.sshType(): key.public()}
    ssh.privateKeys = {key.sshType(): key}
    if not Path(config.authorized_keys).exists():
        log.warn("manhole: {path} does not exist yet; no one can log in until it does",
                 path=config.authorized_keys)
    if reactor is None:
        from twisted.internet import reactor
    guarded = PreAuthLimit(ssh, _authenticated, config.login_timeout, config.max_pending,
                           reactor, "manhole")
    for description in config.listen:
        if not any(marker in description for marker in LOOPBACK):
            log.warn("manhole: {where} is not loopback-only; anyone who reaches it can try keys",
                     where=description)
        Listener("manhole", description, guarded, reactor, backlog).setServiceParent(top)
    return top
