"""
The resident memory of a freshly started server, per configuration.

The server imports only what its configuration uses (hypertcp/app/lean.py,
and each service imports its libraries where the tree is built), so what
a process costs at start depends on which services are on.  This starts
C{twistd -n hypertcp} with each configuration on loopback ports the OS
picks, waits for its listeners to be up and a second more, reads VmRSS
from /proc -- the server's, then its children's (the store's writer, in a
process of its own unless C{[store] writer = thread}) -- and stops it; the
median of a few starts is printed.

Run from a checkout, with its interpreter::

    python tools/startup_rss.py
    python tools/startup_rss.py --starts 5 plain tls
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypertcp.bench.peers import process_tree

#: Each configuration's options beyond a plain listener; {q} is a free port.
CONFIGURATIONS = {
    "plain": [],
    "thread": ["--set", "store.writer=thread"],
    "manhole": ["--manhole", "tcp:{q}:interface=127.0.0.1",
                "--set", "manhole.authorized_keys={work}/keys",
                "--set", "manhole.host_key={work}/host-key"],
    "tls": ["--tls", "tcp:{q}:interface=127.0.0.1", "--tls-cert", "{work}/certs/server.pem",
            "--tls-key", "{work}/certs/server.key"],
    "web": ["--web", "tcp:{q}:interface=127.0.0.1"],
    # Redis need not be there: the node starts, serves its own and retries.
    "cluster": ["--cluster", "redis://127.0.0.1:{q}/0"],
}
LISTENING = re.compile(r"HyperTCP (\w+) listening on")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def start_rss_mb(options: list[str], work: Path, timeout: float = 30) -> tuple[float, float]:
    """
    Start one server with C{options}; once its listeners are up, its RSS in
    MB and its children's.
    """
    args = [a.format(q=free_port(), work=work) for a in options]
    expect = 1 + sum(a in ("--manhole", "--tls", "--web") for a in args)
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "hypertcp", "--listen", "tcp:0:interface=127.0.0.1",
            "--tokens", str(work / "tokens.json"), *args]
    proc = subprocess.Popen(argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        deadline, up, lines = time.monotonic() + timeout, 0, []
        for line in proc.stdout:
            lines.append(line)
            up += bool(LISTENING.search(line))
            if up >= expect or time.monotonic() > deadline:
                break
        if proc.poll() is not None or up < expect:
            raise SystemExit("the server did not start:\n" + "".join(lines[-10:]))
        time.sleep(1.0)  # what start-up leaves to the first reactor turns
        return rss_mb(proc.pid), sum(rss_mb(pid) for pid in process_tree(proc.pid)[1:])
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--starts", type=int, default=3, help="starts per configuration")
    parser.add_argument("names", nargs="*", metavar="CONFIG",
                        help=f"some of {', '.join(CONFIGURATIONS)} (default: all)")
    args = parser.parse_args()
    unknown = set(args.names) - set(CONFIGURATIONS)
    if unknown:
        parser.error(f"no configuration {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hypertcp = Path(sys.executable).with_name("hypertcp")  # the checkout's command
        subprocess.run([str(hypertcp), "certs", "--host", "127.0.0.1", "--out", str(work / "certs")],
                       check=True, capture_output=True)
        (work / "keys").write_text("")
        for name in args.names or CONFIGURATIONS:
            sizes = [start_rss_mb(CONFIGURATIONS[name], work) for _ in range(args.starts)]
            own = [size for size, _ in sizes]
            print(f"{name:10} {statistics.median(own):6.1f} MB "
                  f"(of {', '.join(f'{s:.1f}' for s in own)}), "
                  f"its children {statistics.median(c for _, c in sizes):.1f} MB")


if __name__ == "__main__":
    main()
