"""README's "What is guaranteed" names the tests that prove each guarantee: they must exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# `tests/x/test_y.py::test_name`, `::test_name` (same file as the one before), or a whole `tests/x/test_y.py`.
REFERENCE = re.compile(r"`((?:tests/[\w/]+\.py)?)(?:::(\w+))?`")


def guarantee_rows() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What is guaranteed", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| **")]


def test_every_guarantee_names_tests_that_exist() -> None:
    rows = guarantee_rows()
    assert len(rows) >= 10
    for row in rows:
        proof = row.rsplit("|", 2)[-2]
        current: Path | None = None
        named = 0
        for path, name in REFERENCE.findall(proof):
            if path:
                current = REPO_ROOT / path
                assert current.is_file(), f"{path} does not exist"
            assert current is not None, f"{name} names no file before it"
            if name:
                assert re.search(rf"^def {name}\(", current.read_text(encoding="utf-8"), re.MULTILINE), (
                    f"{current.relative_to(REPO_ROOT)} has no test {name}")
            named += 1
        assert named, f"a guarantee without a test: {row[:80]}"
