"""
README.rst's commands, run as written in a fresh clone: its run command
installs the package (apt-get aside: the machine's packages are the test
command's business), then tests/readme_runner.py runs the rest, in the
order and the way the README says, in a network namespace of its own so the
README's fixed ports are free (see that module for how each block runs).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.readme_runner import run_command, steps

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"


def test_every_block_in_the_operator_sections_says_how_it_runs():
    text = README.read_text()
    found = steps(text)
    kinds = [kind for kind, _, _ in found]
    assert {"run", "server", "background", "output", "console", "stop"} <= set(kinds)
    assert kinds[-1] == "stop"
    operator = text[text.index("A five-minute tour"):text.index("ESP32 library\n")]
    literal = operator.count("\n::\n")
    assert literal == len([k for k in kinds if k != "stop"]), \
        "a literal block in the operator sections has no `.. readme:` line"
    assert run_command(text).split(" && ")[-1] == ".venv/bin/twistd -n hypertcp"


@pytest.mark.integration
def test_the_readme_runs_as_written_in_a_fresh_clone(tmp_path: Path):
    unshare = shutil.which("unshare")
    assert unshare, "unshare is not installed (util-linux)"
    clone = tmp_path / "hypertcp"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    # The run command up to the server: apt-get is the machine's, not the test's.
    parts = run_command((clone / "README.rst").read_text()).split(" && ")
    assert parts[0].startswith("apt-get install"), parts
    install = " && ".join(parts[1:-1])
    result = subprocess.run(["bash", "-c", install], cwd=clone, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{install}:\n{result.stdout}\n{result.stderr}"
    result = subprocess.run(
        [unshare, "--user", "--map-root-user", "--net", sys.executable, "-m",
         "tests.readme_runner", str(clone), str(tmp_path / "home")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "every secret is 0600" in result.stdout
