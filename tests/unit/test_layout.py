"""
The layout's acceptance (issue 8): no import cycle inside hypertcp/, lazy
imports included; the protocol package imports no Twisted; and the CLI's
token commands work where there is no epoll.
"""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "hypertcp"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(path: Path, name: str) -> set[str]:
    """
    Every module C{path} imports, anywhere in it (inside functions too: a
    lazy import is still an edge), but not under C{if TYPE_CHECKING:}, which
    never runs.  C{from pkg import mod} names both pkg and pkg.mod.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for inner in node.body:
                skip.update(id(n) for n in ast.walk(inner))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
                module = ".".join(base[:keep] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@functools.lru_cache(maxsize=None)
def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """
    The edges between hypertcp's modules (each name cut back to the module
    it falls in), and every name each module imports, outside ones included.
    """
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for name, path in files.items():
        raw[name] = imported(path, name)
        edges = set()
        for target in raw[name]:
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph, raw


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))
    return found


def test_the_cycle_finder_finds_a_cycle_and_a_lazy_one(tmp_path):
    # The check itself, on a graph with a known cycle, so it cannot pass by finding nothing.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    module = tmp_path / "mod.py"
    module.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from pkg.hidden import X\n"
                      "def f():\n    from pkg import lazy\n    import pkg.other\n")
    assert imported(module, "pkg.mod") == {"typing", "typing.TYPE_CHECKING", "pkg", "pkg.lazy",
                                           "pkg.other"}


def test_there_is_no_import_cycle_in_hypertcp():
    graph, _ = import_graph()
    assert len(graph) > 50, "every module of the package was read"
    found = cycles(graph)
    assert found == [], "import cycles: " + "; ".join(" -> ".join(group) for group in found)


def test_the_protocol_package_imports_no_twisted():
    graph, raw = import_graph()
    protocol = {name for name in graph if name.startswith("hypertcp.protocol")}
    assert "hypertcp.protocol.frames" in protocol
    reachable, todo = set(), list(protocol)
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(graph[name])
    outside = sorted(name for name in reachable if not name.startswith("hypertcp.protocol")
                     and name != "hypertcp")
    assert outside == [], f"hypertcp.protocol reaches {outside}"
    twisted = sorted(f"{name} imports {target}" for name in reachable for target in raw[name]
                     if target.split(".")[0] in ("twisted", "zope"))
    assert twisted == []


NO_EPOLL = """
import select, sys
del select.epoll
del select.EPOLLIN
from hypertcp.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def without_epoll(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYPERTCP_TOKENS"}
    return subprocess.run([sys.executable, "-c", NO_EPOLL, *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)


def test_the_token_commands_work_where_there_is_no_epoll(tmp_path):
    tokens = tmp_path / "tokens.json"
    added = without_epoll("token", "add", "x", "--tokens", str(tokens))
    assert added.returncode == 0, added.stderr
    assert f"Added device token 'x' to {tokens}" in added.stdout
    secret = added.stdout.strip().splitlines()[-1]
    assert len(secret) >= 22 and secret not in tokens.read_text()
    listing = without_epoll("token", "list", "--tokens", str(tokens))
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "PREFIX", "REACH", "GRANTS", "CREATED", "STATE"]
    assert row.split()[:5] == ["x", "device", "-", "*", "-"] and row.split()[-1] == "live"
