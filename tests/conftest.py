from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon import Daemon, add_token
from tests.firmware import build, device  # noqa: F401 (fixtures: the ESP32 host build)
from tests.redis_server import redis  # noqa: F401 (fixture: a real redis-server)

#: Fixtures that start a process or open a socket.  A test that uses one is an
#: integration test whether or not its module says so, so that
#: `pytest -m "not integration"` never waits on a process.
PROCESS_FIXTURES = frozenset(("start_daemon", "build", "device", "scripted", "redis"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("integration") is not None:
            continue
        # tests/test_firmware*.py build the C++ library and run what they
        # build, whatever fixture they do it through.
        if (PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                or item.path.name.startswith("test_firmware")):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    return tmp_path / "tokens.json"


@pytest.fixture
def start_daemon(tmp_path: Path, tokens_file: Path):
    """Factory: start_daemon(*twistd_plugin_args) -> a running Daemon, stopped at teardown."""
    started: list[Daemon] = []

    def start(*args: str, expect: tuple[str, ...] = ("tcp",), workdir: Path | None = None) -> Daemon:
        if not any(a == "--tokens" for a in args):
            args = ("--tokens", str(tokens_file), *args)
        d = Daemon(workdir or tmp_path, *args)
        started.append(d)
        return d.start(expect=expect)

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def token(tokens_file: Path):
    """Factory: token(name, *options) -> a new secret from `hypertcp token add`."""
    return lambda name, *options: add_token(tokens_file, name, *options)
