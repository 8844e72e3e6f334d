"""
The ESP32 library cross-compiled for microcontrollers with Debian's cross
compilers (C{make -C firmware/host cross}): rv32imc, the ESP32-C3's
instruction set, linked against picolibc; and lx106, the ESP8266's, as an
object.  Both as Arduino cores build (-Os, no exceptions, no RTTI) and with
the host build's warnings as errors.  C{size_probe.cpp} uses every public
call; each probe's baseline is the same program without the library, so the
differences below are what the library costs.  The figures are in README's
memory section.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.firmware import BUILD, HOST_DIR

TOOLS = ("riscv64-unknown-elf-gcc", "riscv64-unknown-elf-size", "xtensa-lx106-elf-g++",
         "xtensa-lx106-elf-size", "make")
TEXT_BUDGET = 8 * 1024  # without ArduinoJson


@pytest.fixture(scope="module")
def sizes() -> dict[str, dict[str, int]]:
    """`size` of every probe: {"rv32-library": {"text": ..., "data": ..., "bss": ...}, ...}."""
    # README's test command installs the cross compilers; missing is a failure.
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    assert not missing, f"the cross build needs {missing} (gcc-riscv64-unknown-elf, " \
                        "picolibc-riscv64-unknown-elf, gcc-xtensa-lx106, picolibc-xtensa-lx106-elf)"
    result = subprocess.run(["make", "-C", str(HOST_DIR), f"-j{os.cpu_count() or 2}", "cross"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"cross build failed:\n{result.stdout}\n{result.stderr}"
    table = {}
    for line in (BUILD / "cross" / "sizes.txt").read_text().splitlines()[1:]:
        text, data, bss, _dec, _hex, name = line.split()
        probe = name.rsplit("/", 1)[1].rsplit(".", 1)[0]
        table[probe] = {"text": int(text), "data": int(data), "bss": int(bss)}
    return table


def cost(sizes: dict, arch: str, variant: str = "library") -> dict[str, int]:
    """What the library adds to the baseline program."""
    return {k: sizes[f"{arch}-{variant}"][k] - sizes[f"{arch}-baseline"][k] for k in ("text", "data", "bss")}


@pytest.mark.parametrize("arch", ["rv32", "lx106"])
def test_the_library_fits_its_flash_budget(sizes, arch):
    text = cost(sizes, arch)["text"]
    assert 0 < text <= TEXT_BUDGET, f"{arch}: the library takes {text} bytes of code"


@pytest.mark.parametrize("arch", ["rv32", "lx106"])
def test_its_ram_is_the_protocol_object(sizes, arch):
    # RAM is the one global protocol object: its buffers (receive + its NUL,
    # transmit, token, device id, two host names) and under 128 bytes of
    # state, transport and vtable pointer; nothing is allocated at run time.
    buffers = 1025 + 1024 + 128 + 64 + 2 * 64
    ram = cost(sizes, arch)
    assert buffers <= ram["bss"] + ram["data"] <= buffers + 128, ram


def test_the_challenge_login_costs_only_the_sketches_that_use_it(sizes):
    # SHA-256 and HMAC are linked in only behind useChallengeLogin().
    symbols = {variant: (BUILD / "cross" / f"rv32-{variant}.symbols").read_text()
               for variant in ("library", "challenge")}
    assert "HyperTCPSha256" not in symbols["library"]
    assert "HyperTCPSha256::compress" in symbols["challenge"]
    for arch in ("rv32", "lx106"):
        assert cost(sizes, arch, "challenge")["text"] > cost(sizes, arch)["text"]
