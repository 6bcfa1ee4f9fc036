"""README opens with the path a new operator reads, and every link there and in the docs leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {anchor(heading) for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or (fragment and linked.suffix == ".md" and fragment not in anchors(linked)):
            broken.append(target)
    return broken


def test_where_to_start_follows_the_first_paragraph_in_the_order_a_newcomer_needs() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = text.split("\n\n")
    assert blocks[0] == "# ml-connector" and blocks[2] == "## Where to start"
    section = text[text.index("## Where to start"):]
    section = section[:section.index("\n## ", 1)]
    order = ["#quick-start", "#running-against-your-own-endpoints", "#connecting-dynamics-365-finance--operations",
             "docs/operations.md", "docs/adding-a-kind.md"]
    positions = [section.index(f"({target})") for target in order]
    assert positions == sorted(positions)


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    for path in [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        assert broken_links(path) == [], path.name
