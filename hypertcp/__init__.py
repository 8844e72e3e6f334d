"""HyperTCP: a lightweight real-time messaging protocol over plain TCP."""

__version__ = "0.1.0"
