"""
The token store: who may log in, as what.

The file holds only SHA-256 digests of the tokens.  Tokens are random with at
least 128 bits of entropy, so a fast hash is enough: there is nothing to
brute-force, and a lookup on the login path stays O(1).  The secret itself is
shown once, when it is created.  Each record also keeps the stored key that
checks a challenge login (L{hypertcp.protocol.challenge}); the first 16 hex
characters of the digest name the token in such a login.

Every change is a read-modify-write under an exclusive C{flock} on
C{FILE.lock}, whoever makes it (the command line, the manhole, the server's
first start), so concurrent writers never lose one another's changes; the
new file is written beside the old one and renamed over it, so a reader
never sees half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from hypertcp.protocol.bodies import MAX_DEVICE_ID, RESERVED_IDS
from hypertcp.protocol.challenge import KEY_ID_HEX, stored_key

DEFAULT_PATH = "hypertcp-tokens.json"
ROLES = ("device", "fleet", "observer")
#: Admin powers a fleet or observer token may be granted, each by name: the
#: server commands of that name (drain also undrains; the balancer's
#: backends command is stats, its drain_backend and undrain_backend drain).
GRANTS = ("stats", "redirect", "kick", "drain")
#: A token's name; a device token's name is its device id, so it must be one
#: that reads unambiguously in logs and on a command line.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")
#: How long a writer waits for another to finish before giving up.
LOCK_TIMEOUT = 10.0


class TokenFileError(ValueError):
    """The token file cannot be read as one; the message names it and says why."""


def check_name(name: str, role: str) -> None:
    """ValueError, saying what is allowed, unless C{name} may name a C{role} token."""
    if not NAME.fullmatch(name) or len(name) > MAX_DEVICE_ID:
        raise ValueError(f"{name!r} is not a valid token name: use 1 to {MAX_DEVICE_ID} "
                         "letters, digits and _ . : @ - (not first)")
    if role == "device" and name in RESERVED_IDS:
        raise ValueError(f"{name!r} is a reserved id; a device token cannot be named so")


def default_path() -> str:
    """The token file a command uses when none is named."""
    return os.environ.get("HYPERTCP_TOKENS", DEFAULT_PATH)


def new_secret() -> str:
    """192 random bits, URL-safe, never starting with "-" (it would read as an option)."""
    while True:
        secret = secrets.token_urlsafe(24)
        if not secret.startswith("-"):
            return secret


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass
class TokenRecord:
    """
    One token.  C{device} tokens are bound to C{name} as their device id;
    C{fleet} and C{observer} tokens let the client name its id (within
    C{prefix}, when set).  C{reach} lists the glob patterns of the targets
    the token may send to ("server" and "broadcast" included).  C{grants}
    names the admin commands it may run (L{GRANTS}), on the devices its
    prefix and reach cover.
    """

    name: str
    role: str
    hash: str
    prefix: Optional[str] = None
    reach: list[str] = field(default_factory=lambda: ["*"])
    created: float = 0.0
    revoked: bool = False
    #: Checks challenge logins; None for tokens made before they existed.
    stored_key: Optional[str] = None
    grants: list[str] = field(default_factory=list)

    @property
    def device_id(self) -> Optional[str]:
        return self.name if self.role == "device" else None

    @property
    def key_id(self) -> str:
        """The token's name in a challenge login."""
        return self.hash[:KEY_ID_HEX]

    @property
    def observer(self) -> bool:
        return self.role == "observer"

    @property
    def owner(self) -> str:
        """
        Who an id online under this token belongs to: a device token's name
        (a reissued token of the same device is the same owner), otherwise
        this very token.
        """
        return f"device:{self.name}" if self.role == "device" else self.hash

    def may_use(self, device_id: str) -> bool:
        """May a client holding this token log in as C{device_id}?"""
        if self.role == "device":
            return device_id == self.name
        return self.prefix is None or device_id.startswith(self.prefix)

    def may_manage(self, device_id: str) -> bool:
        """May this token's admin grants act on C{device_id}: within its prefix and reach?"""
        return ((self.prefix is None or device_id.startswith(self.prefix))
                and self.may_reach(device_id))

    @property
    def unbounded(self) -> bool:
        """No prefix and reach "*": its grants may act on every session at once."""
        return self.prefix is None and "*" in self.reach

    def may_reach(self, target: str) -> bool:
        # Checked for every message; "*", nearly every token's reach, needs no fnmatch.
        return "*" in self.reach or any(fnmatch.fnmatchcase(target, p) for p in self.reach)


