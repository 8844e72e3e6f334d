"""
The token store: who may log in, as what.

The file holds only SHA-256 digests of the tokens.  Tokens are random with at
least 128 bits of entropy, so a fast hash is enough: there is nothing to
brute-force, and a lookup on the login path stays O(1).  The secret itself is
shown once, when it is created.  Each record also keeps the stored key that
checks a challenge login (L{hypertcp.protocol.challenge}); the first 16 hex
characters of the digest name the token in such a login.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from hypertcp.protocol.challenge import KEY_ID_HEX, stored_key

DEFAULT_PATH = "hypertcp-tokens.json"
ROLES = ("device", "fleet", "observer")


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
    the token may send to ("server" and "broadcast" included).
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

    def may_use(self, device_id: str) -> bool:
        """May a client holding this token log in as C{device_id}?"""
        if self.role == "device":
            return device_id == self.name
        return self.prefix is None or device_id.startswith(self.prefix)

    def may_reach(self, target: str) -> bool:
        # Checked for every message; "*", nearly every token's reach, needs no fnmatch.
        return "*" in self.reach or any(fnmatch.fnmatchcase(target, p) for p in self.reach)


def make_record(name: str, role: str = "device", prefix: Optional[str] = None,
                reach: Optional[list[str]] = None) -> tuple[str, TokenRecord]:
    """A new token's secret and the record stored for it (its digests, never the secret)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name:
        raise ValueError("a token needs a name")
    if role == "device" and prefix:
        raise ValueError("a device token is bound to its name; --prefix is for fleet and observer tokens")
    secret = new_secret()
    return secret, TokenRecord(name=name, role=role, hash=digest(secret), prefix=prefix,
                               reach=list(reach) if reach else ["*"], created=time.time(),
                               stored_key=stored_key(secret))


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
        self._stamp: Optional[tuple[int, int]] = None
        self._loaded = False
        self.reload()

    def _file_stamp(self) -> Optional[tuple[int, int]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Re-read the file if it changed; return whether it did."""
        stamp = self._file_stamp()
        if stamp == self._stamp and self._loaded:
            return False
        if stamp is None and self._records:
            # A file that vanishes is an accident more often than a decision
            # to lock every device out: keep the tokens, and say so.
            raise FileNotFoundError(f"{self.path} has gone; the tokens loaded before stay in force")
        records: list[TokenRecord] = []
        if stamp is not None:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
                raise ValueError(f"{self.path}: not a HyperTCP token file")
            records = [TokenRecord(**entry) for entry in data["tokens"]]
        self._records = records
        self._by_hash = {r.hash: r for r in records if not r.revoked}
        self._by_key = {r.key_id: r for r in self._by_hash.values()}
        self._stamp = stamp
        self._loaded = True
        return True

    @property
    def exists(self) -> bool:
        return self._stamp is not None

    def lookup(self, secret: str) -> Optional[TokenRecord]:
        """The live record for a presented token, or None."""
        return self._by_hash.get(digest(secret))

    def by_key(self, key_id: str) -> Optional[TokenRecord]:
        """The live record a challenge login names by its key id, or None."""
        return self._by_key.get(key_id)

    def live(self, token_hash: str) -> Optional[TokenRecord]:
        """The current record of a token that is still live, or None."""
        return self._by_hash.get(token_hash)

    def list(self) -> list[TokenRecord]:
        return list(self._records)

    def add(self, name: str, role: str = "device", prefix: Optional[str] = None,
            reach: Optional[list[str]] = None) -> str:
        """Create a token, save the file, and return the secret (shown only now)."""
        secret, record = make_record(name, role, prefix, reach)
        self.reload()
        self._records.append(record)
        self._save()
        return secret

    def revoke(self, name: str) -> int:
        """Revoke every live token called C{name}; return how many."""
        self.reload()
        count = 0
        for record in self._records:
            if record.name == name and not record.revoked:
                record.revoked = True
                count += 1
        if count:
            self._save()
        return count

    def replace(self, records: list[TokenRecord]) -> bool:
        """
        Make the file hold exactly C{records} (the cluster's tokens, copied
        here so the node can start without Redis); return whether it changed.
        """
        self.reload()
        if [asdict(r) for r in records] == [asdict(r) for r in self._records]:
            return False
        self._records = list(records)
        self._save()
        return True

    def _save(self) -> None:
        # Write-then-rename, so a server polling the file never reads half of it.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "tokens": [asdict(r) for r in self._records]}, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self._stamp = None
        self.reload()
