"""
Run README.rst's commands as written, in a fresh clone, in order.

tests/test_readme.py clones the repository, installs it with the README's
own run command, and starts this module in a network namespace of its own
(``unshare --net``), so the README's fixed ports -- 8080, 8443, 2222, 7000 --
are free whatever else runs on the machine, and nothing leaves loopback.

Each literal block in the README's operator sections follows an RST
comment saying how a person runs it (``.. readme: KIND``); comments do not
show when the README is rendered.  The kinds:

``run``
    each command in a terminal, one after the other; each must exit 0.
    One shell runs them all, so ``export`` carries over, as in a terminal.
``server KIND... [| TEXT ...]``
    a server in a terminal of its own: started, and waited for until its
    log says it listens on each named listener KIND (and shows each TEXT).
``background``
    a client left running in another terminal (``hypertcp listen``).
``output``
    what the background client prints: each line must have been printed
    (the ``from`` field, an address, aside).
``console``
    an ssh login to the manhole and the ``>>>`` lines typed there.  The
    ssh command is the suite's (tests/ssh.py), with the key the README
    made and a known_hosts entry made from the host key file the README
    names: OpenSSH reads ~/.ssh from the password database, not $HOME, so
    the README's command as written would use the real user's keys.
``stop``
    (no block) Ctrl-C for every server and client started so far.

``<the token>`` stands for the token the first start prints.  At the end,
every file the commands made must be ignored by git, and every one holding
a secret readable by its owner only.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from tests.ssh import Console, known_hosts

DEADLINE = 60.0
LISTENING = re.compile(r"HyperTCP (\w+) listening on ")
ANNOTATION = re.compile(r"^\.\. readme: (\w+)(.*)$")


def loopback_up() -> None:
    """A new network namespace's loopback starts down."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def run_command(readme: str) -> str:
    """The README's run command: the line between the run-command markers."""
    block = readme.split(".. run-command-start", 1)[1].split(".. run-command-end", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.startswith("    ")]
    assert len(lines) == 1, f"the run command is not one line: {lines}"
    return lines[0]


def steps(readme: str) -> list[tuple[str, str, list[str]]]:
    """Each annotated step: (kind, the annotation's rest, the literal block's lines)."""
    lines = readme.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = ANNOTATION.match(line)
        if not match:
            continue
        kind, rest = match.group(1), match.group(2).strip()
        block: list[str] = []
        if kind != "stop":
            j = i + 1
            while j < len(lines) and lines[j].strip() != "::":
                assert not lines[j].startswith(".. "), f"no block after {line!r}"
                j += 1
            j += 1
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith("    ")):
                if lines[j].strip():
                    block.append(lines[j][4:])
                j += 1
            assert block, f"empty block after {line!r}"
        found.append((kind, rest, block))
    return found


def commands(block: list[str]) -> list[str]:
    """The block's commands, continuation lines joined."""
    out, current = [], ""
    for line in block:
        current += line
        if line.endswith("\\"):
            current = current[:-1] + " "
            continue
        out.append(current.strip())
        current = ""
    return out


