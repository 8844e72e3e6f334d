"""
On demand: the ESP32 library's ArduinoJson overloads against a real
ArduinoJson (the normal suite uses a test double, since no package of
ArduinoJson exists for the test machines).

Set C{ARDUINOJSON_DIR} to one or more ArduinoJson checkouts (separated by
C{os.pathsep}), for example a v6 and a v7 tag::

    ARDUINOJSON_DIR=/src/aj6:/src/aj7 .venv/bin/python -m pytest tests/test_firmware_arduinojson.py

Without it this module defines no test at all: nothing is collected, so
nothing is skipped.  For each checkout it builds C{json_hook_test} (the
JsonObject hooks and sends, in-process), C{legacy_test} (code written for
the original header, JsonObject overrides included) and the example sketch,
and runs both programs; with ArduinoJson 6 also with a larger
C{HYPERTCP_JSON_DOC_SIZE}, where the 30-key payload fits.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.firmware import HOST_DIR, run_program

CHECKOUTS = [Path(p) for p in os.environ.get("ARDUINOJSON_DIR", "").split(os.pathsep) if p]


def version(checkout: Path) -> str:
    text = (checkout / "src" / "ArduinoJson" / "version.hpp").read_text()
    return re.search(r'#define ARDUINOJSON_VERSION "([^"]+)"', text).group(1)


def build_against(checkout: Path, build: Path, *defines: str) -> Path:
    out = build / ("aj-" + version(checkout) + "".join(d.replace("-D", "-").replace("=", "") for d in defines))
    result = subprocess.run(["make", "-C", str(HOST_DIR), f"-j{os.cpu_count() or 2}", "arduinojson",
                             f"AJ_SRC={checkout / 'src'}", f"AJ_OUT={out}", f"AJ_DEFINES={' '.join(defines)}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def run_all(program: Path) -> list[str]:
    """Every case of a host test program; its lines, notes included."""
    result = run_program(program)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith(("ok ", "# ")) for line in lines), result.stdout
    return lines


if CHECKOUTS:
    @pytest.mark.parametrize("checkout", CHECKOUTS, ids=version)
    def test_json_object_hooks_and_original_sketches(build, checkout):
        out = build_against(checkout, build)
        hooks = run_all(out / "json_hook_test")
        assert "ok thirty_keys_in_288_bytes_are_delivered_or_reported_never_dropped" in hooks
        # ArduinoJson 6's 1 KiB document on this 64-bit host cannot hold it (an
        # ESP32 can); ArduinoJson 7's grows.
        fate = "reported" if version(checkout).startswith("6.") else "delivered"
        assert f"# thirty keys: {fate}" in hooks
        legacy = run_all(out / "legacy_test")
        assert len([line for line in legacy if line.startswith("ok ")]) >= 6
        assert (out / "example.checked").is_file()

    @pytest.mark.parametrize("checkout", [c for c in CHECKOUTS if version(c).startswith("6.")],
                             ids=version)
    def test_a_larger_document_takes_the_thirty_key_payload(build, checkout):
        out = build_against(checkout, build, "-DHYPERTCP_JSON_DOC_SIZE=2048")
        assert "# thirty keys: delivered" in run_all(out / "json_hook_test")