def make_record(name: str, role: str = "device", prefix: Optional[str] = None,
                reach: Optional[list[str]] = None, grants: Optional[list[str]] = None
                ) -> tuple[str, TokenRecord]:
    """A new token's secret and the record stored for it (its digests, never the secret)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    check_name(name, role)
    for grant in grants or ():
        if grant not in GRANTS:
            raise ValueError(f"a grant is one of {', '.join(GRANTS)}, not {grant!r}")
    if grants and role == "device":
        raise ValueError("a device token cannot be granted admin commands; "
                         "--grant is for fleet and observer tokens")
    if role == "device" and prefix:
        raise ValueError("a device token is bound to its name; --prefix is for fleet and observer tokens")
    secret = new_secret()
    return secret, TokenRecord(name=name, role=role, hash=digest(secret), prefix=prefix,
                               reach=list(reach) if reach else ["*"], created=time.time(),
                               stored_key=stored_key(secret),
                               grants=list(dict.fromkeys(grants or ())))


class TokenStore:
    """
    The token file, loaded into memory.  C{reload()} re-reads it only when it
    changed, so a running server can poll it cheaply.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._records: list[TokenRecord] = []
        self._by_hash: dict[str, TokenRecord] = {}
        self._by_key: dict[str, TokenRecord] = {}
        self._device_ids: set[str] = set()
        self._stamp: Optional[tuple[int, int]] = None
        self._loaded = False
        self.reload()

    def _file_stamp(self) -> Optional[tuple[int, int, int]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        # Writers replace the file, so the inode changes with every write,
        # even one within the file system's timestamp resolution.
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, force: bool = False) -> bool:
        """
        Re-read the file if it changed (or C{force}); return whether it did.
        L{TokenFileError} if it is not a token file.
        """
        stamp = self._file_stamp()
        if stamp == self._stamp and self._loaded and not force:
            return False
        if stamp is None and self._records:
            # A file that vanishes is an accident more often than a decision
            # to lock every device out: keep the tokens, and say so.
            raise FileNotFoundError(f"{self.path} has gone; the tokens loaded before stay in force")
        self._set(self._read() if stamp is not None else [])
        self._stamp = stamp
        self._loaded = True
        return True

    def _set(self, records: list[TokenRecord]) -> None:
        self._records = records
        self._by_hash = {r.hash: r for r in records if not r.revoked}
        self._by_key = {r.key_id: r for r in self._by_hash.values()}
        self._device_ids = {r.name for r in records if r.role == "device" and not r.revoked}

    def _read(self) -> list[TokenRecord]:
        try:
            with open(self.path, "rb") as f:
                data = json.loads(f.read())
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise TokenFileError(f"{self.path}: not JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise TokenFileError(f"{self.path}: not a HyperTCP token file (no \"tokens\" list)")
        records = []
        for number, entry in enumerate(data["tokens"], 1):
            try:
                records.append(TokenRecord(**entry))
            except TypeError as e:
                raise TokenFileError(f"{self.path}: record {number} is not a token: {e}") from None
        return records

    @property
    def exists(self) -> bool:
        return self._stamp is not None

    def lookup(self, secret: str) -> Optional[TokenRecord]:
        """The live record for a presented token, or None."""
        return self._by_hash.get(digest(secret))

    def by_key(self, key_id: str) -> Optional[TokenRecord]:
        """The live record a challenge login names by its key id, or None."""
        return self._by_key.get(key_id)

    def allows(self, record: TokenRecord, device_id: str) -> bool:
        """
        May C{record} log in as C{device_id}?  Within its own rules, and never
        as the id of a live device token unless it is one: those ids are
        reserved to their devices, online or not.
        """
        return record.may_use(device_id) and (record.role == "device"
                                              or device_id not in self._device_ids)

    def live(self, token_hash: str) -> Optional[TokenRecord]:
        """The current record of a token that is still live, or None."""
        return self._by_hash.get(token_hash)

    def list(self) -> list[TokenRecord]:
        return list(self._records)

    def add(self, name: str, role: str = "device", prefix: Optional[str] = None,
            reach: Optional[list[str]] = None, grants: Optional[list[str]] = None) -> str:
        """Create a token, save the file, and return the secret (shown only now)."""
        secret, record = make_record(name, role, prefix, reach, grants)
        with self._changing():
            if any(r.name == name and not r.revoked for r in self._records):
                raise ValueError(f"a live token named {name!r} exists in {self.path}; "
                                 "revoke it first, or choose another name")
            self._records.append(record)
        return secret

    def revoke(self, name: str) -> int:
        """Revoke every live token called C{name}; return how many."""
        with self._changing():
            count = 0
            for record in self._records:
                if record.name == name and not record.revoked:
                    record.revoked = True
                    count += 1
        return count

    def replace(self, records: list[TokenRecord]) -> bool:
        """
        Make the file hold exactly C{records} (the cluster's tokens, copied
        here so the node can start without Redis); return whether it changed.
        """
        with self._changing():
            unchanged = [asdict(r) for r in records] == [asdict(r) for r in self._records]
            self._set(list(records))
        return not unchanged

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """
        Hold the lock, with the records fresh from the file; on leaving
        without an error, save them if they changed.
        """
        with self._locked():
            self._remove_strays()
            self.reload(force=True)
            before = [asdict(r) for r in self._records]
            try:
                yield
                if [asdict(r) for r in self._records] != before:
                    self._save()
            except BaseException:
                # The file is as it was: so are the records.
                self._set([TokenRecord(**entry) for entry in before])
                raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive flock on FILE.lock, waited for at most L{LOCK_TIMEOUT} seconds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock file is never removed: removing it would let two writers
        # lock two different files of the same name.
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"{self.path}: another writer has held its lock "
                                           f"for {LOCK_TIMEOUT:g} s") from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _remove_strays(self) -> None:
        """Temporary files of writers that died mid-save (none is saving: we hold the lock)."""
        pattern = os.path.join(glob.escape(str(self.path.parent)),
                               glob.escape(self.path.name) + "*.tmp")
        for stray in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stray)

    def _save(self) -> None:
        # Write-then-rename, so a server polling the file never reads half of it.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "tokens": [asdict(r) for r in self._records]}, f,
                          indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.reload(force=True)
