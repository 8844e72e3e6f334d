"""Every Redis key and channel the cluster uses, named in one place (docs/operations.rst lists them)."""

from __future__ import annotations


class Keys:
    """The names under one prefix, so several clusters can share a Redis."""

    def __init__(self, prefix: str = "hypertcp:") -> None:
        self.prefix = prefix
        #: SET of the ids of nodes that have registered.
        self.nodes = f"{prefix}nodes"
        #: Channel every node hears: broadcasts, presence, telemetry, token changes.
        self.everyone = f"{prefix}all"
        #: HASH of the cluster's tokens, by digest (the token file's records as JSON).
        self.tokens = f"{prefix}tokens"
        #: HASH of live token names to digests: a name is taken once.
        self.token_names = f"{prefix}token-names"
        #: ZSET of the devices with stored messages, each scored by its
        #: earliest expiry (ms): where the sweep looks.
        self.queues = f"{prefix}queues"
        #: Held (SET NX PX) by the node sweeping expired messages, so one sweeps at a time.
        self.queue_sweep = f"{prefix}queue-sweep"
        #: The bytes of every stored message, against [store] max_total_bytes.
        self.queue_total = f"{prefix}queue-total"

    def node(self, node_id: str) -> str:
        """A node's registration (JSON), kept alive by its refreshing the TTL."""
        return f"{self.prefix}node:{node_id}"

    def inbox(self, node_id: str) -> str:
        """The channel a node hears what is for its own sessions on."""
        return f"{self.prefix}inbox:{node_id}"

    def devices(self, node_id: str) -> str:
        """HASH of a node's connections: "device id NUL client id" -> its owner."""
        return f"{self.prefix}devices:{node_id}"

    def queue(self, device_id: str) -> str:
        """STREAM of the messages stored for a device, in the order accepted."""
        return f"{self.prefix}queue:{device_id}"

    def queue_bytes(self, device_id: str) -> str:
        """The bytes a device's stored messages count against [store] max_queued_bytes."""
        return f"{self.prefix}queue-bytes:{device_id}"

    def queue_expiry(self, device_id: str) -> str:
        """ZSET of a device's stored messages' stream ids, scored by when each expires (ms)."""
        return f"{self.prefix}queue-exp:{device_id}"
