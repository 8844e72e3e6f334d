"""
The broker: one L{session.Session} per connection, the L{factory} that
holds what they share, the L{hub} that routes between them, and the
L{tokens} they log in with.  Nothing here knows how the process is
configured or which listeners exist; L{hypertcp.app} wires that.
"""
