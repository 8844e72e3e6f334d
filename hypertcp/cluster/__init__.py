"""
A cluster: several C{twistd hypertcp} nodes that behave as one server,
through Redis as their bus and shared store.

Each node registers itself (L{registry}), keeps a copy of which node holds
each online device (L{directory}), and sends what its own sessions cannot
take to the node that can, in batches (L{envelopes}) published on that
node's channel (L{node}).  L{redis} keeps the two Redis connections a node
needs; L{url} reads the C{[cluster] redis} URL; L{tokens} is the token store
the cluster shares.  Without C{[cluster] redis} none of this is loaded.
"""
