"""
Concurrent writers of one token file -- the CLI, the manhole and the
server's first start each read, modify and write it -- lose nothing: every
add is kept and every revocation stays revoked.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from hypertcp.server.tokens import TokenStore

WRITERS, ADDS = 4, 15


def _adder(start, path: str, prefix: str, count: int) -> None:
    start.wait()
    for i in range(count):
        TokenStore(path).add(f"{prefix}-{i}")


def _revoker(start, path: str, names: list[str]) -> None:
    start.wait()
    for name in names:
        assert TokenStore(path).revoke(name) == 1


def _run(*targets: tuple) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(targets))
    processes = [context.Process(target=target, args=(start, *args)) for target, *args in targets]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
        assert p.exitcode == 0, f"a writer failed (exit {p.exitcode})"


@pytest.mark.integration
def test_concurrent_adds_are_all_kept(tmp_path: Path):
    path = str(tmp_path / "tokens.json")
    _run(*[(_adder, path, f"w{w}", ADDS) for w in range(WRITERS)])
    names = [r.name for r in TokenStore(path).list()]
    assert len(names) == WRITERS * ADDS, f"{WRITERS * ADDS - len(names)} adds lost"
    assert sorted(names) == sorted(f"w{w}-{i}" for w in range(WRITERS) for i in range(ADDS))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.integration
def test_revocations_racing_adds_stay_revoked(tmp_path: Path):
    path = str(tmp_path / "tokens.json")
    store = TokenStore(path)
    stolen = [f"stolen-{i}" for i in range(20)]
    for name in stolen:
        store.add(name)
    _run((_revoker, path, stolen), (_adder, path, "new", ADDS), (_adder, path, "more", ADDS))
    records = TokenStore(path).list()
    live = {r.name for r in records if not r.revoked}
    assert not live & set(stolen), f"revocations lost: {sorted(live & set(stolen))}"
    assert len(records) == len(stolen) + 2 * ADDS
