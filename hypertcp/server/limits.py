"""The per-connection limits a server enforces, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """
    Bounds on what one connection may cost.  etc/hypertcp.ini documents each
    under [limits]; the config loader builds this from that section.
    """

    max_payload: int = 8192
    rate_limit: float = 100.0
    rate_burst: int = 0
    quota_strikes: int = 300
    max_outbound_buffer: int = 1048576
    idle_timeout: float = 90.0
    login_timeout: float = 10.0
    ack_timeout: float = 10.0
    max_connections: int = 50000
    #: Not enforced per connection: idle_timeout is checked against it at start-up.
    client_heartbeat: float = 30.0
    close_timeout: float = 5.0
    max_pending_per_source: int = 1024
    broadcast_rate: int = 1048576
    broadcast_rate_total: int = 4194304

    @property
    def burst(self) -> float:
        """The token bucket's size: C{rate_burst}, or one second's worth of the rate."""
        return float(self.rate_burst or max(self.rate_limit, 1))
