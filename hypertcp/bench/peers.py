"""
The servers a run goes through: our server, Mosquitto or the contract's
floor, started here and stopped after, a running server, or the sink (no
broker at all); and the CPU and memory of their processes, read from /proc.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from hypertcp.bench.errors import BenchError
from hypertcp.bench.frames import HyperTCP, Sink
from hypertcp.bench.mqtt import MQTT
from hypertcp.bench.tls import Certificates, client_context

MOSQUITTO = "/usr/sbin/mosquitto"
LISTENING = re.compile(r"HyperTCP (tcp|tls) listening on ([\d.]+):(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """C{pid} and its live descendants (a server's store writer is its child)."""
    found, at = [pid], 0
    while at < len(found):
        here = found[at]
        at += 1
        try:
            with open(f"/proc/{here}/task/{here}/children") as f:
                found += [int(child) for child in f.read().split()]
        except OSError:
            pass  # gone meanwhile, or a kernel without the file: its own figures only
    return found


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process and its live descendants have used, from /proc."""
    total = 0
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            if each == pid:
                raise
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def proc_memory(pid: int) -> dict[str, int]:
    """
    The current (VmRSS) and peak (VmHWM) resident memory in KiB of a process
    and its live descendants, summed.
    """
    found = {"VmRSS": 0, "VmHWM": 0}
    for each in process_tree(pid):
        try:
            with open(f"/proc/{each}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        found[line[:5]] += int(line.split()[1])
        except OSError:
            if each == pid:
                raise
    return {"rss_kb": found["VmRSS"], "peak_kb": found["VmHWM"]}


class Broker:
    """
    A server under test: where it listens, the client TLS context when the
    run is over TLS, and its pid when we know it (then its CPU and memory
    are measured).  Started by us, it is stopped on exit.
    """

    def __init__(self, name: str, proto: Any, address: Optional[tuple[str, int]],
                 pid: Optional[int] = None, proc: Optional[subprocess.Popen] = None,
                 workdir: Optional[tempfile.TemporaryDirectory] = None,
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.name = name
        self.proto = proto
        self.address = address
        self.tls = tls
        self.pid = pid
        self.proc = proc
        self.workdir = workdir
        self.lines: list[str] = []
        self._reader: Optional[threading.Thread] = None
        #: What its figures are filed under in a run's report, if not its protocol's name.
        self.label: Optional[str] = None

    @property
    def key(self) -> str:
        """What its figures are filed under: read when filed, as a run may swap the protocol."""
        return self.label or getattr(self.proto, "name", self.name.lower())

    def place(self, index: int) -> tuple[tuple[str, int], tuple[str, int]]:
        """Where pair C{index}'s sender and receiver connect: here, both."""
        assert self.address is not None
        return self.address, self.address

    def cpu(self) -> Optional[float]:
        return proc_cpu(self.pid) if self.pid else None

    def extra_cpu(self) -> dict[str, float]:
        """The CPU of processes it needs besides itself (a cluster's Redis), by figure name."""
        return {}

    def settle(self) -> None:
        """Wait, once every connection of a run is logged in, until the run may begin."""

    def memory(self) -> dict[str, Optional[int]]:
        return proc_memory(self.pid) if self.pid else {"rss_kb": None, "peak_kb": None}

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.proc.returncode}):\n"
                             + "".join(self.lines[-30:]))

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)
            del self.lines[:-200]

    def start_reading(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def stop(self) -> None:
        """Stop it; then C{lines} holds all it printed, its last words too."""
        if self.proc is not None:
            end(self.proc)
            if self._reader is not None:
                self._reader.join(5)
        if self.workdir is not None:
            self.workdir.cleanup()


def end(proc: subprocess.Popen) -> None:
    """Terminate C{proc}; kill it if it has not gone within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_hypertcp(extra: list[str], certs: Optional[Certificates] = None,
                   backlog: Optional[int] = None,
                   tokens: Optional[tuple[Path, str]] = None) -> Broker:
    """
    C{twistd -n hypertcp} on a loopback port the OS picks, with a fresh
    fleet token, or a copy of the token file C{tokens} names with its
    fleet token's secret; with C{certs}, the run goes through its TLS
    listener.  C{backlog} is the listeners' listen queue, when not Twisted's
    default.
    """
    from hypertcp.server.tokens import TokenStore

    workdir = tempfile.TemporaryDirectory(prefix="hypertcp-bench-")
    if tokens is None:
        token_file = Path(workdir.name) / "tokens.json"
        secret = TokenStore(token_file).add("bench", role="fleet")
    else:
        token_file = Path(shutil.copy(tokens[0], workdir.name))
        secret = tokens[1]
    endpoint = "tcp:0:interface=127.0.0.1" + (f":backlog={backlog}" if backlog else "")
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "hypertcp", "--listen", endpoint,
            "--tokens", str(token_file), "--rate-limit", "0",
            # Every bench device comes from 127.0.0.1; a fleet's come from
            # as many addresses as devices, so the per-source cap is lifted.
            "--set", "limits.max_pending_per_source=0", *extra]
    kind = "tcp"
    if certs is not None:
        kind = "tls"
        argv += ["--tls", endpoint, "--tls-cert", str(certs.cert),
                 "--tls-key", str(certs.key)]
    proc = subprocess.Popen(argv, cwd=workdir.name, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    broker = Broker("HyperTCP", HyperTCP(secret), None, proc.pid, proc, workdir,
                    client_context(certs.ca) if certs else None)
    deadline = time.monotonic() + 30
    assert proc.stdout
    for line in proc.stdout:
        broker.lines.append(line)
        found = LISTENING.search(line)
        if found and found.group(1) == kind:
            broker.address = (found.group(2), int(found.group(3)))
            break
        if time.monotonic() > deadline:
            break
    if broker.address is None:
        broker.stop()
        raise BenchError("the HyperTCP server did not start:\n" + "".join(broker.lines[-30:]))
    broker.start_reading()
    return broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto(keepalive: int = 0, certs: Optional[Certificates] = None,
                    qos: int = 0, window: int = 0) -> Optional[Broker]:
    """
    Debian's mosquitto on a loopback port, or None when it is not installed;
    with C{certs}, its listener is TLS with the same certificate as ours.
    Its pairs publish and subscribe at C{qos}; at QoS 1 it sends a client
    at most C{window} unacknowledged messages (0: no limit).
    """
    binary = MOSQUITTO if os.path.exists(MOSQUITTO) else shutil.which("mosquitto")
    if binary is None:
        return None
    workdir = tempfile.TemporaryDirectory(prefix="hypertcp-bench-mosquitto-")
    port = free_port()
    conf = Path(workdir.name) / "mosquitto.conf"
    # Debian's defaults, plus a loopback listener open to anonymous clients,
    # no persistence (HyperTCP stores nothing either), and quiet logs.
    text = (f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stdout\nlog_type error\nlog_type warning\n")
    if qos:
        # Not Debian's default of 20 in flight: the bench's window is the
        # limit, as for HyperTCP, which has no cap of its own.
        text += f"max_inflight_messages {window}\n"
    if certs is not None:
        # Run as root, mosquitto loads its key after switching to its own
        # user, who cannot read our private temporary directory; "user root"
        # keeps it where it started (and means nothing when started as anyone else).
        text += f"user root\ncertfile {certs.cert}\nkeyfile {certs.key}\n"
    conf.write_text(text)
    proc = subprocess.Popen([binary, "-c", str(conf)], cwd=workdir.name, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    broker = Broker("Mosquitto", MQTT(keepalive, qos), ("127.0.0.1", port), proc.pid, proc, workdir,
                    client_context(certs.ca) if certs else None)
    broker.start_reading()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(broker.address, timeout=1).close()
            return broker
        except OSError:
            broker.check()
            if time.monotonic() > deadline:
                broker.stop()
                raise BenchError("mosquitto did not start listening:\n" + "".join(broker.lines))
            time.sleep(0.05)


FLOOR_LISTENING = re.compile(r"floor listening on ([\d.]+):(\d+)")


def start_floor(language: str = "c") -> Broker:
    """
    The contract's floor: HyperTCP's frames served with the server's system
    calls per message and nothing more, by one thread of C (C{floor.c},
    built here with the system's compiler; its counts of those calls are in
    the broker's C{lines} once it has stopped) or, C{language} "python", by
    C{pyfloor} on Python's own epoll.
    """
    workdir = tempfile.TemporaryDirectory(prefix="hypertcp-bench-floor-")
    if language == "python":
        argv = [sys.executable, "-m", "hypertcp.bench.pyfloor", "0"]
    else:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            workdir.cleanup()
            raise BenchError("--peer floor builds a C server: install a C compiler "
                             "(apt-get install gcc)")
        binary = Path(workdir.name) / "floor"
        built = subprocess.run([compiler, "-O2", "-o", str(binary),
                                str(Path(__file__).with_name("floor.c"))],
                               capture_output=True, text=True)
        if built.returncode:
            workdir.cleanup()
            raise BenchError(f"floor.c did not build:\n{built.stderr}")
        argv = [str(binary), "0"]
    proc = subprocess.Popen(argv, cwd=workdir.name, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    name = "pyfloor" if language == "python" else "floor"
    broker = Broker(name, HyperTCP("any token"), None, proc.pid, proc, workdir)
    broker.label = name
    assert proc.stdout
    line = proc.stdout.readline()
    found = FLOOR_LISTENING.search(line)
    if found is None:
        broker.stop()
        raise BenchError(f"the {name} server did not start: {line}{proc.stdout.read()}")
    broker.address = (found.group(1), int(found.group(2)))
    broker.start_reading()
    return broker


def sink() -> Broker:
    """No broker: the load generator's sockets are connected to each other."""
    return Broker("sink", Sink(""), None)
