"""
Store and forward: the messages sent with C{"qos": 1} that wait for a
device that is away.

L{interfaces} says what the server needs of a store; L{records} holds what
a store keeps; L{sqlite} is the embedded store of a single node (one SQLite
file, L{sqlitefile}, whose writer runs in a process of its own, L{child},
or on a thread: L{writers}), L{redis} the store a cluster shares.  The
policy -- what is stored, and when it is delivered -- is
L{hypertcp.server.offline}'s.
"""
