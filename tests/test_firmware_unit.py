"""
The ESP32 library tested in-process: no sockets, no real time.

C{firmware/host/protocol_test} drives the library's receive state machine,
login, keepalive, reconnect and redirect through C{ShimClient} (a fake
Arduino Client: scripted bytes in, the bytes the library wrote out) with a
fake C{millis()}; C{legacy_test} does the same with code written for the
original header.  Each C++ C{TEST(name)} is one pytest case here; the names
are read from the source, and each binary's own list must match them, so a
case cannot silently drop out.

Also here: the C++ wire constants pinned to the Python ones.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from hypertcp.protocol.commands import Command, Status

from tests.firmware import HOST_DIR, run_program

SRC_DIR = HOST_DIR.parent / "src"


def cases(source: str) -> list[str]:
    """The TEST(name) cases written in a host test source, in order."""
    return re.findall(r"^TEST\((\w+)\)", (HOST_DIR / source).read_text(), re.MULTILINE)


def run_case(program: Path, case: str) -> None:
    result = run_program(program, case)
    said = [line for line in result.stdout.splitlines() if not line.startswith("# ")]
    assert result.returncode == 0 and said == [f"ok {case}"], result.stdout + result.stderr


@pytest.mark.parametrize("program", ["protocol_test", "legacy_test", "json_hook_test", "crypto_test"])
def test_every_case_is_built_and_run(build, program):
    listed = run_program(build / program, "--list").stdout.split()
    assert listed == cases(f"{program}.cpp")


@pytest.mark.parametrize("case", cases("protocol_test.cpp"))
def test_protocol(build, case):
    run_case(build / "protocol_test", case)


@pytest.mark.parametrize("case", cases("legacy_test.cpp"))
def test_original_header_api(build, case):
    run_case(build / "legacy_test", case)


@pytest.mark.parametrize("case", cases("json_hook_test.cpp"))
def test_json_object_hooks(build, case):
    # Against fakejson/ArduinoJson.h, a double of ArduinoJson 6; the real
    # ArduinoJson 6 and 7 run the same cases on demand
    # (tests/test_firmware_arduinojson.py).
    run_case(build / "json_hook_test", case)


def test_a_payload_too_big_for_the_document_is_reported_not_dropped(build):
    result = run_program(build / "json_hook_test",
                         "thirty_keys_in_288_bytes_are_delivered_or_reported_never_dropped")
    assert result.returncode == 0, result.stdout
    assert "# thirty keys: reported" in result.stdout.splitlines()


def test_original_header_calls_compile_and_the_worse_ones_are_deprecated(build):
    # make compiled legacy_test.cpp with warnings as errors except
    # deprecation, and kept what the compiler said.
    said = (build / "legacy_test.warnings").read_text()
    warnings = re.findall(r"warning: (.*)", said)
    deprecated = set(re.findall(r"warning: .(.+?)(?: \[with [^\]]*\])?. is deprecated", said))
    assert len(warnings) == said.count(" is deprecated"), said  # and no other warning
    assert deprecated == {
        "void HyperTCPTransport<ClientT>::begin(const char*, uint16_t)",
        "void HyperTCPTransport<ClientT>::begin(const AddressT&, uint16_t)",
        "bool HyperTCPProtocol<TransportT>::connect(const char*)",
        "bool HyperTCPProtocol<TransportT>::connect(const char*, const char*)",
    }, said


@pytest.mark.parametrize("case", cases("crypto_test.cpp"))
def test_sha256_and_hmac(build, case):
    run_case(build / "crypto_test", case)


def test_an_unknown_case_name_fails(build):
    result = run_program(build / "protocol_test", "no_such_case")
    assert result.returncode == 1


# -- the wire constants ---------------------------------------------------------

def cxx_constants(prefix: str) -> dict[str, int]:
    """NAME -> value of every C{HYPER_TCP_<prefix>_NAME = value} in the library's wire header."""
    text = (SRC_DIR / "HyperTCPWire.h").read_text()
    return {name: int(value)
            for name, value in re.findall(rf"\bHYPER_TCP_{prefix}_(\w+) = (\d+)", text)}


def test_the_cxx_command_and_status_constants_are_the_python_ones(tmp_path):
    # Names both ways, from the header's text...
    assert cxx_constants("CMD") == {c.name: c.value for c in Command}
    assert cxx_constants("STATUS") == {s.name: s.value for s in Status}
    # ...and values as the compiler sees them, through the public include.
    checks = [f"static_assert(HYPER_TCP_CMD_{c.name} == {c.value}, \"{c.name}\");" for c in Command]
    checks += [f"static_assert(HYPER_TCP_STATUS_{s.name} == {s.value}, \"{s.name}\");" for s in Status]
    source = tmp_path / "constants.cpp"
    source.write_text("#include <HyperTCPProtocol.h>\n" + "\n".join(checks) + "\n")
    result = subprocess.run(["g++", "-std=gnu++11", "-fsyntax-only", f"-I{HOST_DIR}", f"-I{SRC_DIR}",
                             str(source)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
