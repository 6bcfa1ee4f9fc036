"""``python -m shared.cli validate FILE``: a configuration file checked as the app loads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "config" / "connections.sample.json"


def test_the_sample_is_valid_with_no_settings_and_no_storage() -> None:
    # Nothing but a PATH: no AzureWebJobsStorage, no settings file, no secrets.
    result = subprocess.run([sys.executable, "-m", "shared.cli", "validate", str(SAMPLE)], cwd=REPO_ROOT,
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"{SAMPLE}: valid" in result.stdout


def test_every_problem_is_printed_with_its_path_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sample = json.loads(SAMPLE.read_text())
    sample["connections"]["contoso-fo"]["environment_url"] = "http://contoso.example.com"
    sample["connections"]["twilio-main"]["colour"] = "blue"
    sample["rules"][0]["source"] = "no-such-erp"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(sample))
    assert main(["validate", str(broken)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{broken}: 3 problems"
    assert sorted(line.strip() for line in lines[1:]) == [
        "connections.contoso-fo.environment_url: must be an https URL (http only for loopback hosts)",
        "connections.twilio-main.colour: unknown field",
        "rules[0].source: unknown connection 'no-such-erp'",
    ]


def test_a_repeated_key_is_a_problem_as_the_loader_says(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = SAMPLE.read_text().replace('"connections": {', '"connections": {"twilio-main": {}, ', 1)
    repeated = tmp_path / "repeated.json"
    repeated.write_text(text)
    assert main(["validate", str(repeated)]) == 1
    assert "twilio-main: duplicate key in a JSON object" in capsys.readouterr().out


@pytest.mark.parametrize("content, says", [(None, "file not found"), ("{\"connections\": ", "not JSON: line 1")])
def test_a_missing_file_or_one_that_is_not_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         content: str | None, says: str) -> None:
    path = tmp_path / "connections.json"
    if content is not None:
        path.write_text(content)
    assert main(["validate", str(path)]) == 2
    assert f"{path}: {says}" in capsys.readouterr().err
