"""
The node's figures, read off the live objects when asked: the HTTP API,
the dashboard and /metrics all take them from here, so each number has
one source and the message path keeps no extra counts for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from hypertcp.app.web.gateway import WebGateway
    from hypertcp.server.factory import HyperTCPFactory
    from hypertcp.server.hub import Hub

TRANSPORTS = ("tcp", "ws")


def transport(session: Any) -> str:
    """How a connection reached the server: "ws" for the gateway's, "tcp" (TLS too) otherwise."""
    return getattr(session, "kind", "tcp")


def messages(node: "HyperTCPFactory", gateway: Optional["WebGateway"]
             ) -> dict[str, tuple[int, int]]:
    """Messages received from and sent to clients since start, per transport, as (in, out)."""
    ws_in, ws_out = (gateway.closed_in, gateway.closed_out) if gateway is not None else (0, 0)
    tcp_in, tcp_out = node.closed_messages_in - ws_in, node.closed_messages_out - ws_out
    for session in node.sessions:
        if transport(session) == "ws":
            ws_in += session.messages_in
            ws_out += session.messages_out
        else:
            tcp_in += session.messages_in
            tcp_out += session.messages_out
    return {"tcp": (tcp_in, tcp_out), "ws": (ws_in, ws_out)}


def devices(hub: "Hub") -> list[dict]:
    """The logged-in connections of this node, oldest first, with their figures."""
    rows = []
    for peer in hub.sessions:
        rows.append({
            "deviceId": peer.device_id, "address": peer.peer, "role": peer.token.role,
            "token": peer.token.name, "transport": transport(peer),
            "since": int(getattr(peer, "connected_at", 0) * 1000),
            "messagesIn": getattr(peer, "messages_in", 0),
            "messagesOut": getattr(peer, "messages_out", 0),
            "paused": peer.paused,
        })
    rows.sort(key=lambda row: (row["since"], row["deviceId"]))
    return rows


def stats(node: "HyperTCPFactory", gateway: Optional["WebGateway"]) -> dict:
    """The hub's stats, open connections, message totals and the refusal and drop counters."""
    totals = messages(node, gateway)
    return {**node.hub.stats(), "connections": len(node.sessions),
            "messagesIn": sum(pair[0] for pair in totals.values()),
            "messagesOut": sum(pair[1] for pair in totals.values()),
            "counters": dict(sorted(node.counters.items()))}
