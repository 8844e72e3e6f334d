"""
Start the real daemon the way a user does (C{twistd -n hypertcp}) and the real
C{hypertcp} command line, for the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

LISTENING = re.compile(r"HyperTCP (\w+) listening on ([\d.]+):(\d+)")


def _script(name: str) -> str:
    """An installed console script: the one beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed"
    return found


def hypertcp(*args: str, env: Optional[dict] = None, input: Optional[str] = None,
             timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the installed C{hypertcp} command line and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "hypertcp.cli", *args],
        capture_output=True, text=True, env=env, input=input, timeout=timeout,
    )


def add_token(tokens: Path, name: str, *options: str) -> str:
    """
    Create a token through C{hypertcp token add}, run in this process (the
    command's own parser and code, without an interpreter start per token;
    tests/test_cli.py runs the command itself); return the secret it prints last.
    """
    from hypertcp.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["token", "add", name, "--tokens", str(tokens), *options])
    assert status == 0, err.getvalue()
    return out.getvalue().strip().splitlines()[-1]


def make_certs(out: Path, *args: str) -> Path:
    """A development CA and certificates from C{hypertcp certs}, in C{out}."""
    result = hypertcp("certs", "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    return out


class Daemon:
    """
    One C{twistd -n hypertcp} process on a loopback port the OS picks.

    The ports it listens on are read back from its log, so no test guesses a
    free port.  C{ports} maps a listener kind ("tcp", "tls", "balancer", ...)
    to its port; C{port} is the plain TCP one.
    """

    def __init__(self, workdir: Path, *args: str, listen: bool = True,
                 twistd: tuple[str, ...] = ()) -> None:
        self.workdir = Path(workdir)
        self.args = list(args)
        #: twistd's own options, before the subcommand.
        self.twistd = list(twistd)
        if listen and not any(a.startswith("--listen") for a in args):
            self.args += ["--listen", "tcp:0:interface=127.0.0.1"]
        self.proc: Optional[subprocess.Popen] = None
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._changed = threading.Condition()

    @property
    def port(self) -> int:
        return self.ports["tcp"]

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def start(self, timeout: float = 30, expect: tuple[str, ...] = ("tcp",)) -> "Daemon":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [_script("twistd"), "-n", "--pidfile=", *self.twistd, "hypertcp", *self.args],
            cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda: all(k in self.ports for k in expect), timeout,
                      f"listeners {expect}")
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                for kind, _host, port in LISTENING.findall(line):
                    self.ports.setdefault(kind, int(port))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float = 10, what: str = "condition") -> None:
        """Wait until C{predicate()} holds, re-checking as the log grows."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc and self.proc.poll() is not None and not predicate()):
                    if self.proc and self.proc.poll() is not None:
                        raise AssertionError(
                            f"daemon exited ({self.proc.returncode}) before {what}:\n"
                            + "".join(self.lines))
                    raise AssertionError(f"timed out waiting for {what}:\n" + "".join(self.lines))
                self._changed.wait(min(left, 0.2))

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        self.wait_for(lambda: text in "".join(self.lines), timeout, repr(text))

    def rss_kb(self) -> int:
        assert self.proc
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
