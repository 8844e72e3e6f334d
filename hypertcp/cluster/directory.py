"""Which other node holds which device, as far as this node knows."""

from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Sequence


class RemotePeer(NamedTuple):
    """A connection on another node, as presence snapshots show it."""

    device_id: str
    peer: str  # its address, HOST:PORT, as that node sees it
    node: str
    owner: str  # whose id it is (TokenRecord.owner): one owner per id, cluster-wide


class Directory:
    """
    The connections of every other node: kept from their presence events,
    and replaced whole from Redis when this node (re)joins or another node
    is found.  Routing asks it for every message, so it is a dict lookup.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, dict[str, RemotePeer]] = {}
        self._devices: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        """Connections known on other nodes."""
        return sum(len(peers) for peers in self._nodes.values())

    def holds(self, device_id: str) -> bool:
        return device_id in self._devices

    def owner_of(self, device_id: str) -> Optional[str]:
        """Who holds C{device_id} on other nodes (None: no one)."""
        for node in self._devices.get(device_id, ()):
            for peer in self._nodes[node].values():
                if peer.device_id == device_id:
                    return peer.owner
        return None

    def nodes_of(self, device_id: str) -> dict[str, int]:
        """The nodes holding C{device_id}, each with its number of connections there."""
        return self._devices.get(device_id, {})

    def add(self, node: str, device_id: str, client_id: str, owner: str) -> None:
        peers = self._nodes.setdefault(node, {})
        if client_id in peers:
            return
        peers[client_id] = RemotePeer(device_id, client_id, node, owner)
        counts = self._devices.setdefault(device_id, {})
        counts[node] = counts.get(node, 0) + 1

    def remove(self, node: str, client_id: str) -> None:
        peer = self._nodes.get(node, {}).pop(client_id, None)
        if peer is None:
            return
        counts = self._devices[peer.device_id]
        counts[node] -= 1
        if not counts[node]:
            del counts[node]
            if not counts:
                del self._devices[peer.device_id]

    def forget(self, node: str) -> list[RemotePeer]:
        """Drop every connection of C{node}; return them."""
        peers = list(self._nodes.get(node, {}).values())
        for peer in peers:
            self.remove(node, peer.peer)
        self._nodes.pop(node, None)
        return peers

    def replace(self, node: str, peers: list[tuple[str, str, str]],
                since: Sequence[tuple[bool, str, str, str]] = ()
                ) -> tuple[list[RemotePeer], list[RemotePeer]]:
        """
        Make C{node}'s connections C{peers} (device id, client id, owner),
        then apply C{since} -- the changes heard while C{peers} was being
        read, as (connected, device id, client id, owner), in the order
        heard; return the connections that appeared and those that went.

        C{peers} and the changes come over different connections to Redis,
        so a change may have been heard before a list read before it:
        applied again in order on top of the list, each connection ends as
        the last change heard of it says, or as the list says if none was.
        """
        before = dict(self._nodes.get(node, {}))
        now = {client_id: (device_id, owner) for device_id, client_id, owner in peers}
        for connected, device_id, client_id, owner in since:
            if connected:
                now[client_id] = (device_id, owner)
            else:
                now.pop(client_id, None)
        gone = [peer for client_id, peer in before.items() if client_id not in now]
        for peer in gone:
            self.remove(node, peer.peer)
        came = []
        for client_id, (device_id, owner) in now.items():
            if client_id not in before:
                self.add(node, device_id, client_id, owner)
                came.append(RemotePeer(device_id, client_id, node, owner))
        return came, gone

    def nodes(self) -> list[str]:
        return [node for node, peers in self._nodes.items() if peers]

    def peers(self) -> Iterator[RemotePeer]:
        for peers in self._nodes.values():
            yield from peers.values()

    def devices(self) -> int:
        return len(self._devices)
