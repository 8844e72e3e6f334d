"""The C{[cluster] redis} URL: where Redis is, and how to log in there, never logged whole."""

from __future__ import annotations

from typing import NamedTuple, Optional
from urllib.parse import unquote, urlsplit


class RedisURL(NamedTuple):
    host: str
    port: int
    db: int
    tls: bool
    username: Optional[str]
    password: Optional[str]

    def __str__(self) -> str:
        """The URL with its secret hidden: what logs and errors show."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:***@"
        elif self.username:
            auth = f"{self.username}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{auth}{host}:{self.port}/{self.db}"


def parse(text: str) -> RedisURL:
    """
    C{redis://[[user]:password@]host[:port][/db]}, or C{rediss://} for TLS.
    ValueError names what is wrong, without repeating a password.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError("not a redis:// URL (bad port?)") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"the URL must start redis:// or rediss://, not {parts.scheme or '(none)'}://")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number, as in redis://host:6379/0, not {path!r}")
    if parts.query or parts.fragment:
        raise ValueError("the URL takes no query or fragment")
    return RedisURL(parts.hostname, port or 6379, int(path or 0), parts.scheme == "rediss",
                    unquote(parts.username) if parts.username else None,
                    unquote(parts.password) if parts.password is not None else None)
