"""
C{hypertcp bench}: how many messages a broker moves, how late, at what cost.

N sender->receiver pairs push messages through a broker: our server, Debian's
Mosquitto over MQTT 3.1.1 QoS 0 for comparison, or a sink that costs nothing
(each sender's socket is connected straight to its receiver's), which is how
the load generator states its own ceiling.  Every message carries its
sequence number and send time, so the receiving end counts what was lost or
duplicated and how late it came.  The load generator is raw non-blocking
sockets and an epoll loop writing many frames per send(); C{--procs} spreads
it over processes, so it is not the bottleneck it measures.

C{--idle N} measures the other cost of a broker for devices: N logged-in
connections that only heartbeat, and the server memory and CPU they take.
C{--storm N} is the reconnect storm: N devices connect and log in at once,
as after a Wi-Fi outage.  C{--tls} runs any of them over TLS.

L{command} has the command line and the order of the runs; L{load},
L{fleet} and L{storm} are the three kinds of run, L{peers} the servers they
go through, L{frames} and L{mqtt} the two protocols, L{sockets} and L{tls}
the connections, L{report} what is printed.  docs/performance.rst has the
method and the figures.
"""