class Process:
    """A server or client in a terminal of its own: its output, read as it comes."""

    def __init__(self, command: str, cwd: Path, env: dict, log: Path) -> None:
        self.command = command
        self.log = log
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        with open(self.log, "w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, test, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        with self._changed:
            while not test("".join(self.lines)):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{self.command!r}: no {what}; it "
                                         f"{'exited ' + str(self.proc.returncode) if self.proc.poll() is not None else 'is still waiting'}"
                                         f", saying:\n{''.join(self.lines)}")
                self._changed.wait(min(left, 0.2))

    def stop(self) -> None:
        """Ctrl-C in its terminal: the whole foreground job."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Shell:
    """One bash, fed command by command like a terminal; each command must exit 0."""

    def __init__(self, cwd: Path, env: dict) -> None:
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def run(self, command: str) -> str:
        marker = f"__done_{time.monotonic_ns()}__"
        assert self.proc.stdin
        self.proc.stdin.write(f"{command}\necho {marker} $?\n")
        self.proc.stdin.flush()
        output = []
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"{command!r} did not finish:\n{''.join(output)}") from None
            assert line is not None, f"the shell ended during {command!r}:\n{''.join(output)}"
            if line.startswith(marker):
                status = int(line.split()[1])
                assert status == 0, f"{command!r} exited {status}:\n{''.join(output)}"
                return "".join(output)
            output.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Runner:
    def __init__(self, clone: Path, home: Path) -> None:
        self.clone = clone
        self.home = home
        self.readme = (clone / "README.rst").read_text()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HYPERTCP_")}
        self.env.update(HOME=str(home), PYTHONUNBUFFERED="1")
        self.shell = Shell(clone, self.env)
        self.running: list[Process] = []
        self.started = 0
        self.token: Optional[str] = None
        self.secrets: list[str] = []

    def say(self, text: str) -> None:
        print(f"readme: {text}", flush=True)

    def start(self, command: str, wait_for: list[str], rest: list[str] = ()) -> Process:
        self.started += 1
        process = Process(command, self.clone, self.env, self.home / f"process-{self.started}.log")
        self.running.append(process)
        for kind in wait_for:
            process.wait_for(lambda text, k=kind: k in LISTENING.findall(text),
                             f"{kind} listener")
        for text in rest:
            process.wait_for(lambda out, t=text: t in out, repr(text))
        return process

    def expand(self, text: str) -> str:
        if "<the token>" in text:
            assert self.token, "<the token> is used before a server printed one"
            text = text.replace("<the token>", self.token)
        return text

    def stop(self) -> None:
        for process in reversed(self.running):
            process.stop()
        self.running = []

    def go(self) -> None:
        first = run_command(self.readme).split(" && ")[-1]
        self.say(f"server: {first}")
        server = self.start(first, ["tcp"])
        lines = server.text.splitlines()
        self.token = lines[[i for i, l in enumerate(lines) if "log in with:" in l][0] + 1].strip()
        self.secrets.append(self.token)
        listener: Optional[Process] = None
        for kind, rest, block in steps(self.readme):
            self.say(f"{kind} {rest}".strip())
            if kind == "run":
                for command in commands(block):
                    self.say(f"  $ {command}")
                    self.shell.run(self.expand(command))
            elif kind == "server":
                kinds, *texts = [part.strip() for part in rest.split("|")]
                (command,) = commands(block)
                self.start(self.expand(command), kinds.split(), texts)
            elif kind == "background":
                listener = self.start(self.expand("\n".join(commands(block))), [])
                listener.wait_for(lambda text: "listening on" in text, "'listening on'")
            elif kind == "output":
                assert listener is not None, "output with no background client"
                for line in block:
                    wanted = json.loads(line)
                    wanted.pop("from")
                    listener.wait_for(lambda text, w=wanted: any(
                        _matches(printed, w) for printed in text.splitlines()),
                        f"line like {line}")
            elif kind == "console":
                self.console(block)
            elif kind == "stop":
                self.stop()
            else:
                raise AssertionError(f"unknown step kind {kind!r}")
        self.stop()
        self.check_files()

    def console(self, block: list[str]) -> None:
        ssh, *typed = block
        words = shlex.split(ssh)
        assert words[0] == "ssh" and "-p" in words, ssh
        port = int(words[words.index("-p") + 1])
        key = self.home / ".ssh" / "id_ed25519"
        console = Console(port, key, known_hosts(self.home, port,
                                                 self.clone / "hypertcp-manhole-host-key"))
        try:
            for line in typed:
                assert line.startswith(">>> "), line
                printed = console.run(line[4:])
                self.say(f"  >>> {line[4:]}")
                assert "Traceback" not in printed and "Error" not in printed, printed
        finally:
            console.close()

    def check_files(self) -> None:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                                cwd=self.clone, capture_output=True, text=True, check=True)
        assert status.stdout == "", f"files the README makes that git does not ignore:\n" \
                                    f"{status.stdout}"
        made = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard"],
                              cwd=self.clone, capture_output=True, text=True, check=True)
        saved = self.clone / "balancer.token"
        if saved.exists():
            self.secrets.append(saved.read_text().strip())
        exposed = []
        for name in made.stdout.splitlines():
            if name.startswith(".venv/") or "__pycache__" in name or ".egg-info" in name:
                continue
            path = self.clone / name
            data = path.read_bytes()
            if b"PRIVATE KEY" in data or any(s.encode() in data for s in self.secrets):
                if path.stat().st_mode & 0o077:
                    exposed.append(f"{name} ({oct(path.stat().st_mode & 0o777)})")
        assert not exposed, f"secrets readable by others: {', '.join(exposed)}"
        self.say("every file made is ignored by git; every secret is 0600")


def _matches(printed: str, wanted: dict) -> bool:
    try:
        got = json.loads(printed)
    except ValueError:
        return False
    return all(got.get(k) == v for k, v in wanted.items())


def main() -> int:
    clone, home = Path(sys.argv[1]), Path(sys.argv[2])
    home.mkdir(parents=True, exist_ok=True)
    loopback_up()
    runner = Runner(clone, home)
    try:
        runner.go()
    finally:
        runner.stop()
        runner.shell.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
