"""
The application: C{twistd hypertcp}'s service tree.

L{tap} builds it from the L{config}: plain TCP L{listeners}, the TLS
listener (L{tls}), the SSH admin console (L{manhole}) and the load
balancer (L{balancer}), each a service under one MultiService.  Modules
here only wire L{hypertcp.server} to the outside world.
"""
