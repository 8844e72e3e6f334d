"""What a connection has queued for its peer, read off its transport."""

from __future__ import annotations

from typing import Any


def buffered(transport: Any) -> int:
    """Bytes queued for the peer that the kernel has not taken yet (below TLS, if any)."""
    inner = getattr(transport, "transport", None)
    if inner is not None and hasattr(inner, "dataBuffer"):
        transport = inner
    return (len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
            + getattr(transport, "_tempDataLen", 0))
