"""What a new operator meets first: `make help`, and `make run` with a settings file that is not there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = REPO_ROOT / "Makefile"


def make(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    # A make above this test (make test) must not hand its flags or jobs down.
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAKE")}
    return subprocess.run(["make", "--no-print-directory", "-f", str(MAKEFILE), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def phony_targets() -> list[str]:
    phony = re.search(r"^\.PHONY:(.*)$", MAKEFILE.read_text(), re.MULTILINE)
    assert phony is not None
    return phony.group(1).split()


def test_make_help_lists_every_target_with_one_line() -> None:
    for answer in (make("help"), make()):  # `make` alone answers the same
        assert answer.returncode == 0, answer.stderr
        listed = dict(re.findall(r"^  ([a-z-]+) +(\S.*)$", answer.stdout, re.MULTILINE))
        assert set(phony_targets()) <= set(listed), f"targets without a '## target: ...' line: {answer.stdout}"
        assert {"run", "validate", "test", "install"} <= set(listed)


def test_make_run_with_a_settings_file_that_is_missing_says_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    answer = make("run", f"SETTINGS={missing}")
    assert answer.returncode != 0
    assert f"settings file {missing} not found; copy local.settings.example.json" in answer.stderr
    assert "No rule to make target" not in answer.stderr
    assert not missing.exists()


def test_make_run_still_makes_local_settings_json_from_the_example(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "local.settings.example.json", tmp_path)
    planned = make("-n", "run", cwd=tmp_path)
    assert "cp local.settings.example.json local.settings.json" in planned.stdout
    made = make("local.settings.json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    values = (tmp_path / "local.settings.json").read_text()
    assert "replace-with-openssl-rand-base64-32" not in values  # a data protection key of its own
