"""
The ESP32 library's host build and a device process to drive, shared by the
firmware tests and the balancer's.  The fixtures are registered in conftest.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

HOST_DIR = Path(__file__).resolve().parent.parent / "firmware" / "host"
BUILD = HOST_DIR / "build"
RX_BUFFER = 1024  # HYPERTCP_RX_BUFFER_SIZE's default, which the host build uses
SANITIZER_MARKS = ("runtime error", "AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer")


# -- building ---------------------------------------------------------------

@pytest.fixture(scope="session")
def build() -> Path:
    """The host programs, built once per test session (make is incremental)."""
    # README's test command installs both; a missing toolchain is a failure, not a skip.
    assert shutil.which("make") and shutil.which(os.environ.get("CXX", "g++")), \
        "the firmware host build needs make and a C++ compiler (g++)"
    result = subprocess.run(["make", "-C", str(HOST_DIR), f"-j{os.cpu_count() or 2}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"firmware host build failed:\n{result.stdout}\n{result.stderr}"
    return BUILD


def run_program(program: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a host program to its end; the sanitizers must stay silent."""
    result = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=60,
                            env=sanitizer_env())
    assert_sanitizers_quiet(result.stderr)
    return result


def sanitizer_env(**extra: str) -> dict:
    return dict(os.environ,
                ASAN_OPTIONS="detect_leaks=1:halt_on_error=1",
                UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
                **extra)


def assert_sanitizers_quiet(stderr: str) -> None:
    for mark in SANITIZER_MARKS:
        assert mark not in stderr, f"sanitizer report:\n{stderr}"


# -- the device process -----------------------------------------------------

class Device:
    """
    One C{device} process.  Its stdout lines are collected by a thread;
    L{expect} finds the first line not yet matched that fits a pattern,
    waiting for it up to a deadline, so events that may come in either order
    can be awaited in any order.
    """

    def __init__(self, program: Path, *args: str, env: Optional[dict] = None) -> None:
        self.args = [str(program), *args]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1,
                                     env=env or sanitizer_env())
        self.history: list[str] = []   # every line, in order
        self._backlog: list[str] = []  # lines no expect() has matched yet
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._eof = False

    def _read_stdout(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def _next(self, deadline: float) -> Optional[str]:
        """The next new line, or None at the deadline or end of output."""
        if self._eof:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            line = self._lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            self._eof = True
            return None
        self.history.append(line)
        return line

    def expect(self, pattern: str, timeout: float = 10) -> re.Match:
        """The first unmatched line that fully matches C{pattern}."""
        regex = re.compile(pattern)
        for i, line in enumerate(self._backlog):
            match = regex.fullmatch(line)
            if match:
                del self._backlog[i]
                return match
        deadline = time.monotonic() + timeout
        while True:
            line = self._next(deadline)
            if line is None:
                raise AssertionError(
                    f"device never printed {pattern!r} within {timeout}s"
                    f"{' (it exited)' if self._eof else ''}; it printed:\n"
                    + "\n".join(self.history) + f"\nstderr:\n{self.stderr}")
            match = regex.fullmatch(line)
            if match:
                return match
            self._backlog.append(line)

    def next_line(self, timeout: float = 10) -> str:
        """The next line not yet matched, in order."""
        if self._backlog:
            return self._backlog.pop(0)
        line = self._next(time.monotonic() + timeout)
        assert line is not None, "device printed nothing more:\n" + "\n".join(self.history)
        return line

    def forget_unmatched(self) -> None:
        """Drop the lines read so far that no expect() matched."""
        self._backlog.clear()

    def count(self, line: str) -> int:
        return self.history.count(line)

    def command(self, text: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def send(self, how: str, *words: str) -> int:
        """Run a send command; the msg_id it went out with."""
        self.command(" ".join((how, *words)))
        match = self.expect(r"sent (\d+)|send-failed")
        assert match.group(1), f"{how} {words} was not sent"
        return int(match.group(1))

    def close(self) -> None:
        """Quit, then require a clean exit and silent sanitizers."""
        if self.proc.poll() is None:
            try:
                self.command("quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("device did not quit:\n" + "\n".join(self.history))
        # Let the reader threads reach end of output before judging stderr.
        while self._next(time.monotonic() + 5) is not None:
            pass
        assert_sanitizers_quiet(self.stderr)
        assert self.proc.returncode == 0, (
            f"device exited {self.proc.returncode}:\n" + "\n".join(self.history) + "\n" + self.stderr)


@pytest.fixture
def device(build):
    """Factory: device(token, port, *options) -> a running Device, checked at teardown."""
    started: list[Device] = []

    def start(token: str, port: int, *options: str, env: Optional[dict] = None) -> Device:
        d = Device(build / "device", "--token", token, "--host", "127.0.0.1", "--port", str(port),
                   *options, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()
