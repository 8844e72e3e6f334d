"""
The load balancer: a listener that logs devices in, picks a node for each
and sends it there with REDIRECT.

A login at the balancer is answered with two frames in one write: first
REDIRECT C{{"server", "port", "tls"}}, then the LOGIN's RESPONSE with
SUCCESS.  REDIRECT comes first so that a client which follows it the moment
it arrives (the ESP32 library, the Twisted client, a Blynk-style sketch)
leaves before it ever believes it is online at the balancer; a client that
waits for its LOGIN answer first (the blocking client) gets SUCCESS with the
REDIRECT already in hand and follows it before its next request.  Either way
the LOGIN is answered with its status byte, as the contract requires.  The
connection is closed a second later.

The balancer knows the C{[balancer] backends} through one logged-in
health connection to each (the Twisted client, reconnecting on its own): a
node whose connection drops or whose PING goes unanswered is out; it is
back in once it logs the balancer in again.  Every C{health_interval} each
node is asked for its C{"stats"}, whose session count is what
least-connections compares (plus the devices sent there since, which the
count cannot show yet).  In a cluster with no backends listed, the nodes
are those registered in the cluster's Redis, with the counts and draining
flags they publish there (L{registered}).  Either kind is an L{INode}.
"""

