"""Fixtures of the in-process tests: a server core on a fake clock, and its log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inprocess import Server, captured_log


@pytest.fixture
def server(tmp_path: Path) -> Server:
    """A server core with the default limits (make your own Server for others)."""
    return Server(tmp_path)


@pytest.fixture
def log():
    """What is logged during the test."""
    with captured_log() as lines:
        yield lines
