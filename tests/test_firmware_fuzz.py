"""
Coverage-guided fuzzing of the ESP32 library with libFuzzer (Debian's clang,
C{-fsanitize=fuzzer,address,undefined}): C{fuzz_protocol} feeds the receive
state machine whole server conversations through ShimClient with a fake
clock, C{fuzz_json} feeds the JSON scanner (their sources say what each
checks beyond the sanitizers).  Both start from the seed corpus committed in
C{firmware/host/fuzz/} and run for a bounded time, side by side: a few
seconds each in the normal suite, longer on demand::

    HYPERTCP_FUZZ_SECONDS=600 .venv/bin/python -m pytest tests/test_firmware_fuzz.py

A crash fails the test and leaves the input that caused it in the test's
temporary directory (the failure message names it); rerun it with
C{firmware/host/build/fuzz_protocol FILE}.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.firmware import BUILD, HOST_DIR, sanitizer_env

SECONDS = int(os.environ.get("HYPERTCP_FUZZ_SECONDS", "6"))
TARGETS = {"fuzz_protocol": "protocol", "fuzz_json": "json"}


@pytest.fixture(scope="module")
def fuzzers() -> Path:
    assert shutil.which("clang++"), "fuzzing the firmware needs Debian's clang"
    result = subprocess.run(["make", "-C", str(HOST_DIR), f"-j{os.cpu_count() or 2}", "fuzz"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"fuzz build failed:\n{result.stdout}\n{result.stderr}"
    return BUILD


def test_the_library_survives_fuzzing(fuzzers, tmp_path):
    # Both targets at once: one core each on the 2-core CI machine.
    runs = {}
    for target, seeds in TARGETS.items():
        corpus = tmp_path / target  # new inputs go here; the committed seeds stay as they are
        corpus.mkdir()
        runs[target] = subprocess.Popen(
            [str(fuzzers / target), f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=1024",
             f"-artifact_prefix={tmp_path}/{target}-", str(corpus), str(HOST_DIR / "fuzz" / seeds)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=sanitizer_env())
    for target, proc in runs.items():
        output, _ = proc.communicate(timeout=SECONDS + 120)
        crashes = sorted(tmp_path.glob(f"{target}-*"))
        assert proc.returncode == 0 and not crashes, \
            f"{target} failed on {[str(c) for c in crashes]}:\n{output[-4000:]}"
        done = re.search(r"Done (\d+) runs", output)
        assert done and int(done.group(1)) >= 1000, f"{target} hardly ran:\n{output[-2000:]}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_seed_runs_clean(fuzzers, target):
    # The committed seeds alone, without mutation, run clean.
    seeds = sorted((HOST_DIR / "fuzz" / TARGETS[target]).iterdir())
    assert seeds
    result = subprocess.run([str(fuzzers / target), *map(str, seeds)], capture_output=True, text=True,
                            timeout=60, env=sanitizer_env())
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Executed {seeds[-1]}" in result.stderr
