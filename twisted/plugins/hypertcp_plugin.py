"""Makes C{twistd hypertcp} run the HyperTCP server (see hypertcp.service)."""

from twisted.application.service import ServiceMaker

hypertcp = ServiceMaker(
    "HyperTCP", "hypertcp.service",
    "A lightweight real-time messaging broker over plain TCP.", "hypertcp")
