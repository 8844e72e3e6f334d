"""Makes C{twistd hypertcp} run the HyperTCP server (see hypertcp.app.tap)."""

from twisted.application.service import ServiceMaker

hypertcp = ServiceMaker(
    "HyperTCP", "hypertcp.app.tap",
    "A lightweight real-time messaging broker over plain TCP.", "hypertcp")
