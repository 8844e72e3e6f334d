"""The error a bench run stops with, whichever part of it found the problem."""


class BenchError(Exception):
    """A run that cannot go on; the message says why."""
